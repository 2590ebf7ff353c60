package controllers_test

import (
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

var _ = Describe("Erasure", func() {
	const (
		email = "erase-me@example.com"
		dob   = "2012-03-04"
	)
	var p *testenv.Product
	BeforeEach(func() {
		// A product that may keep personal data, so that there is some to
		// erase.
		p = newProduct(func(p *kidv1.KidProduct) {
			p.Spec.Privacy = kidv1.PrivacySpec{StoreApproverEmail: true, StoreDateOfBirth: true}
		})
	})

	consent := func(session, kuid string) {
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-" + session, Status: kid.StatusInProgress})
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-" + session, Status: kid.StatusPass, SessionID: session, KUID: kuid, DOB: dob, ApproverEmail: email})
		user(p, kidv1.IdentitySession, session, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.PersonalData).To(Equal(&kidv1.PersonalData{DateOfBirth: dob, ApproverEmail: email}))
		})
		allEventsFinished(p.Namespace)
		Expect(everythingJSON()).To(And(ContainSubstring(email), ContainSubstring(dob)), "the data is there before the erasure")
	}

	It("leaves no email or date of birth anywhere after Session.Delete", func() {
		consent("s-1", "k-1")
		send(p, kid.SessionDelete, kidsim.Fields{SessionID: "s-1"})
		Eventually(everythingJSON).ShouldNot(Or(ContainSubstring(email), ContainSubstring(dob)))
		u := user(p, kidv1.IdentitySession, "s-1", func(g Gomega, u *kidv1.KidUser) { g.Expect(u.Status.ErasedAt).NotTo(BeNil()) })
		Expect(u.Status.Session.State).To(Equal(kidv1.SessionDeleted))
		Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentGranted), "what the game needs to refuse access stays")
	})

	It("leaves no email or date of birth anywhere after Account.Delete, and erases what arrives late", func() {
		consent("s-2", "k-2")
		send(p, kid.AccountDelete, kidsim.Fields{KUID: "k-2"})
		Eventually(everythingJSON).ShouldNot(Or(ContainSubstring(email), ContainSubstring(dob)))

		// A late retry of the consent, carrying the data again.
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-s-2", Status: kid.StatusPass, SessionID: "s-2", KUID: "k-2", DOB: dob, ApproverEmail: email, ProductID: 1})
		Eventually(everythingJSON).ShouldNot(Or(ContainSubstring(email), ContainSubstring(dob)))
		Consistently(everythingJSON, "1s", "100ms").ShouldNot(Or(ContainSubstring(email), ContainSubstring(dob)))
		user(p, kidv1.IdentitySession, "s-2", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.AccountDeleted).To(BeTrue())
			g.Expect(u.Status.PersonalData).To(BeNil())
		})
	})
})

var _ = Describe("Erasure of events whose actions were still running", func() {
	It("deletes the personal data once the runs settle", func() {
		const email = "still-running@example.com"
		p := newProduct(func(p *kidv1.KidProduct) { p.Spec.Privacy.StoreApproverEmail = true })
		// The backend is down for the first attempt and asks for 3 s: the
		// run is pending when k-ID deletes the session.
		t := newTarget(http.StatusServiceUnavailable)
		t.retry = "3"
		httpAction(p, "slow", t.URL, nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-run", Status: kid.StatusPass, SessionID: "s-run", ApproverEmail: email})
		Eventually(t.deliveries).Should(HaveLen(1))
		send(p, kid.SessionDelete, kidsim.Fields{SessionID: "s-run"})
		user(p, kidv1.IdentitySession, "s-run", func(g Gomega, u *kidv1.KidUser) { g.Expect(u.Status.ErasedAt).NotTo(BeNil()) })
		Expect(everythingJSON()).To(ContainSubstring(email), "the event with a pending run is kept while it runs")

		Eventually(func() map[string]int { return t.succeededPerID() }, 10*time.Second).Should(HaveLen(1))
		Eventually(everythingJSON, 5*time.Second).ShouldNot(ContainSubstring(email), "erased once its run settled")
	})
})

var _ = Describe("A stand-in nothing links to a session", func() {
	It("loses its personal data after the product's retention", func() {
		p := newProduct(func(p *kidv1.KidProduct) { p.Spec.Privacy.StoreDateOfBirth = true })
		send(p, kid.VerificationResult, kidsim.Fields{ID: "v-alone", Status: kid.StatusPass, DOB: "2010-10-10"})
		u := user(p, kidv1.IdentityVerification, "v-alone", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.PersonalData).NotTo(BeNil())
		})
		// No Session.Delete or Account.Delete can ever name it: the
		// retention (7 days by default) bounds what it keeps.
		h.Clock.Advance(8 * 24 * time.Hour)
		DeferCleanup(func() { h.Clock.Advance(-8 * 24 * time.Hour) })
		touch(u, "after-retention")
		user(p, kidv1.IdentityVerification, "v-alone", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.PersonalData).To(BeNil())
			g.Expect(u.Status.Verification.State).To(Equal(kidv1.VerificationVerified), "what the game needs stays")
		})
	})
})

var _ = Describe("A run retried after its stand-in was merged away", func() {
	It("sends the user the stand-in was merged into, not an empty one", func() {
		p := newProduct(nil)
		// The backend is down at the first attempt and asks for 6 s: time
		// for the PASS to be folded and the stand-in merged, even on a
		// loaded machine (3 s was sometimes too short).
		t := newTarget(http.StatusServiceUnavailable)
		t.retry = "6"
		httpAction(p, "pending-consent", t.URL, func(a *kidv1.KidAction) { a.Spec.Filter = `event.data.status == "IN_PROGRESS"` })
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-merge", Status: kid.StatusInProgress})
		Eventually(t.deliveries).Should(HaveLen(1))
		// The PASS links the challenge to a session: the stand-in the
		// IN_PROGRESS was folded into is merged and deleted.
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-merge", Status: kid.StatusPass, SessionID: "s-merge"})
		Eventually(func() []kidv1.KidUser { return users(p.Namespace) }).Should(HaveLen(1))

		Eventually(func() map[string]int { return t.succeededPerID() }, 15*time.Second).Should(HaveLen(1))
		retried := t.deliveries()[1]
		Expect(retried.status).To(Equal(http.StatusOK))
		Expect(retried.body).To(ContainSubstring(`"sessionId":"s-merge"`), "the retried run describes the player as he is now")
	})
})

var _ = Describe("A KidUser's owner", func() {
	It("is its product, so deleting the product deletes its players and their data", func() {
		p := newProduct(nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-own", Status: kid.StatusInProgress})
		send(p, kid.VerificationResult, kidsim.Fields{ID: "v-own", Status: kid.StatusPass})
		Eventually(func(g Gomega) {
			us := users(p.Namespace)
			g.Expect(us).To(HaveLen(2))
			for _, u := range us {
				g.Expect(u.OwnerReferences).To(ConsistOf(HaveField("UID", p.UID)), u.Name)
			}
		}).Should(Succeed())
	})
})

var _ = Describe("Stand-ins", func() {
	It("merges a challenge's user into the session's once a PASS links them", func() {
		p := newProduct(nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusInProgress})
		user(p, kidv1.IdentityChallenge, "c-1", func(g Gomega, u *kidv1.KidUser) { g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentPending)) })
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"})
		user(p, kidv1.IdentitySession, "s-1", func(g Gomega, u *kidv1.KidUser) { g.Expect(u.Status.ObservedEvents).To(BeEquivalentTo(2)) })
		Eventually(func() []kidv1.KidUser { return users(p.Namespace) }, 5*time.Second).Should(HaveLen(1))
		// A late delivery about the challenge alone goes to the session's user.
		send(p, kid.ParentalConsentGranted, kidsim.Fields{ChallengeID: "c-1"})
		user(p, kidv1.IdentitySession, "s-1", func(g Gomega, u *kidv1.KidUser) { g.Expect(u.Status.ObservedEvents).To(BeEquivalentTo(3)) })
		Consistently(func() []kidv1.KidUser { return users(p.Namespace) }, "500ms").Should(HaveLen(1))
	})
})
