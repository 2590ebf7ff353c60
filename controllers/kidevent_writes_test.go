package controllers

import (
	"context"
	"errors"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
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

// takeoverLister answers the takeover's list with a resourceVersion, or
// fails, and counts the lists.
type takeoverLister struct {
	client.Reader
	rv    string
	fail  bool
	lists int
}

func (l *takeoverLister) List(_ context.Context, list client.ObjectList, _ ...client.ListOption) error {
	l.lists++
	if l.fail {
		return errors.New("the API server is away")
	}
	list.(*kidv1.KidEventList).ResourceVersion = l.rv
	return nil
}

func versionOf(name, rv string) *kidv1.KidEvent {
	return &kidv1.KidEvent{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: rv}}
}

// A cached copy of a Pending event is folded without a read only when it is
// newer than the takeover and shows this process's last write of it.
func TestACachedEventIsTrustedOnlyPastTheTakeoverAndItsLastWrite(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	live := &takeoverLister{rv: "100", fail: true}
	w := &ownWrites{}

	g.Expect(w.current(ctx, versionOf("e", "200"), live)).To(BeFalse(), "writes not recorded (no wrap): nothing is trusted")
	g.Expect(live.lists).To(BeZero())
	w.wrap(fake.NewClientBuilder().Build())
	g.Expect(w.current(ctx, versionOf("e", "200"), live)).To(BeFalse(), "the takeover's list failed")
	live.fail = false
	g.Expect(w.current(ctx, versionOf("e", "200"), live)).To(BeTrue(), "newer than the takeover, never written")
	g.Expect(w.current(ctx, versionOf("e", "100"), live)).To(BeFalse(), "a former leader may have written it since")
	g.Expect(w.current(ctx, versionOf("e", "99"), live)).To(BeFalse())
	g.Expect(w.current(ctx, versionOf("e", "not-a-number"), live)).To(BeFalse())
	g.Expect(live.lists).To(Equal(2), "listed until it worked, then never again")

	// A write answered: the cache must show its version.
	written := versionOf("e", "300")
	w.record(written, "200", nil)
	g.Expect(w.current(ctx, versionOf("e", "250"), live)).To(BeFalse(), "the cache lags the write")
	g.Expect(w.current(ctx, versionOf("other", "250"), live)).To(BeTrue(), "another event's write tells nothing of this one")
	g.Expect(w.marks()).To(Equal(1))
	g.Expect(w.current(ctx, versionOf("e", "300"), live)).To(BeTrue())
	g.Expect(w.marks()).To(BeZero(), "shown, so forgotten")

	// A write whose answer was lost: only a newer version than the one
	// written over shows it.
	w.record(versionOf("e", "300"), "300", apierrors.NewTimeoutError("slow", 1))
	g.Expect(w.current(ctx, versionOf("e", "300"), live)).To(BeFalse())
	g.Expect(w.current(ctx, versionOf("e", "301"), live)).To(BeTrue())

	// A write surely refused leaves nothing to wait for.
	w.record(versionOf("e", "301"), "301", apierrors.NewConflict(kidv1.GroupVersion.WithResource("kidevents").GroupResource(), "e", nil))
	g.Expect(w.marks()).To(BeZero())

	// A lost answer over an older copy does not loosen a later write's mark.
	w.record(versionOf("e", "500"), "400", nil)
	w.record(versionOf("e", "450"), "450", errors.New("connection reset"))
	g.Expect(w.current(ctx, versionOf("e", "480"), live)).To(BeFalse())
	g.Expect(w.current(ctx, versionOf("e", "500"), live)).To(BeTrue())

	// The informer drops what it shows; a deleted event is never trusted
	// until the cache drops it.
	w.record(versionOf("e", "600"), "500", nil)
	w.handler().OnUpdate(nil, versionOf("e", "599"))
	g.Expect(w.marks()).To(Equal(1), "the informer shows an older version")
	w.handler().OnUpdate(nil, versionOf("e", "600"))
	g.Expect(w.marks()).To(BeZero())
	w.recordDelete(versionOf("e", "600"), apierrors.NewConflict(kidv1.GroupVersion.WithResource("kidevents").GroupResource(), "e", nil))
	g.Expect(w.marks()).To(BeZero(), "a delete refused by its precondition deleted nothing")
	w.recordDelete(versionOf("e", "600"), nil)
	g.Expect(w.current(ctx, versionOf("e", "900"), live)).To(BeFalse(), "deleted")
	w.handler().OnDelete(toolscache.DeletedFinalStateUnknown{Key: "ns/e", Obj: versionOf("e", "600")})
	g.Expect(w.marks()).To(BeZero())

	// Only KidEvents are recorded.
	w.record(&kidv1.KidUser{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "u", ResourceVersion: "700"}}, "1", nil)
	g.Expect(w.marks()).To(BeZero())
}

// The reconciler's own writes of an event go through ownWrites: a pass over
// an event stored after the takeover reads no event from the API server,
// neither its own nor those its batch takes, and a pass that finds the
// cache behind its last write reads the event, and does not fold it again.
func TestAPassReadsAnEventLiveOnlyWhenTheCacheMayNotShowItsWrite(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	product := liveReadsProduct(false)
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).
		WithGlobalResourceVersionCounter().
		WithStatusSubresource(&kidv1.KidUser{}, &kidv1.KidEvent{}).
		WithIndex(&kidv1.KidUser{}, kidv1.UserIDIndex, cachemem.UserIDBuckets).
		WithIndex(&kidv1.KidEvent{}, cachemem.EventIDIndex, cachemem.EventIDBuckets).
		WithObjects(product).Build()
	g.Expect(c.Get(ctx, client.ObjectKeyFromObject(product), product)).To(Succeed())

	held := map[types.NamespacedName]*kidv1.KidEvent{}
	userGets := 0
	cache := interceptor.NewClient(c, interceptor.Funcs{
		// The manager's client reads KidUsers live.
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*kidv1.KidUser); ok {
				userGets++
			}
			if e, ok := held[key]; ok {
				e.DeepCopyInto(obj.(*kidv1.KidEvent))
				return nil
			}
			return c.Get(ctx, key, obj, opts...)
		},
	})
	gets := 0
	apiServer := interceptor.NewClient(c, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*kidv1.KidEvent); ok {
				gets++
			}
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			// The fake gives a list no resourceVersion: the takeover is
			// after the product was stored.
			list.(*kidv1.KidEventList).ResourceVersion = product.ResourceVersion
			return nil
		},
	})
	r := &KidEventReconciler{Client: cache, APIReader: apiServer, Users: cachemem.NewUserCache(c), Filters: actions.NewFilters(), Clock: clock.RealClock{}}
	r.Client = r.written.wrap(r.Client)

	store := func(challenge string, signed time.Time) *kidv1.KidEvent {
		body, err := kidsim.Build(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusPass, SessionID: "s-1"})
		g.Expect(err).NotTo(HaveOccurred())
		env, err := kid.ParseEnvelope(body)
		g.Expect(err).NotTo(HaveOccurred())
		e, err := inbox.Build(product, env, body, signed, signed, kidv1.SourceWebhook)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(c.Create(ctx, e)).To(Succeed())
		return e
	}
	pass := func(e *kidv1.KidEvent) {
		_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(e)})
		g.Expect(err).NotTo(HaveOccurred())
	}
	phase := func(e *kidv1.KidEvent) kidv1.EventPhase {
		got := &kidv1.KidEvent{}
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(e), got)).To(Succeed())
		return got.Status.Phase
	}
	counted := func() int64 {
		u := &kidv1.KidUser{}
		g.Expect(c.Get(ctx, types.NamespacedName{Namespace: "ns", Name: kidv1.UserName("demo", kidv1.IdentitySession, "s-1")}, u)).To(Succeed())
		return u.Status.ObservedEvents
	}

	now := time.Now()
	first := store("c-1", now)
	second := store("c-2", now.Add(time.Second))
	stale := first.DeepCopy() // as stored: Pending
	pass(first)
	g.Expect(gets).To(BeZero(), "neither the event nor the one its batch took was read from the API server")
	g.Expect(userGets).To(BeZero(), "the new player's user was made as the cache showed it missing, not after a GET answered 404")
	g.Expect(counted()).To(BeEquivalentTo(2), "the batch folded the second with the first")
	g.Expect(phase(first)).To(Equal(kidv1.EventApplied))
	g.Expect(r.written.marks()).To(Equal(1), "the first's Applied, not shown by a cache yet")

	// Its runs' retry comes while the cache still shows it Pending.
	held[client.ObjectKeyFromObject(first)] = stale
	pass(first)
	g.Expect(gets).To(Equal(1), "the cache is behind the pass's own write: the event is read")
	g.Expect(counted()).To(BeEquivalentTo(2), "and not folded again")

	pass(second)
	g.Expect(phase(second)).To(Equal(kidv1.EventApplied))
	g.Expect(gets).To(Equal(1), "the second, folded ahead, is not read either")
	g.Expect(counted()).To(BeEquivalentTo(2))
}
