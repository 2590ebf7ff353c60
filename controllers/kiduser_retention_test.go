package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// retentionDeleted reads kid_retention_deleted_total for one reason. The
// reconciler counts a deletion after the API server made it, so a spec that
// has seen a user gone waits for the count with Eventually.
func retentionDeleted(reason string) float64 {
	GinkgoHelper()
	v, _, _ := metricSum("kid_retention_deleted_total", map[string]string{"reason": reason})
	return v
}

// advance moves the harness's clock forward until the spec ends.
func advance(d time.Duration) {
	h.Clock.Advance(d)
	DeferCleanup(func() { h.Clock.Advance(-d) })
}

// userGone waits until the KidUser known by (kind, id) is deleted.
func userGone(p *testenv.Product, kind kidv1.IdentityKind, id string) {
	GinkgoHelper()
	key := client.ObjectKey{Namespace: p.Namespace, Name: kidv1.UserName(p.Name, kind, id)}
	Eventually(func() bool {
		return apierrors.IsNotFound(h.Client.Get(ctx, key, &kidv1.KidUser{}))
	}, 30*time.Second).Should(BeTrue(), "user %s is deleted", key.Name) // a loaded CI machine's workers take seconds to reach it
}

// userStays checks for a while that the KidUser known by (kind, id) is there
// with the UID it had.
func userStays(p *testenv.Product, u *kidv1.KidUser) {
	GinkgoHelper()
	Consistently(func(g Gomega) {
		fresh := &kidv1.KidUser{}
		g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(u), fresh)).To(Succeed())
		g.Expect(fresh.UID).To(Equal(u.UID))
	}, "1s", "100ms").Should(Succeed())
}

var _ = Describe("KidUser retention after erasure", func() {
	const (
		email = "retained@example.com"
		dob   = "2013-05-06"
	)
	var p *testenv.Product
	BeforeEach(func() {
		// Personal data is kept, so that a resurrection of it would show.
		p = newProduct(func(p *kidv1.KidProduct) {
			p.Spec.Privacy = kidv1.PrivacySpec{StoreApproverEmail: true, StoreDateOfBirth: true}
		})
	})

	// eraseAfterConsent folds a consent carrying personal data, then a
	// Session.Delete, and returns the consent's delivery as k-ID signed it.
	eraseAfterConsent := func(session string) (body []byte, ts string, erased *kidv1.KidUser) {
		GinkgoHelper()
		body, err := kidsim.Build(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-" + session, Status: kid.StatusPass, SessionID: session, DOB: dob, ApproverEmail: email})
		Expect(err).NotTo(HaveOccurred())
		ts = nowTS()
		a := p.Sender().Deliver(ctx, body, ts, kid.Sign)
		Expect(a.Status).To(Equal(200), a.String())
		user(p, kidv1.IdentitySession, session, func(g Gomega, u *kidv1.KidUser) { g.Expect(u.Status.PersonalData).NotTo(BeNil()) })
		send(p, kid.SessionDelete, kidsim.Fields{SessionID: session})
		erased = user(p, kidv1.IdentitySession, session, func(g Gomega, u *kidv1.KidUser) { g.Expect(u.Status.ErasedAt).NotTo(BeNil()) })
		allEventsFinished(p.Namespace)
		Eventually(everythingJSON).ShouldNot(Or(ContainSubstring(email), ContainSubstring(dob)))
		return body, ts, erased
	}

	It("keeps an erased user for 30 days, then deletes it", func() {
		_, _, erased := eraseAfterConsent("s-ttl")
		before := retentionDeleted("user-erased")

		advance(29 * 24 * time.Hour)
		touch(erased, "day-29")
		userStays(p, erased)

		advance(2 * 24 * time.Hour)
		touch(erased, "day-31")
		userGone(p, kidv1.IdentitySession, "s-ttl")
		Eventually(retentionDeleted).WithArguments("user-erased").Should(Equal(before + 1))
	})

	It("brings back no personal data when an old delivery arrives or an old event is redriven after the deletion", func() {
		body, ts, erased := eraseAfterConsent("s-late")
		advance(31 * 24 * time.Hour)
		touch(erased, "day-31")
		userGone(p, kidv1.IdentitySession, "s-late")

		// The consent as k-ID signed it, delivered again: its signature is
		// a month old, far out of the timestamp tolerance.
		a := p.Sender().Deliver(ctx, body, ts, kid.Sign)
		Expect(a.Status).NotTo(Equal(200), a.String())
		// The events still stored (none with personal data) run again.
		for _, e := range events(p.Namespace) {
			patch := client.MergeFrom(e.DeepCopy())
			e.Annotations = map[string]string{kidv1.RedriveAnnotation: "after-deletion"}
			Expect(client.IgnoreNotFound(h.Client.Patch(ctx, &e, patch))).To(Succeed(), "an event may have expired meanwhile")
		}
		Consistently(func(g Gomega) {
			g.Expect(users(p.Namespace)).To(BeEmpty())
			g.Expect(everythingJSON()).NotTo(Or(ContainSubstring(email), ContainSubstring(dob)))
		}, "2s", "200ms").Should(Succeed())
	})

	It("starts a returning player afresh with a new event after the deletion", func() {
		_, _, erased := eraseAfterConsent("s-back")
		advance(31 * 24 * time.Hour)
		touch(erased, "day-31")
		userGone(p, kidv1.IdentitySession, "s-back")

		const newEmail = "new-approver@example.com"
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-again", Status: kid.StatusPass, SessionID: "s-back", ApproverEmail: newEmail})
		u := user(p, kidv1.IdentitySession, "s-back", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.ObservedEvents).To(BeEquivalentTo(1))
		})
		Expect(u.UID).NotTo(Equal(erased.UID))
		Expect(u.Status.ErasedAt).To(BeNil())
		Expect(u.Status.Session.State).To(Equal(kidv1.SessionActive))
		Expect(u.Status.ChallengeIDs).To(Equal([]string{"c-again"}), "nothing of the erased user's history")
		Expect(u.Status.PersonalData).To(Equal(&kidv1.PersonalData{ApproverEmail: newEmail}), "only what the new event says")
		Expect(everythingJSON()).NotTo(Or(ContainSubstring(email), ContainSubstring(dob)))
	})
})

var _ = Describe("KidUser retention after inactivity", func() {
	It("deletes an inactive user only where the product sets afterInactivity, and never an active or syncing one", func() {
		idle := newProduct(func(p *kidv1.KidProduct) {
			p.Spec.Retention.Users.AfterInactivity = &metav1.Duration{Duration: 48 * time.Hour}
		})
		keep := newProduct(nil)
		for _, s := range []string{"s-idle", "s-active", "s-synced"} {
			send(idle, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-" + s, Status: kid.StatusPass, SessionID: s})
		}
		send(keep, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-kept", Status: kid.StatusPass, SessionID: "s-kept"})
		idleUser := user(idle, kidv1.IdentitySession, "s-idle", func(Gomega, *kidv1.KidUser) {})
		synced := user(idle, kidv1.IdentitySession, "s-synced", func(Gomega, *kidv1.KidUser) {})
		kept := user(keep, kidv1.IdentitySession, "s-kept", func(Gomega, *kidv1.KidUser) {})
		before := retentionDeleted("user-inactive")

		advance(47 * time.Hour)
		// One player plays on; k-ID's API reports a change of another.
		send(idle, kid.SessionChangePermissions, kidsim.Fields{SessionID: "s-active"})
		active := user(idle, kidv1.IdentitySession, "s-active", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Session.PermissionsChangedAt).NotTo(BeNil())
		})
		patch := client.MergeFrom(synced.DeepCopy())
		syncedAt := metav1.NewTime(h.Clock.Now())
		synced.Status.Session.SyncedAt = &syncedAt
		Expect(h.Client.Status().Patch(ctx, synced, patch)).To(Succeed())

		advance(2 * time.Hour)
		for _, u := range []*kidv1.KidUser{idleUser, synced, active, kept} {
			touch(u, "hour-49")
		}
		userGone(idle, kidv1.IdentitySession, "s-idle")
		Eventually(retentionDeleted).WithArguments("user-inactive").Should(Equal(before + 1))
		userStays(idle, active)
		userStays(idle, synced)
		userStays(keep, kept)
	})
})
