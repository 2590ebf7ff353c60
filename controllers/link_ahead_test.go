package controllers_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// When the controllers are behind, a player's IN_PROGRESS and PASS wait in
// the queue together (in `make bench`'s journeys, two players in three).
// The PASS, stored, already links the challenge to the session.
var _ = Describe("A challenge whose PASS is stored but not folded yet", func() {
	gone := func(f *byHand, name string) bool {
		return apierrors.IsNotFound(f.client.Get(ctx, client.ObjectKey{Namespace: f.product.Namespace, Name: name}, &kidv1.KidUser{}))
	}

	It("folds its IN_PROGRESS into the session's user, with no stand-in to make and merge", func() {
		f := newByHand("ahead", nil)
		standIn := kidv1.UserName(f.product.Name, kidv1.IdentityChallenge, "c-ahead")
		session := kidv1.UserName(f.product.Name, kidv1.IdentitySession, "s-ahead")
		inProgress := f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-ahead", Status: kid.StatusInProgress})
		pass := f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-ahead", Status: kid.StatusPass, SessionID: "s-ahead", KUID: "k-ahead"})

		Expect(f.reconcile(inProgress)).To(Succeed())
		Expect(gone(f, standIn)).To(BeTrue(), "no stand-in was made")
		u := f.get(session)
		// The PASS, queued behind it for the same session, was folded in
		// the same write (kidevent_batch.go).
		Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentGranted))
		Expect(u.Status.ChallengeIDs).To(ConsistOf("c-ahead"))
		Expect(u.Status.InFlightEvents).To(ConsistOf(inProgress.Name, pass.Name))
		got := &kidv1.KidEvent{}
		Expect(f.client.Get(ctx, client.ObjectKeyFromObject(inProgress), got)).To(Succeed())
		Expect(got.Status.UserRef).To(Equal(&kidv1.LocalObjectReference{Name: session}))

		Expect(f.reconcile(pass)).To(Succeed())
		u = f.get(session)
		Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentGranted))
		Expect(u.Status.SessionID).To(Equal("s-ahead"))
		Expect(u.Status.ObservedEvents).To(BeEquivalentTo(2), "each event counted once")
		Expect(gone(f, standIn)).To(BeTrue())

		// A repeat of the IN_PROGRESS (after a crash before its Applied)
		// finds the session's user holding it, and counts nothing again.
		Expect(f.reconcile(inProgress)).To(Succeed())
		Expect(f.get(session).Status.ObservedEvents).To(BeEquivalentTo(2))
	})

	It("does not take a page's word for the link: a browser event's session is not followed", func() {
		f := newByHand("ahead-browser", nil)
		inProgress := f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-page", Status: kid.StatusInProgress})
		claim, _ := builtEvent(f.product, inProgress.Spec.ReceivedAt.Time, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-page", Status: kid.StatusPass, SessionID: "s-victim"})
		claim.Spec.Source = kidv1.SourceBrowser
		Expect(f.client.Create(ctx, claim)).To(Succeed())

		Expect(f.reconcile(inProgress)).To(Succeed())
		Expect(f.get(kidv1.UserName(f.product.Name, kidv1.IdentityChallenge, "c-page")).Status.Consent.State).To(Equal(kidv1.ConsentPending), "folded into its stand-in")
		Expect(gone(f, kidv1.UserName(f.product.Name, kidv1.IdentitySession, "s-victim"))).To(BeTrue(), "the page's session got nothing")
	})

	It("waits for the folds when stored events link the challenge to two sessions", func() {
		f := newByHand("ahead-two", nil)
		inProgress := f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-two", Status: kid.StatusInProgress})
		f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-two", Status: kid.StatusPass, SessionID: "s-one"})
		f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-two", Status: kid.StatusFail, SessionID: "s-two"})

		Expect(f.reconcile(inProgress)).To(Succeed())
		Expect(f.get(kidv1.UserName(f.product.Name, kidv1.IdentityChallenge, "c-two")).Status.ObservedEvents).To(BeEquivalentTo(1), "folded into its stand-in")
		Expect(gone(f, kidv1.UserName(f.product.Name, kidv1.IdentitySession, "s-one"))).To(BeTrue())
	})
})
