package controllers_test

import (
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// pastResync is a little more than the computed resync interval of a
// product with a handful of players (its floor, an hour) and the 10 %
// spread: every player is due again.
const pastResync = 67 * time.Minute

// eventsOfType lists the namespace's events of one type.
func eventsOfType(ns, eventType string) []kidv1.KidEvent {
	var out []kidv1.KidEvent
	for _, e := range events(ns) {
		if e.Spec.EventType == eventType {
			out = append(out, e)
		}
	}
	return out
}

// verificationReads lists the fake's get-status calls about one
// verification made at or after since (on the fake's clock).
func verificationReads(fake *fakeKid, id string, since time.Time) []kidsim.APIRequest {
	var out []kidsim.APIRequest
	for _, r := range requests(fake, kidsim.EndpointAgeVerificationGet) {
		if r.Query.Get("id") == id && !r.At.Before(since) {
			out = append(out, r)
		}
	}
	return out
}

// dropped counts the deliveries of one event type the fake dropped.
func dropped(fake *fakeKid, eventType string) int {
	n := 0
	for _, d := range fake.Deliveries() {
		if d.EventType == eventType && d.Fault == kidsim.FaultDrop {
			n++
		}
	}
	return n
}

// settle lets the first reads of new players' sessions end: a consent
// folded after a session's first read asks for one more, minReadSpacing
// (5 s) later. It moves the clock past that and past the 30 s in which a
// NOT_FOUND is read as k-ID's propagation delay, wakes each player and
// waits until no read comes for a second.
func settle(p *testenv.Product, fake *fakeKid, sessions ...string) {
	GinkgoHelper()
	advance(40 * time.Second)
	for _, s := range sessions {
		touch(user(p, kidv1.IdentitySession, s, func(Gomega, *kidv1.KidUser) {}), "settle")
	}
	reads := func() int { return len(requests(fake, kidsim.EndpointSessionGet)) }
	Eventually(func(g Gomega) {
		n := reads()
		g.Consistently(reads, time.Second, 100*time.Millisecond).Should(Equal(n))
	}).Should(Succeed())
}

// passedVerification passes a verification at the fake and waits until its
// webhook made the player Verified.
func passedVerification(p *testenv.Product, fake *fakeKid) (string, *kidv1.KidUser) {
	GinkgoHelper()
	v := fake.StartVerification()
	Expect(fake.CompleteVerification(v, true)).To(Succeed())
	u := user(p, kidv1.IdentityVerification, v, func(g Gomega, u *kidv1.KidUser) {
		g.Expect(u.Status.Verification.State).To(Equal(kidv1.VerificationVerified))
	})
	return v, u
}

var _ = Describe("k-ID API: every kind of event is recovered", func() {
	DescribeTable("a revocation whose webhook was lost is recovered where get-status says so",
		func(answer kidsim.RevokedAnswer) {
			p, fake := apiProduct(nil)
			fake.SetRevokedAnswer(answer)
			v, u := passedVerification(p, fake)

			fake.SetDeliveryFault(kidsim.FaultDrop)
			Expect(fake.RevokeVerification(v, "fraudulent-activity-detected")).To(Succeed())
			Eventually(func() int { return dropped(fake, kid.VerificationRevoke) }).Should(Equal(1), "the webhook was lost")
			revokedAt := h.Clock.Now()

			advance(pastResync)
			touch(u, "resync")
			u = user(p, kidv1.IdentityVerification, v, func(g Gomega, u *kidv1.KidUser) {
				g.Expect(u.Status.Verification.State).To(Equal(kidv1.VerificationRevoked))
			})
			Expect(u.Status.Verification.Records).To(ConsistOf(HaveField("Reason", "fraudulent-activity-detected")))
			revokes := eventsOfType(p.Namespace, kid.VerificationRevoke)
			Expect(revokes).To(HaveLen(1))
			Expect(revokes[0].Spec.Source).To(Equal(kidv1.SourcePoll))
			Expect(revokes[0].Spec.Subject.VerificationIDs).To(Equal([]string{v}))
			Expect(verificationReads(fake, v, revokedAt)).To(ConsistOf(HaveField("Status", http.StatusOK)), "one read again, at the resync")
		},
		Entry("a status REVOKED", kidsim.RevokedAsStatus),
		Entry("a revoked flag on the PASS", kidsim.RevokedAsFlag),
	)

	It("recovers no revocation that get-status does not report, nor takes a passed verification's NOT_FOUND for one", func() {
		p, fake := apiProduct(func(p *kidv1.KidProduct) {
			// No poll of a pending verification in the spec's first
			// seconds: v-unknown's stand-in is pending between its create
			// and the status its fold writes, and a poll started then,
			// under load, reached the fake after the clock moved past
			// revokedAt and counted as a second read (a CI-like run,
			// 2026-12-05: two reads 133 ms apart, the first a recovery
			// poll of the user as created).
			p.Spec.API.Recovery.FirstPoll = &metav1.Duration{Duration: 10 * time.Minute}
			p.Spec.API.Recovery.MaxInterval = p.Spec.API.Recovery.FirstPoll
		})
		v, u := passedVerification(p, fake)
		// A verification k-ID does not know (as if deleted): its PASS
		// came by webhook, and get-status answers 400 for it.
		send(p, kid.VerificationResult, kidsim.Fields{ID: "v-unknown", Status: kid.StatusPass, Method: "id-document"})
		unknown := user(p, kidv1.IdentityVerification, "v-unknown", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Verification.State).To(Equal(kidv1.VerificationVerified))
		})

		fake.SetDeliveryFault(kidsim.FaultDrop)
		Expect(fake.RevokeVerification(v, "provider-reported-error")).To(Succeed())
		revokedAt := h.Clock.Now()
		advance(pastResync)
		touch(u, "resync")
		touch(unknown, "resync")
		Eventually(func() []kidsim.APIRequest { return verificationReads(fake, v, revokedAt) }).
			Should(ConsistOf(HaveField("Status", http.StatusOK)), "read again: k-ID answers PASS, as before the revocation")
		Eventually(func() []kidsim.APIRequest { return verificationReads(fake, "v-unknown", revokedAt) }).
			Should(ConsistOf(HaveField("Status", http.StatusBadRequest)), "read again: k-ID does not know it")
		Consistently(func(g Gomega) {
			g.Expect(eventsOfType(p.Namespace, kid.VerificationRevoke)).To(BeEmpty())
			for _, u := range users(p.Namespace) {
				g.Expect(u.Status.Verification.State).To(Equal(kidv1.VerificationVerified), u.Name)
			}
		}, 2*time.Second).Should(Succeed())
	})

	It("recovers a lost Account.Delete for every session of the kuid, at the confirmation of the first one read", func() {
		p, fake := apiProduct(nil)
		const account = "kuid-of-two-sessions"
		first, err := fake.ApproveChallenge(fake.StartChallenge(), kidsim.Approval{KUID: account})
		Expect(err).NotTo(HaveOccurred())
		second, err := fake.ApproveChallenge(fake.StartChallenge(), kidsim.Approval{KUID: account})
		Expect(err).NotTo(HaveOccurred())
		for _, s := range []string{first, second} {
			user(p, kidv1.IdentitySession, s, func(g Gomega, u *kidv1.KidUser) {
				g.Expect(u.Status.Session.SyncedAt).NotTo(BeNil())
				g.Expect(u.Status.KUID).To(Equal(account))
			})
		}
		settle(p, fake, first, second)
		u := user(p, kidv1.IdentitySession, first, func(Gomega, *kidv1.KidUser) {})

		fake.SetDeliveryFault(kidsim.FaultDrop)
		Expect(fake.DeleteAccount(account)).To(Succeed())
		Eventually(func() int { return dropped(fake, kid.AccountDelete) }).Should(Equal(1), "the webhook was lost")
		deletedAt := h.Clock.Now()

		// The first session's next read finds it gone (asked for at once,
		// so that the second session is not due meanwhile): a suspicion; a
		// minute later its confirmation reads it again and asks by kuid,
		// and k-ID knows no session of the player at all.
		patch := client.MergeFrom(u.DeepCopy())
		u.Annotations = map[string]string{kidv1.RequestedAtAnnotation: "lost-account"}
		Expect(h.Client.Patch(ctx, u, patch)).To(Succeed())
		Eventually(func() []kidsim.APIRequest { return sessionReads(fake, "sessionId", first, http.StatusBadRequest) }).Should(HaveLen(1))
		advance(confirmAfter)
		touch(u, "confirm")
		for _, s := range []string{first, second} {
			user(p, kidv1.IdentitySession, s, func(g Gomega, u *kidv1.KidUser) {
				g.Expect(u.Status.ErasedAt).NotTo(BeNil())
				g.Expect(u.Status.AccountDeleted).To(BeTrue())
			})
		}

		accountDeletes := eventsOfType(p.Namespace, kid.AccountDelete)
		Expect(accountDeletes).To(HaveLen(1))
		Expect(accountDeletes[0].Spec.Source).To(Equal(kidv1.SourcePoll))
		Expect(accountDeletes[0].Spec.Subject.KUID).To(Equal(account))
		Expect(sessionDeletes(p.Namespace)).To(ConsistOf(HaveField("Spec.Subject.SessionID", first)))
		var after []kidsim.APIRequest
		for _, r := range requests(fake, kidsim.EndpointSessionGet) {
			if !r.At.Before(deletedAt) {
				after = append(after, r)
			}
		}
		Expect(after).To(HaveLen(3), "the first session's two reads and the read by kuid; the second session needed none")
		Expect(sessionReads(fake, "kuid", account, http.StatusBadRequest)).To(HaveLen(1))
		Expect(sessionReads(fake, "sessionId", second, 0)).To(HaveEach(HaveField("At", BeTemporally("<", deletedAt))), "the second session was not read after the deletion")
		// An inferred deletion keeps no record of the kuid of its own: a
		// session made for it later (consent given again) is not erased.
		Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: kidv1.UserName(p.Name, kidv1.IdentityAccount, account)}, &kidv1.KidUser{})).
			NotTo(Succeed())
	})

	It("reads a session again after the interval its product's rate and players allow, not a day", func() {
		p, fake := apiProduct(nil)
		session, u := syncedSession(p, fake)
		settle(p, fake, session)
		reads := func() int { return len(sessionReads(fake, "sessionId", session, 0)) }
		before := reads()

		// One player at 50 calls a second: the floor, an hour (and up to
		// 10 % of spread).
		advance(50 * time.Minute)
		touch(u, "not yet")
		Consistently(reads, 2*time.Second).Should(Equal(before), "not due before the hour")
		advance(pastResync - 50*time.Minute)
		touch(u, "due")
		Eventually(reads).Should(Equal(before + 1))
		all := sessionReads(fake, "sessionId", session, 0)
		Expect(all[len(all)-1].Status).To(Equal(http.StatusNotModified))
		Consistently(reads, time.Second).Should(Equal(before + 1))
	})
})
