package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kidapi"
)

// A manager started again in one process (the specs' restarts; a replica
// that lost its lease and won it back) makes a second queue of the same
// controller name. The CI run of 2026-12-05 read kid_user_queue_timers
// 120 for a controller whose running queue held no timer: the stopped
// queue had set the shared gauge to its own count.
func TestQueueTimersOfAStoppedQueueLeaveTheGauge(t *testing.T) {
	g := NewWithT(t)
	const name = "timers-test"
	gauge := queueTimers.WithLabelValues(name)
	newQueue := func() *timedQueue {
		return newTimedQueue(name, workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]()).(*timedQueue)
	}
	req := func(n string) reconcile.Request {
		return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: n}}
	}

	old := newQueue()
	for _, n := range []string{"a", "b", "c"} {
		old.AddAfter(req(n), time.Hour)
	}
	g.Expect(testutil.ToFloat64(gauge)).To(Equal(3.0))
	old.ShutDown()
	g.Expect(testutil.ToFloat64(gauge)).To(BeZero(), "a stopped queue's timers leave the gauge")

	running := newQueue()
	defer running.ShutDown()
	running.AddAfter(req("d"), time.Hour)
	running.AddAfter(req("d"), time.Minute) // the same user: one timer
	running.Add(req("e"))                   // ready: no timer
	// What reaches the stopped queue changes nothing.
	old.AddAfter(req("x"), time.Hour)
	old.AddAfter(req("y"), time.Hour)
	g.Expect(testutil.ToFloat64(gauge)).To(Equal(1.0))

	// A timer made ready, then handed out, leaves it.
	running.AddAfter(req("f"), time.Hour)
	g.Expect(testutil.ToFloat64(gauge)).To(Equal(2.0))
	running.Add(req("f"))
	g.Expect(testutil.ToFloat64(gauge)).To(Equal(1.0))
	for range 2 {
		item, _ := running.Get()
		g.Expect(item.Name).To(BeElementOf("e", "f"))
		running.Done(item)
	}
	g.Expect(testutil.ToFloat64(gauge)).To(Equal(1.0), "d still waits")
}

// A slot left behind (its pass found the breaker open, or nothing left to
// ask) is booked again, not taken without a booking: taken, it spends the
// token an on-time user's slot was booked for, and that user goes to the
// back of the lane.
func TestAStaleSlotIsBookedAgain(t *testing.T) {
	g := NewWithT(t)
	clk := testingclock.NewFakeClock(time.Unix(1764000000, 0))
	cfg := kidapi.Config{BaseURL: "https://api.k-id.com/api/v1", APIKey: "k", RPS: 1, Burst: 1, Clock: clk}
	kc := kidapi.New(cfg)
	c := &APIClient{Client: kc, lanes: kidapi.NewLanes(kc, cfg.RPS, cfg.Burst, clk)}
	r := &KidUserReconciler{Clock: clk}
	user := func(name string) *kidv1.KidUser {
		u := &kidv1.KidUser{}
		u.Namespace, u.Name, u.UID = "ns", name, types.UID(name+"-uid")
		return u
	}
	first, onTime, stale := user("first"), user("on-time"), user("stale")

	g.Expect(r.slot(c, first, kidapi.Resync, clk.Now())).To(BeZero(), "the schedule's and the limiter's first token")
	g.Expect(r.slot(c, onTime, kidapi.Resync, clk.Now())).To(Equal(time.Second), "booked for the next token")
	// stale booked a slot a minute ago and never came for it.
	r.polls.update(stale, func(s *pollState) { s.slotAt, s.slotLane = clk.Now().Add(-time.Minute), kidapi.Resync })

	clk.Step(time.Second)
	g.Expect(r.slot(c, stale, kidapi.Resync, clk.Now())).To(Equal(time.Second), "booked again, behind on-time")
	g.Expect(r.slot(c, onTime, kidapi.Resync, clk.Now())).To(BeZero(), "its token was still there")
}

// A change to a user (a kid.dev/requested-at, a permission change folded)
// is handed to a worker before the sweep's backlog, which after a restart
// can be every player, and before a product's wake of all its players.
func TestAChangeGoesBeforeTheSweepsBacklog(t *testing.T) {
	now := time.Now()
	expectChangeFirst(t, "resync", func(q workqueue.TypedRateLimitingInterface[reconcile.Request], reqs []reconcile.Request) {
		for _, req := range reqs {
			scheduleBefore(q, req, now, now, now.Add(time.Minute))
		}
	})
}

func TestAProductsWakeGoesAfterAChange(t *testing.T) {
	// A product's resume wakes its players, through enqueueLow.
	expectChangeFirst(t, "player", func(q workqueue.TypedRateLimitingInterface[reconcile.Request], reqs []reconcile.Request) {
		players := func(context.Context, client.Object) []reconcile.Request { return reqs }
		product := &kidv1.KidProduct{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "game"}}
		enqueueLow(players).Generic(context.Background(), event.GenericEvent{Object: product}, q)
	})
}

// expectChangeFirst has fill enqueue 100 users named prefix-000 to
// prefix-099, then adds a change as the watch's handler does (at the
// default priority), and expects the change to be handed out first and
// prefix-000 next.
func expectChangeFirst(t *testing.T, prefix string, fill func(workqueue.TypedRateLimitingInterface[reconcile.Request], []reconcile.Request)) {
	g := NewWithT(t)
	q := newTimedQueue(prefix+"-priority-test", workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	var reqs []reconcile.Request
	for i := range 100 {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("%s-%03d", prefix, i)}})
	}
	fill(q, reqs)
	g.Eventually(q.Len).Should(Equal(100))
	urgent := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "requested"}}
	q.(priorityqueue.PriorityQueue[reconcile.Request]).AddWithOpts(priorityqueue.AddOpts{}, urgent)
	g.Eventually(q.Len).Should(Equal(101))
	item, _ := q.Get()
	g.Expect(item).To(Equal(urgent), "handed out before the 100 %s users enqueued first", prefix)
	q.Done(item)
	item, _ = q.Get()
	g.Expect(item.Name).To(Equal(prefix + "-000"))
	q.Done(item)
}

// A user requeued for the slot it booked is handed out at its time before
// a backlog of first reconciles (a product's wake, a restart's sweep): a
// slot taken over a second late is booked again at the back of its lane,
// and behind 43,000 such reconciles the resync read 3 sessions in 10 s at
// a rate of 100.
func TestASlotGoesBeforeTheBacklog(t *testing.T) {
	g := NewWithT(t)
	q := newTimedQueue("slot-priority-test", workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	pq := q.(priorityqueue.PriorityQueue[reconcile.Request])
	slotted := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "slotted"}}
	// Its reconcile booked a slot 50 ms ahead, and asked to come back then.
	holding := pollState{slotAt: time.Now().Add(50 * time.Millisecond), slotLane: kidapi.Resync}
	pq.AddWithOpts(priorityqueue.AddOpts{After: 50 * time.Millisecond, Priority: ptr.To(requeuePriority(holding))}, slotted)
	for i := range 100 {
		addLow(q, 0, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("player-%03d", i)}})
	}
	// A user whose read was made comes back for its next resync at the
	// backlog's priority.
	g.Expect(requeuePriority(pollState{})).To(Equal(handler.LowPriority))
	g.Eventually(q.Len).Should(Equal(101))
	time.Sleep(100 * time.Millisecond)
	item, _ := q.Get()
	g.Expect(item).To(Equal(slotted), "handed out at its time before the 100 first reconciles")
	q.Done(item)
}
