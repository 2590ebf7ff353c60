package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/controllers"
	"github.com/kid-operator/kid-operator/internal/fold"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// The races of the fold that need one controller's cache to lag another's
// write (issue #23): the reconcilers are driven by hand over a fake API
// server, reading through a cache that a spec holds back (laggingCache).

// newUser stores a KidUser known by (kind, id) with the given status, as
// the controllers would have left it.
func (f *byHand) newUser(kind kidv1.IdentityKind, id string, status kidv1.KidUserStatus) *kidv1.KidUser {
	GinkgoHelper()
	u := &kidv1.KidUser{
		ObjectMeta: metav1.ObjectMeta{Name: kidv1.UserName(f.product.Name, kind, id), Namespace: f.product.Namespace},
		Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: f.product.Name}, Identity: kidv1.UserIdentity{Kind: kind, ID: id}},
	}
	Expect(f.client.Create(ctx, u)).To(Succeed())
	before := u.DeepCopy()
	u.Status = status
	Expect(f.client.Status().Patch(ctx, u, client.MergeFrom(before))).To(Succeed())
	return u
}

// appliedWithPersonalData stores an event that kept personal data, applied
// to the user named userRef with one run still pending. Its action does
// not exist, so the next attempt settles the run (Skipped) and the event
// is finished.
func (f *byHand) appliedWithPersonalData(eventType string, fields kidsim.Fields, userRef string) *kidv1.KidEvent {
	GinkgoHelper()
	e, _ := builtEvent(f.product, time.Now(), eventType, fields)
	e.Spec.PersonalData = true
	Expect(f.client.Create(ctx, e)).To(Succeed())
	before := e.DeepCopy()
	e.Status = kidv1.KidEventStatus{
		Phase:   kidv1.EventApplied,
		UserRef: &kidv1.LocalObjectReference{Name: userRef},
		Actions: []kidv1.ActionRunStatus{{Name: "gone", Phase: kidv1.RunPending}},
	}
	Expect(f.client.Status().Patch(ctx, e, client.MergeFrom(before))).To(Succeed())
	return e
}

// errConflict is the API server's answer to a write over a stale version.
func errConflict(obj client.Object) error {
	return apierrors.NewConflict(kidv1.GroupVersion.WithResource("kidevents").GroupResource(), obj.GetName(), nil)
}

func (f *byHand) gone(o client.Object) bool {
	return apierrors.IsNotFound(f.client.Get(ctx, client.ObjectKeyFromObject(o), o.DeepCopyObject().(client.Object)))
}

// users drives the KidUser reconciler by hand, through the same cache.
func (f *byHand) users() *controllers.KidUserReconciler {
	return &controllers.KidUserReconciler{Client: f.lag, APIReader: f.client, Clock: clock.RealClock{}}
}

var _ = Describe("Erasure of an event whose runs were pending", func() {
	It("reaches the event through the stand-in it was folded into, merged away since", func() {
		f := newByHand("erase-merged", nil)
		erased := metav1.Now()
		f.newUser(kidv1.IdentitySession, "s-merged", kidv1.KidUserStatus{SessionID: "s-merged", ChallengeIDs: []string{"c-merged"}, ErasedAt: &erased})
		standIn := kidv1.UserName(f.product.Name, kidv1.IdentityChallenge, "c-merged")
		e := f.appliedWithPersonalData(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-merged", Status: kid.StatusInProgress}, standIn)

		Expect(f.reconcile(e)).To(Succeed())
		Expect(f.gone(e)).To(BeTrue(), "the event's runs settled, and the player its stand-in was merged into is erased")
	})

	It("is not skipped by both controllers when each cache lags the other's write", func() {
		f := newByHand("erase-lag", nil)
		u := f.newUser(kidv1.IdentitySession, "s-lag", kidv1.KidUserStatus{SessionID: "s-lag", ChallengeIDs: []string{"c-lag"}})
		e := f.appliedWithPersonalData(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-lag", Status: kid.StatusPass, SessionID: "s-lag"}, u.Name)

		// The KidEvent controller's cache has not seen the erasure, nor the
		// KidUser controller's the runs settle.
		f.lag.Hold(ctx, u)
		f.lag.Hold(ctx, e)
		before := u.DeepCopy()
		erased := metav1.Now()
		u.Status.ErasedAt = &erased
		Expect(f.client.Status().Patch(ctx, u, client.MergeFrom(before))).To(Succeed())

		Expect(f.reconcile(e)).To(Succeed())
		settled := &kidv1.KidEvent{}
		Expect(f.client.Get(ctx, client.ObjectKeyFromObject(e), settled)).To(Succeed(), "its cache showed the player not erased")
		Expect(settled.Status.Finished()).To(BeTrue())

		f.lag.Release(u)
		ur := f.users()
		res, err := ur.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(u)})
		Expect(err).NotTo(HaveOccurred())
		Expect(f.gone(e)).To(BeFalse(), "its cache showed the runs pending")
		Expect(res.RequeueAfter).To(BeNumerically(">", 0))
		Expect(res.RequeueAfter).To(BeNumerically("<=", time.Minute), "the erased user is looked at again soon, not at its expiry")

		// The requeue comes; the cache has caught up.
		f.lag.Release(e)
		_, err = ur.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(u)})
		Expect(err).NotTo(HaveOccurred())
		Expect(f.gone(e)).To(BeTrue())
	})
})

var _ = Describe("The look-ahead to a stored PASS, on a fold retried", func() {
	It("goes back to the stand-in the first attempt counted the event on, though the cache does not show it yet", func() {
		conflict := false
		f := newByHand("ahead-retry", func(obj client.Object) error {
			if _, ok := obj.(*kidv1.KidEvent); ok && conflict {
				conflict = false
				return errConflict(obj)
			}
			return nil
		})
		standIn := &kidv1.KidUser{ObjectMeta: metav1.ObjectMeta{Namespace: f.product.Namespace, Name: kidv1.UserName(f.product.Name, kidv1.IdentityChallenge, "c-retry")}}
		session := &kidv1.KidUser{ObjectMeta: metav1.ObjectMeta{Namespace: f.product.Namespace, Name: kidv1.UserName(f.product.Name, kidv1.IdentitySession, "s-retry")}}
		// The cache will not show the stand-in the first attempt makes.
		f.lag.Hide(standIn)

		inProgress := f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-retry", Status: kid.StatusInProgress})
		conflict = true
		Expect(f.reconcile(inProgress)).To(MatchError(ContainSubstring("updating event status")))
		Expect(f.get(standIn.Name).Status.ObservedEvents).To(BeEquivalentTo(1), "the first attempt counted it on the stand-in")

		// The PASS is stored before the retry: it links the challenge.
		pass := f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-retry", Status: kid.StatusPass, SessionID: "s-retry"})

		Expect(f.reconcile(inProgress)).NotTo(Succeed(), "the stand-in holds the event; the retry waits for the cache to show it")
		Expect(f.gone(session)).To(BeTrue(), "the link was not followed: the session's user did not count the event")

		f.lag.Release(standIn)
		Expect(f.reconcile(inProgress)).To(Succeed())
		got := &kidv1.KidEvent{}
		Expect(f.client.Get(ctx, client.ObjectKeyFromObject(inProgress), got)).To(Succeed())
		Expect(got.Status.UserRef).To(Equal(&kidv1.LocalObjectReference{Name: standIn.Name}))
		Expect(f.get(standIn.Name).Status.ObservedEvents).To(BeEquivalentTo(1))

		Expect(f.reconcile(pass)).To(Succeed())
		_, err := f.users().Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(standIn)})
		Expect(err).NotTo(HaveOccurred())
		Expect(f.gone(standIn)).To(BeTrue(), "merged into the session's user")
		Expect(f.get(session.Name).Status.ObservedEvents).To(BeEquivalentTo(2), "two events, each counted once")
	})
})

var _ = Describe("The names of events in flight, after a takeover", func() {
	It("keeps a name whose event the KidEvent cache has not seen yet, so the fold repeated counts nothing again", func() {
		f := newByHand("inflight-takeover", nil)
		first, fe := builtEvent(f.product, time.Now(), kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-takeover", Status: kid.StatusPass, SessionID: "s-takeover"})
		// The old leader folded the first event into the player and lost
		// its lease before marking it Applied; the new leader's KidEvent
		// cache has not seen the event yet.
		f.lag.Hide(first)
		Expect(f.client.Create(ctx, first)).To(Succeed())
		u := f.newUser(kidv1.IdentitySession, "s-takeover", kidv1.KidUserStatus{})
		before := u.DeepCopy()
		u.Status = *fold.Apply(&u.Status, fe, kid.Privacy{}, string(u.UID))
		Expect(f.client.Status().Patch(ctx, u, client.MergeFrom(before))).To(Succeed())

		// Another event of the player folds first.
		second := f.store(kid.SessionChangePermissions, kidsim.Fields{SessionID: "s-takeover"})
		Expect(f.reconcile(second)).To(Succeed())
		Expect(f.get(u.Name).Status.InFlightEvents).To(ContainElement(first.Name), "not pruned on a cache miss")

		f.lag.Release(first)
		Expect(f.reconcile(first)).To(Succeed())
		Expect(f.get(u.Name).Status.ObservedEvents).To(BeEquivalentTo(2), "two events, each counted once")
	})
})
