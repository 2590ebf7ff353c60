package controllers_test

import (
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

var _ = Describe("k-ID API: every permission notice is read", func() {
	It("reads the session again for a second notice, answered 304 when unchanged", func() {
		p, fake := apiProduct(nil)
		session, u := syncedSession(p, fake)
		etag0 := u.Status.Session.ETag

		// Notice 1: a parent enables a permission; the operator reads the
		// session with its etag and gets the new one.
		Expect(fake.SetPermission(session, "text-chat-private", true)).To(Succeed())
		u = user(p, kidv1.IdentitySession, session, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Session.PermissionsChangedAt).NotTo(BeNil())
			g.Expect(u.Status.Session.ETag).NotTo(Equal(etag0))
		})
		etag1 := u.Status.Session.ETag
		Eventually(func() []kidsim.APIRequest { return sessionReads(fake, "etag", etag0, http.StatusOK) }).Should(HaveLen(1))

		// Notice 2, 70 s later, the session unchanged: it must be read
		// with its etag, and k-ID answers 304.
		advance(70 * time.Second)
		before := len(sessionReads(fake, "sessionId", session, 0))
		send(p, kid.SessionChangePermissions, kidsim.Fields{SessionID: session, ProductID: 11472})
		sent := h.Clock.Now()
		Eventually(func() []kidsim.APIRequest { return sessionReads(fake, "etag", etag1, http.StatusNotModified) }, 30*time.Second).
			ShouldNot(BeEmpty(), "the second notice was read")
		reads := sessionReads(fake, "sessionId", session, 0)
		Expect(reads).To(HaveLen(before+1), "one read for the notice")
		Expect(reads[len(reads)-1].At).To(BeTemporally("<", sent.Add(30*time.Second)))
	})
})
