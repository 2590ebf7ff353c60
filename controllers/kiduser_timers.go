package controllers

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// queueTimers is kid_user_queue_timers: controller-runtime's
// workqueue_depth counts only the items ready now, not those waiting for a
// time, which are what a timer per player would add up to.
var queueTimers = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "kid_user_queue_timers",
	Help: "Users waiting in a KidUser controller's queue for a time (a reconcile's requeue, or the sweep's schedule), by controller (kiduser, kiduser-api).",
}, []string{"controller"})

func init() { metrics.Registry.MustRegister(queueTimers) }

// timedQueue is controller-runtime's priority queue (the default one),
// counting its items that wait for a time. As the queue does, it keeps one
// item per user: an item added at once is ready, whatever time it waited
// for; one added for a time keeps the soonest; one handed to a worker has
// left the queue.
type timedQueue struct {
	priorityqueue.PriorityQueue[reconcile.Request]
	gauge prometheus.Gauge

	mu sync.Mutex
	// waiting is true for an item waiting for a time, false for one ready.
	waiting map[reconcile.Request]bool
	timers  int
	// closed is set at ShutDown: the queue adds and hands out nothing
	// more, and counts nothing more.
	closed bool
}

// newTimedQueue is a controller's NewQueue.
func newTimedQueue(name string, limiter workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
	q := &timedQueue{
		PriorityQueue: priorityqueue.New(name, func(o *priorityqueue.Opts[reconcile.Request]) { o.RateLimiter = limiter }),
		gauge:         queueTimers.WithLabelValues(name),
		waiting:       map[reconcile.Request]bool{},
	}
	return q
}

// ShutDown stops the queue and takes its timers off the gauge. The gauge
// is shared by every queue of the controller's name, and moved by each
// queue's own changes: a stopped queue (a lost lease, a manager started
// again in the same process) leaves items that nothing will take, and
// must neither keep counting them nor set the gauge over the running
// queue's count, as it did when each queue set the gauge to its own total.
func (q *timedQueue) ShutDown() {
	q.close()
	q.PriorityQueue.ShutDown()
}

func (q *timedQueue) ShutDownWithDrain() {
	q.close()
	q.PriorityQueue.ShutDownWithDrain()
}

func (q *timedQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		q.gauge.Sub(float64(q.timers))
		q.timers = 0
	}
}

func (q *timedQueue) AddWithOpts(o priorityqueue.AddOpts, items ...reconcile.Request) {
	q.note(o, items)
	q.PriorityQueue.AddWithOpts(o, items...)
}

func (q *timedQueue) Add(item reconcile.Request) {
	q.AddWithOpts(priorityqueue.AddOpts{}, item)
}

func (q *timedQueue) AddAfter(item reconcile.Request, d time.Duration) {
	q.AddWithOpts(priorityqueue.AddOpts{After: d}, item)
}

func (q *timedQueue) AddRateLimited(item reconcile.Request) {
	q.AddWithOpts(priorityqueue.AddOpts{RateLimited: true}, item)
}

func (q *timedQueue) GetWithPriority() (reconcile.Request, int, bool) {
	item, priority, shutdown := q.PriorityQueue.GetWithPriority()
	if !shutdown {
		q.taken(item)
	}
	return item, priority, shutdown
}

func (q *timedQueue) Get() (reconcile.Request, bool) {
	item, _, shutdown := q.GetWithPriority()
	return item, shutdown
}

// note counts what an add does to the items' waits. A retry after an
// error (rate limited) is not counted as a timer: its wait is the rate
// limiter's, and the item keeps what it had.
func (q *timedQueue) note(o priorityqueue.AddOpts, items []reconcile.Request) {
	if o.RateLimited {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		// The queue adds nothing after its ShutDown.
		return
	}
	before := q.timers
	for _, item := range items {
		wasWaiting, queued := q.waiting[item]
		switch {
		case o.After <= 0:
			q.waiting[item] = false
			if wasWaiting {
				q.timers--
			}
		case !queued:
			q.waiting[item] = true
			q.timers++
		}
	}
	q.gauge.Add(float64(q.timers - before))
}

// taken forgets an item handed to a worker.
func (q *timedQueue) taken(item reconcile.Request) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	if q.waiting[item] {
		q.timers--
		q.gauge.Dec()
	}
	delete(q.waiting, item)
}
