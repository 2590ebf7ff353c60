package controllers_test

import (
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// chatEnabled is a KidAction filter on the permissions the user holds.
const chatEnabled = `user.session.permissions.exists(p, p.name == "text-chat-private" && p.enabled)`

// permissionAction is an http action on Session.ChangePermissions, with a
// filter.
func permissionAction(p *testenv.Product, t *target, filter string) {
	GinkgoHelper()
	httpAction(p, "on-permissions", t.URL, func(a *kidv1.KidAction) {
		a.Spec.EventTypes = []string{kid.SessionChangePermissions}
		a.Spec.Filter = filter
	})
}

// sessionRead is a permission change's SessionRead condition, once it is
// applied.
func sessionRead(e *kidv1.KidEvent) *metav1.Condition {
	return meta.FindStatusCondition(e.Status.Conditions, kidv1.SessionReadCondition)
}

// permissionEvents waits until the namespace holds n Session.ChangePermissions
// events, all finished, and returns them.
func permissionEvents(ns string, n int) []kidv1.KidEvent {
	GinkgoHelper()
	var out []kidv1.KidEvent
	Eventually(func(g Gomega) {
		out = eventsOfType(ns, kid.SessionChangePermissions)
		g.Expect(out).To(HaveLen(n))
		for _, e := range out {
			g.Expect(e.Status.Finished()).To(BeTrue(), "%s is %q", e.Name, e.Status.Phase)
		}
	}, 30*time.Second).Should(Succeed())
	return out
}

var _ = Describe("k-ID API: actions see the permissions they were told about", func() {
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
		// Its actions ran after that read, and the event says so.
		for _, e := range permissionEvents(p.Namespace, 2) {
			Expect(sessionRead(&e)).To(HaveField("Status", metav1.ConditionTrue), e.Name)
		}
	})

	It("runs a permission change's actions after the read, against the new permissions", func() {
		p, fake := apiProduct(nil)
		t := newTarget()
		permissionAction(p, t, chatEnabled)
		session, _ := syncedSession(p, fake)

		Expect(fake.SetPermission(session, "text-chat-private", true)).To(Succeed())
		e := permissionEvents(p.Namespace, 1)[0]
		Expect(e.Spec.Source).To(Equal(kidv1.SourceWebhook))
		Expect(e.Status.Phase).To(Equal(kidv1.EventSucceeded))
		Expect(e.Status.Actions).To(ConsistOf(HaveField("Phase", kidv1.RunSucceeded)), "the filter saw the permission enabled")
		Expect(sessionRead(&e)).To(And(HaveField("Status", metav1.ConditionTrue), HaveField("Reason", kidv1.ReadAfterChangeReason)))
		Expect(t.succeededPerID()).To(HaveLen(1))
		// The read that showed the change came before the action.
		changed := sessionReads(fake, "sessionId", session, http.StatusOK)
		Expect(t.deliveries()[0].at).To(BeTemporally(">", changed[len(changed)-1].At))
	})

	It("stores the change a resync finds, an age-up that sent no webhook, as a polled event that the actions see", func() {
		p, fake := apiProduct(nil)
		t := newTarget()
		permissionAction(p, t, `user.session.ageStatus == "LEGAL_ADULT"`)
		session, u := syncedSession(p, fake)
		settle(p, fake, session)
		reads := func() int { return len(sessionReads(fake, "sessionId", session, 0)) }
		before := reads()
		delivered := len(fake.Deliveries())

		Expect(fake.AgeUp(session, "LEGAL_ADULT")).To(Succeed())
		advance(pastResync)
		touch(u, "resync")
		e := permissionEvents(p.Namespace, 1)[0]
		Expect(e.Spec.Source).To(Equal(kidv1.SourcePoll))
		Expect(e.Spec.Subject.SessionID).To(Equal(session))
		Expect(string(e.Spec.Data.Raw)).To(ContainSubstring(`"etag":"` + fake.State().Sessions[0].Session.Etag + `"`))
		Expect(sessionRead(&e)).To(HaveField("Status", metav1.ConditionTrue))
		Expect(e.Status.Actions).To(ConsistOf(HaveField("Phase", kidv1.RunSucceeded)), "the filter saw the new age status")
		user(p, kidv1.IdentitySession, session, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Session.AgeStatus).To(Equal("LEGAL_ADULT"))
		})
		Consistently(func(g Gomega) {
			g.Expect(reads()).To(Equal(before+1), "one read found the change; its event's fold asks for no other")
			g.Expect(eventsOfType(p.Namespace, kid.SessionChangePermissions)).To(HaveLen(1))
			g.Expect(t.succeededPerID()).To(HaveLen(1))
		}, 2*time.Second).Should(Succeed())
		Expect(fake.Deliveries()).To(HaveLen(delivered), "k-ID sent nothing for the age-up")
	})

	It("runs a permission change's actions after a bounded wait when the session cannot be read, and says so", func() {
		p, fake := apiProduct(nil)
		t := newTarget()
		permissionAction(p, t, "")
		session, _ := syncedSession(p, fake)
		settle(p, fake, session)

		// k-ID refuses the next read for ten minutes (429): the one token
		// its limit allows goes to this test's own call.
		fake.SetRateLimit(0.001, 1)
		fake.SetRetryAfter(10 * time.Minute)
		spend, err := http.NewRequestWithContext(ctx, http.MethodGet, fake.URL+"/session/get?sessionId=spend", nil)
		Expect(err).NotTo(HaveOccurred())
		spend.Header.Set("Authorization", "Bearer "+apiKey)
		spend.Header.Set("Accept", "application/json")
		resp, err := http.DefaultClient.Do(spend)
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Body.Close()).To(Succeed())

		Expect(fake.SetPermission(session, "text-chat-private", true)).To(Succeed())
		Eventually(func() []kidsim.APIRequest {
			return sessionReads(fake, "sessionId", session, http.StatusTooManyRequests)
		}).ShouldNot(BeEmpty())
		Consistently(func() int { return len(t.deliveries()) }, 2*time.Second).Should(BeZero(), "the actions wait for the read")
		advance(3 * time.Minute)
		e := permissionEvents(p.Namespace, 1)[0]
		Expect(sessionRead(&e)).To(And(HaveField("Status", metav1.ConditionFalse), HaveField("Reason", kidv1.ReadTimedOutReason)))
		Expect(t.succeededPerID()).To(HaveLen(1))
	})

	It("runs a permission change's actions at once for a product without spec.api, and says so", func() {
		p := newProduct(nil)
		send(p, kid.SessionChangePermissions, kidsim.Fields{SessionID: "s-no-api"})
		e := permissionEvents(p.Namespace, 1)[0]
		Expect(sessionRead(&e)).To(And(HaveField("Status", metav1.ConditionFalse), HaveField("Reason", kidv1.NotConfiguredReason)))
		got := &kidv1.KidUser{}
		Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: kidv1.UserName(p.Name, kidv1.IdentitySession, "s-no-api")}, got)).To(Succeed())
		Expect(got.Status.Session.PermissionsReadAt).To(BeNil())
	})
})
