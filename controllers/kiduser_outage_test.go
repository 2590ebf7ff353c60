package controllers_test

import (
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

var _ = Describe("k-ID API: after an outage of the API server", func() {
	It("reads every session of a product whose receiver spooled an event again, once, long before its resync is due", func() {
		p, fake := apiProduct(nil)
		first, err := fake.ApproveChallenge(fake.StartChallenge(), kidsim.Approval{})
		Expect(err).NotTo(HaveOccurred())
		second, err := fake.ApproveChallenge(fake.StartChallenge(), kidsim.Approval{})
		Expect(err).NotTo(HaveOccurred())
		for _, s := range []string{first, second} {
			user(p, kidv1.IdentitySession, s, func(g Gomega, u *kidv1.KidUser) {
				g.Expect(u.Status.Session.SyncedAt).NotTo(BeNil())
			})
		}
		settle(p, fake, first, second)
		ids := map[string]bool{first: true, second: true}
		since := h.Clock.Now()
		Consistently(func() []kidsim.APIRequest { return sessionReadsOf(fake, ids, since) }, 2*time.Second).Should(BeEmpty(), "no read is due")

		// What the receiver's drainer stores: an event it spooled while
		// the API server could not store it, about another player.
		product := &kidv1.KidProduct{}
		Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: p.Name}, product)).To(Succeed())
		event, _ := builtEvent(product, since, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "spooled", Status: kid.StatusInProgress})
		event.Annotations[kidv1.SpooledAtAnnotation] = since.UTC().Format(time.RFC3339Nano)
		Expect(h.Client.Create(ctx, event)).To(Succeed())

		Eventually(func(g Gomega) {
			reads := sessionReadsOf(fake, ids, since)
			g.Expect(reads).To(HaveLen(2))
			g.Expect(reads).To(HaveEach(HaveField("Status", BeElementOf(http.StatusOK, http.StatusNotModified))))
		}).Should(Succeed(), "each session read again")
		Consistently(func() []kidsim.APIRequest { return sessionReadsOf(fake, ids, since) }, 3*time.Second).Should(HaveLen(2), "once")
	})
})
