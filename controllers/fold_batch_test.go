package controllers_test

import (
	"errors"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/controllers"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/cachemem"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// A player's queued events fold in one status write of its KidUser
// (kidevent_batch.go). The reconciler is driven by hand over a fake API
// server, so that the events are all stored before the first is folded, as
// they are when the controllers are behind.
var _ = Describe("A player's queued events", func() {
	// pass reconciles e and returns the writes it made.
	pass := func(f *byHand, e *kidv1.KidEvent) []string {
		GinkgoHelper()
		*f.writes = nil
		Expect(f.reconcile(e)).To(Succeed())
		return append([]string(nil), *f.writes...)
	}
	phaseOf := func(f *byHand, e *kidv1.KidEvent) *kidv1.KidEvent {
		GinkgoHelper()
		got := &kidv1.KidEvent{}
		Expect(f.client.Get(ctx, client.ObjectKeyFromObject(e), got)).To(Succeed())
		return got
	}
	const userStatusWrite = "patch status KidUser"

	It("are folded with the first one's pass, in one status write of the KidUser, each counted once and applied by its own pass", func() {
		f := newByHand("batch-one-write", nil)
		// A journey: the IN_PROGRESS names only the challenge; the PASS
		// that links it to the session, and a permission change, are
		// stored behind it.
		inProgress := f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-b", Status: kid.StatusInProgress})
		passed := f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-b", Status: kid.StatusPass, SessionID: "s-b", KUID: "k-b"})
		changed := f.store(kid.SessionChangePermissions, kidsim.Fields{SessionID: "s-b"})
		session := kidv1.UserName(f.product.Name, kidv1.IdentitySession, "s-b")

		Expect(pass(f, inProgress)).To(Equal([]string{"create KidUser", userStatusWrite, "patch status KidEvent"}))
		u := f.get(session)
		Expect(u.Status.ObservedEvents).To(BeEquivalentTo(3), "the three events, counted by the one write")
		Expect(u.Status.InFlightEvents).To(ConsistOf(inProgress.Name, passed.Name, changed.Name))
		Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentGranted))
		Expect(u.Status.Session.PermissionsChangedAt).NotTo(BeNil())
		// Created with the labels of every id the three name (the kuid
		// only the PASS behind the IN_PROGRESS names): no label is left
		// for the kiduser controller to write (design §5, "Lookups").
		Expect(cachemem.IDLabelsStale(u)).To(BeFalse(), "labels %v for the ids %v", u.Labels, u.HeldIDs())

		// Each of the others is applied by its own pass, with no write of
		// the user.
		Expect(pass(f, passed)).To(Equal([]string{"patch status KidEvent"}))
		Expect(pass(f, changed)).To(Equal([]string{"patch status KidEvent"}))
		for _, e := range []*kidv1.KidEvent{inProgress, passed, changed} {
			got := phaseOf(f, e)
			Expect(got.Status.Phase).To(Equal(kidv1.EventApplied), e.Name)
			Expect(got.Status.UserRef).To(Equal(&kidv1.LocalObjectReference{Name: session}), e.Name)
			Expect(meta.IsStatusConditionTrue(got.Status.Conditions, kidv1.ProcessedCondition)).To(BeTrue(), e.Name)
		}
		u = f.get(session)
		Expect(u.Status.ObservedEvents).To(BeEquivalentTo(3), "no event counted twice")
		Expect(u.Status.EventCounts).To(HaveLen(1))
		Expect(u.Status.LastEventRef.Name).To(Equal(changed.Name), "the last event k-ID signed")
		Expect(pass(f, changed)).To(BeEmpty(), "a pass over an applied event writes nothing")
	})

	It("do not lose their fold to one of them that cannot fold", func() {
		f := newByHand("batch-bad-member", nil)
		passed := f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-x", Status: kid.StatusPass, SessionID: "s-x"})
		bad, _ := builtEvent(f.product, time.Now().Add(-kid.NotificationWindow), kid.SessionChangePermissions, kidsim.Fields{SessionID: "s-x"})
		bad.Spec.Data.Raw = []byte(`"not an object"`)
		Expect(f.client.Create(ctx, bad)).To(Succeed())
		changed := f.store(kid.SessionChangePermissions, kidsim.Fields{SessionID: "s-x"})
		session := kidv1.UserName(f.product.Name, kidv1.IdentitySession, "s-x")

		Expect(pass(f, passed)).To(Equal([]string{"create KidUser", userStatusWrite, "patch status KidEvent"}))
		Expect(f.get(session).Status.InFlightEvents).To(ConsistOf(passed.Name, changed.Name), "the good event folded, the bad one left to its pass")
		Expect(pass(f, bad)).To(Equal([]string{"patch status KidEvent"}))
		Expect(phaseOf(f, bad).Status.Phase).To(Equal(kidv1.EventIgnored))
		Expect(pass(f, changed)).To(Equal([]string{"patch status KidEvent"}))
		Expect(phaseOf(f, changed).Status.Phase).To(Equal(kidv1.EventApplied))
		Expect(f.get(session).Status.ObservedEvents).To(BeEquivalentTo(2))
	})

	It("leave an erasure to its own pass", func() {
		f := newByHand("batch-erasure", nil)
		passed := f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-e", Status: kid.StatusPass, SessionID: "s-e"})
		deleted := f.store(kid.SessionDelete, kidsim.Fields{SessionID: "s-e"})
		session := kidv1.UserName(f.product.Name, kidv1.IdentitySession, "s-e")

		Expect(pass(f, passed)).To(Equal([]string{"create KidUser", userStatusWrite, "patch status KidEvent"}))
		u := f.get(session)
		Expect(u.Status.ErasedAt).To(BeNil(), "the PASS was applied to a player not yet erased")
		Expect(u.Status.ObservedEvents).To(BeEquivalentTo(1))
		Expect(pass(f, deleted)).To(Equal([]string{userStatusWrite, "patch status KidEvent"}))
		Expect(f.get(session).Status.ErasedAt).NotTo(BeNil())
	})

	It("are counted once when the process stops after the batch's write, and the next one applies them", func() {
		crash := false
		f := newByHand("batch-crash", func(obj client.Object) error {
			if _, ok := obj.(*kidv1.KidEvent); ok && crash {
				crash = false
				return errors.New("killed")
			}
			return nil
		})
		passed := f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-k", Status: kid.StatusPass, SessionID: "s-k"})
		changed := f.store(kid.SessionChangePermissions, kidsim.Fields{SessionID: "s-k"})
		session := kidv1.UserName(f.product.Name, kidv1.IdentitySession, "s-k")

		// The batch's user write lands; the process dies before the first
		// event's phase.
		crash = true
		Expect(f.reconcile(passed)).To(MatchError("updating event status: killed"))
		Expect(f.get(session).Status.ObservedEvents).To(BeEquivalentTo(2))

		// The restarted process remembers nothing: it reads each event
		// from the API server and finds both in the user's flight.
		f.r = &controllers.KidEventReconciler{Client: f.lag, APIReader: f.client, Filters: actions.NewFilters(), Clock: clock.RealClock{}}
		Expect(pass(f, changed)).To(Equal([]string{"patch status KidEvent"}))
		Expect(pass(f, passed)).To(Equal([]string{"patch status KidEvent"}))
		Expect(phaseOf(f, passed).Status.Phase).To(Equal(kidv1.EventApplied))
		Expect(phaseOf(f, changed).Status.Phase).To(Equal(kidv1.EventApplied))
		Expect(f.get(session).Status.ObservedEvents).To(BeEquivalentTo(2), "each event counted once")
	})

	It("are not counted again when the cache still shows one Pending after its own pass applied it", func() {
		f := newByHand("batch-lagging", nil)
		first := f.store(kid.SessionChangePermissions, kidsim.Fields{SessionID: "s-l"})
		stale := first.DeepCopy() // as it was stored: Pending
		session := kidv1.UserName(f.product.Name, kidv1.IdentitySession, "s-l")
		Expect(pass(f, first)).To(Equal([]string{"create KidUser", userStatusWrite, "patch status KidEvent"}))
		Expect(phaseOf(f, first).Status.Phase).To(Equal(kidv1.EventApplied))

		// A second event's fold sees the first applied and drops its name.
		second := storeAt(f, 1, kid.SessionChangePermissions, kidsim.Fields{SessionID: "s-l"})
		Expect(pass(f, second)).To(Equal([]string{userStatusWrite, "patch status KidEvent"}))
		Expect(f.get(session).Status.InFlightEvents).To(Equal([]string{second.Name}))

		// Now the cache shows the first Pending again (a new leader's
		// KidEvent watch behind its KidUser watch) when a third event's
		// pass looks for the player's queued events: the API server says
		// it is applied, and it is not counted again.
		f.lag.holdAs(stale)
		third := storeAt(f, 2, kid.SessionChangePermissions, kidsim.Fields{SessionID: "s-l"})
		Expect(pass(f, third)).To(Equal([]string{userStatusWrite, "patch status KidEvent"}))
		Expect(f.get(session).Status.ObservedEvents).To(BeEquivalentTo(3))
	})
})

var _ = Describe("The live read of a Pending event, overlapped with its new player's create", func() {
	It("deletes the user it made again when the API server shows the cached copy was stale", func() {
		f := newByHand("overlap-stale", nil)
		e := f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-o", Status: kid.StatusPass, SessionID: "s-o"})
		stale := e.DeepCopy()
		Expect(f.reconcile(e)).To(Succeed())
		session := kidv1.UserName(f.product.Name, kidv1.IdentitySession, "s-o")
		// The player is gone since (retention), and the cache still shows
		// the event Pending.
		Expect(f.client.Delete(ctx, f.get(session))).To(Succeed())
		f.lag.holdAs(stale)

		*f.writes = nil
		Expect(f.reconcile(e)).To(Succeed())
		Expect(*f.writes).To(Equal([]string{"create KidUser", "delete KidUser"}), "made while the read was in flight, and deleted again")
		Expect(f.client.Get(ctx, client.ObjectKey{Namespace: f.product.Namespace, Name: session}, &kidv1.KidUser{})).NotTo(Succeed())
		got := &kidv1.KidEvent{}
		Expect(f.client.Get(ctx, client.ObjectKeyFromObject(e), got)).To(Succeed())
		Expect(got.Status.Phase).To(Equal(kidv1.EventApplied))
	})
})

// holdAs makes reads show obj as given, whatever the API server has: a
// cache that still holds an old copy.
func (l *laggingCache) holdAs(obj client.Object) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held[l.keyOf(obj)] = obj.DeepCopyObject().(client.Object)
}

// storeAt stores an event as the receiver does, signed the given number of
// notification windows from now: two permission changes of one session in
// one window are one event.
func storeAt(f *byHand, windows int, eventType string, fields kidsim.Fields) *kidv1.KidEvent {
	GinkgoHelper()
	e, _ := builtEvent(f.product, time.Now().Add(time.Duration(windows)*kid.NotificationWindow), eventType, fields)
	Expect(f.client.Create(ctx, e)).To(Succeed())
	return e
}
