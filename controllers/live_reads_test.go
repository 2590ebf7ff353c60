package controllers

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/cachemem"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

// liveReads is a store shared by a "cache" (the reader of UserCache) and a
// client that counts its reads of KidUsers, as the manager's client reads
// every KidUser live.
type liveReads struct {
	cache client.Client
	live  client.Client
	gets  map[string]int // KidUser GETs through live, by name
}

func newLiveReads(objs ...client.Object) *liveReads {
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).
		WithStatusSubresource(&kidv1.KidUser{}, &kidv1.KidEvent{}).
		WithIndex(&kidv1.KidUser{}, kidv1.UserIDIndex, cachemem.UserIDBuckets).
		WithIndex(&kidv1.KidEvent{}, cachemem.EventIDIndex, cachemem.EventIDBuckets).
		WithObjects(objs...).Build()
	l := &liveReads{cache: c, gets: map[string]int{}}
	l.live = interceptor.NewClient(c, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*kidv1.KidUser); ok {
				l.gets[key.Name]++
			}
			return c.Get(ctx, key, obj, opts...)
		},
	})
	return l
}

func (l *liveReads) total() int {
	n := 0
	for _, v := range l.gets {
		n += v
	}
	return n
}

func liveReadsProduct(api bool) *kidv1.KidProduct {
	p := &kidv1.KidProduct{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "demo", UID: "uid-product"}}
	if api {
		p.Spec.API = &kidv1.APISpec{}
	}
	return p
}

func liveReadsUser(kind kidv1.IdentityKind, id string) *kidv1.KidUser {
	return &kidv1.KidUser{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: kidv1.UserName("demo", kind, id), UID: types.UID("uid-" + id),
			// Labelled as the operator labels a player's ids.
			CreationTimestamp: metav1.Now(), Labels: map[string]string{kidv1.ProductLabel: "demo", kidv1.IDLabel(id): ""}},
		Spec: kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "demo"}, Identity: kidv1.UserIdentity{Kind: kind, ID: id}},
	}
}

// Each write of a player wakes both KidUser controllers. A pass with
// nothing to do, as the cache's skeleton shows, reads no player from the
// API server (kiduser_idle.go); a pass with work reads it.
func TestKidUserReconcilesReadLiveOnlyForWork(t *testing.T) {
	now := time.Now()
	erased := liveReadsUser(kidv1.IdentitySession, "s-erased")
	erased.Status.ErasedAt = &metav1.Time{Time: now}
	unlabelled := liveReadsUser(kidv1.IdentitySession, "s-3")
	unlabelled.Status.KUID = "k-3"
	for _, c := range []struct {
		name                string
		user                *kidv1.KidUser
		api                 bool
		workReads, apiReads int
	}{
		{name: "a session's user, product without spec.api", user: liveReadsUser(kidv1.IdentitySession, "s-1")},
		{name: "a session's user, product with spec.api", user: liveReadsUser(kidv1.IdentitySession, "s-2"), api: true, apiReads: 1},
		{name: "a challenge's stand-in (to merge)", user: liveReadsUser(kidv1.IdentityChallenge, "c-1"), workReads: 1},
		{name: "an erased user (its events to delete)", user: erased, api: true, workReads: 1},
		{name: "a session's user with an id it holds not labelled", user: unlabelled, workReads: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := NewWithT(t)
			l := newLiveReads(liveReadsProduct(c.api), c.user)
			r := &KidUserReconciler{Client: l.live, Users: cachemem.NewUserCache(l.cache), Clock: clock.RealClock{}, SweepInterval: DefaultUserSweep,
				APIClients: NewAPIClients(nil)}
			req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(c.user)}
			_, _ = r.Reconcile(context.Background(), req)
			g.Expect(l.total()).To(Equal(c.workReads), "the kiduser controller's live reads")
			l.gets = map[string]int{}
			_, _ = r.reconcileReads(context.Background(), req)
			g.Expect(l.total()).To(Equal(c.apiReads), "kiduser-api's live reads")
		})
	}
}

// A new player's user is created while its event's live read is in
// flight; whether it exists already, the cache is asked, not the API
// server.
func TestNewPlayersFoldReadsNoUserLive(t *testing.T) {
	g := NewWithT(t)
	product := liveReadsProduct(false)
	body, err := kidsim.Build(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-new", Status: kid.StatusPass, SessionID: "s-new", KUID: "k-new", ProductID: 11472})
	g.Expect(err).NotTo(HaveOccurred())
	env, err := kid.ParseEnvelope(body)
	g.Expect(err).NotTo(HaveOccurred())
	e, err := inbox.Build(product, env, body, time.Now(), time.Now(), kidv1.SourceWebhook)
	g.Expect(err).NotTo(HaveOccurred())
	l := newLiveReads(product, e)
	r := &KidEventReconciler{Client: l.live, APIReader: l.cache, Users: cachemem.NewUserCache(l.cache), Filters: actions.NewFilters(), Clock: clock.RealClock{}}
	_, err = r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(e)})
	g.Expect(err).NotTo(HaveOccurred())

	u := &kidv1.KidUser{}
	g.Expect(l.cache.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: kidv1.UserName("demo", kidv1.IdentitySession, "s-new")}, u)).To(Succeed())
	g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentGranted), "folded")
	g.Expect(l.gets).To(BeEmpty(), "no KidUser read live")
}

// A product's resume (its breaker closed, its key accepted) wakes the
// users waiting for it, not every player: a woken user is a live read, and
// at 250,000 players waking all of them was a quarter of an hour of
// reconciles after each breaker's close.
func TestAResumeWakesThePausedUsersOnly(t *testing.T) {
	g := NewWithT(t)
	now := time.Now()
	paused := liveReadsUser(kidv1.IdentitySession, "s-paused")
	scheduled := liveReadsUser(kidv1.IdentitySession, "s-scheduled")
	resumedSince := liveReadsUser(kidv1.IdentitySession, "s-resumed-since")
	unread := liveReadsUser(kidv1.IdentitySession, "s-unread")
	other := liveReadsUser(kidv1.IdentitySession, "s-other-product")
	other.Spec.ProductRef.Name = "other"
	l := newLiveReads(liveReadsProduct(true), paused, scheduled, resumedSince, unread, other)
	r := &KidUserReconciler{Client: l.live, Users: cachemem.NewUserCache(l.cache), Clock: clock.RealClock{}, SweepInterval: DefaultUserSweep,
		APIClients: NewAPIClients(nil)}

	// What reconcileAPI records: a pass that found the breaker open, one
	// that read and scheduled its next read, one paused and then read,
	// and (s-unread, s-other-product) no pass since the start.
	r.polls.setPaused(paused, true)
	r.polls.woke(paused, now, breakerProbeMax)
	r.polls.setPaused(scheduled, false)
	r.polls.woke(scheduled, now, time.Hour)
	r.polls.setPaused(resumedSince, true)
	r.polls.woke(resumedSince, now, breakerProbeMax)
	r.polls.setPaused(resumedSince, false)
	r.polls.woke(resumedSince, now, time.Hour)

	var woken []string
	for _, req := range r.pausedUsersOf(context.Background(), liveReadsProduct(true)) {
		woken = append(woken, req.Name)
	}
	g.Expect(woken).To(ConsistOf(paused.Name, unread.Name))
	g.Expect(l.gets).To(BeEmpty(), "the users are found in the cache")
}
