package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/cachemem"
)

// The start and the sweeps (design.md §5, "Start and sweeps"). At 250,000
// players, a reconcile of each at every start (twice: kiduser and
// kiduser-api) and a queue timer per player for its expiry or its next read
// are what a start and the queues cost. Instead:
//   - the informer's first list and its resyncs enqueue a user only when
//     something is due for it now (startFilter); a real change (a new
//     resourceVersion) always does;
//   - one sweep, every SweepInterval, walks the users in the cache and
//     enqueues those due before the next sweep, each at its exact time
//     (AddAfter); the first sweep runs as the controllers start;
//   - a reconcile asks its queue for a wait only within one sweep
//     interval (timer); a later one is the sweep's.
//
// So the queues hold the users due within one interval, and a start
// reconciles the users with something due, not every player.

// DefaultUserSweep is the default of KidUserReconciler.SweepInterval: a
// walk of 250,000 cached users costs about half a second of CPU
// (BenchmarkDueOf), and the queues hold the users due within it.
const DefaultUserSweep = 5 * time.Minute

// userSweep is the sweep's link to the controllers' queues: each
// controller hands its queue over as it starts (sweepSource), which runs a
// sweep at once for it.
type userSweep struct {
	mu          sync.Mutex
	work, reads workqueue.TypedRateLimitingInterface[reconcile.Request]
	kick        chan struct{}
}

// sweepSource is the source through which a controller (kiduser-api when
// reads) hands its queue to the sweep. It enqueues nothing itself.
func (r *KidUserReconciler) sweepSource(reads bool) source.Source {
	return source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		r.sweep.mu.Lock()
		if reads {
			r.sweep.reads = q
		} else {
			r.sweep.work = q
		}
		r.sweep.mu.Unlock()
		select {
		case r.sweep.kick <- struct{}{}:
		default:
		}
		return nil
	})
}

// runSweeps sweeps every SweepInterval, and when a controller's queue
// arrives, until ctx ends. It runs while this replica leads.
func (r *KidUserReconciler) runSweeps(ctx context.Context) error {
	if !r.informers.WaitForCacheSync(ctx) {
		return nil
	}
	log := ctrl.LoggerFrom(ctx).WithName("kiduser-sweep")
	tick := time.NewTicker(r.SweepInterval)
	defer tick.Stop()
	for {
		if err := r.sweepOnce(ctx); err != nil {
			log.Error(err, "sweeping the users")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-r.sweep.kick:
		}
	}
}

// sweepOnce enqueues every cached user due before the next sweep, at its
// time, and records the status.api part of the users not read yet.
func (r *KidUserReconciler) sweepOnce(ctx context.Context) error {
	r.sweep.mu.Lock()
	work, reads := r.sweep.work, r.sweep.reads
	r.sweep.mu.Unlock()
	var list kidv1.KidProductList
	if err := r.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	products := make(map[types.NamespacedName]*kidv1.KidProduct, len(list.Items))
	for i := range list.Items {
		products[productKey(&list.Items[i])] = &list.Items[i]
	}
	now := r.Clock.Now()
	until := now.Add(r.SweepInterval)
	return r.eachCachedUser(ctx, func(u *kidv1.KidUser) {
		d := r.dueOf(u, products[userProduct(u)], now)
		if d.part.product != "" {
			r.polls.setPart(u, d.part)
		}
		req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(u)}
		scheduleBefore(work, req, d.work, now, until)
		scheduleBefore(reads, req, d.read, now, until)
	})
}

// scheduleBefore adds req to q at its time at, when at is before until (at
// once when it is past), at the low priority controller-runtime gives the
// informer's first list. What the sweep enqueues is the periodic work (a
// resync, a recovery poll, an expiry), and it can be every player at once
// (a restart over 250,000 overdue sessions); a change to a user (a
// kid.dev/requested-at, a permission change folded) comes through the
// watch at the default priority and is handed to a worker before that
// backlog, rather than behind it. A user already queued keeps the higher
// of its priorities.
func scheduleBefore(q workqueue.TypedRateLimitingInterface[reconcile.Request], req reconcile.Request, at, now, until time.Time) {
	if q == nil || at.IsZero() || !at.Before(until) {
		return
	}
	addLow(q, at.Sub(now), req)
}

// addLow adds reqs to q after a wait (none when after <= 0) at the low
// priority of the sweep's backlog.
func addLow(q workqueue.TypedRateLimitingInterface[reconcile.Request], after time.Duration, reqs ...reconcile.Request) {
	if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok {
		pq.AddWithOpts(priorityqueue.AddOpts{After: after, Priority: ptr.To(handler.LowPriority)}, reqs...)
		return
	}
	for _, req := range reqs {
		q.AddAfter(req, after)
	}
}

// enqueueLow enqueues, for a generic event (a product's calls may go out
// again), what f maps it to, at the sweep's low priority. A product's
// resume wakes every one of its players, 250,000 of them at issue #24's
// point, and most have nothing due; at the default priority they went
// before every change made after them, and an urgent read waited for the
// whole product to be reconciled: 27 s at the median and up to 95 s at
// 50,000 players (`make bench-reads`), over 2 minutes at 250,000. At the
// low priority a change still goes first
// (TestAProductsWakeGoesAfterAChange).
func enqueueLow(f handler.MapFunc) handler.EventHandler {
	return handler.Funcs{
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if reqs := f(ctx, e.Object); len(reqs) > 0 {
				addLow(q, 0, reqs...)
			}
		},
	}
}

// eachCachedUser calls f with every KidUser the cache holds, as its
// skeleton: f must neither change it nor keep it past the call. The
// manager's cache is read through its stores (Users: every namespace's,
// with --watch-namespaces too), one reused view for all users. A
// reconciler set up without Users (specs) walks the informer's store, or
// lists the cache.
func (r *KidUserReconciler) eachCachedUser(ctx context.Context, f func(*kidv1.KidUser)) error {
	if r.Users.Each(f) {
		// The manager's cache, read through its stores.
		return nil
	}
	inf, err := r.informers.GetInformer(ctx, &kidv1.KidUser{})
	if err != nil {
		return err
	}
	if s, ok := inf.(interface{ GetStore() toolscache.Store }); ok {
		for _, o := range s.GetStore().List() {
			if u := cachemem.UserOf(o); u != nil {
				f(u)
			}
		}
		return nil
	}
	// From the cache, never r.List: the manager's client reads KidUsers
	// live (skeletons are never handed out as users), so its list would
	// be a list of every player from the API server at each sweep.
	var list kidv1.KidUserList
	if err := r.informers.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	for i := range list.Items {
		f(&list.Items[i])
	}
	return nil
}

// timer is the wait a reconcile asks its queue for: d when within one
// sweep interval, else none, since the sweep enqueues the user in time
// (dueOf finds the same time).
func (r *KidUserReconciler) timer(d time.Duration) time.Duration {
	if d > r.SweepInterval {
		return 0
	}
	return d
}

// startFilter lets every change of a user through. Of the informer's first
// list and its resyncs, which change nothing (the same resourceVersion), it
// lets through only the users with something due now (dueOf): work for the
// kiduser controller, or a read of k-ID for kiduser-api when reads. What is
// due later, the sweep enqueues.
func (r *KidUserReconciler) startFilter(reads bool) predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool {
			return !e.IsInInitialList || r.dueNow(e.Object, reads)
		},
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetResourceVersion() != e.ObjectNew.GetResourceVersion() || r.dueNow(e.ObjectNew, reads)
		},
	}
}

// changesOnly lets through the changes of a user, not the informer's first
// list nor its resyncs.
func changesOnly() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return !e.IsInInitialList },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetResourceVersion() != e.ObjectNew.GetResourceVersion()
		},
	}
}

// dueNow says whether something is due for the cached user now.
func (r *KidUserReconciler) dueNow(o client.Object, reads bool) bool {
	u := cachemem.UserOf(o)
	if u == nil {
		return true
	}
	var product *kidv1.KidProduct
	p := &kidv1.KidProduct{}
	// The cache's own copy, read only (dueOf changes nothing).
	switch err := r.Get(context.Background(), userProduct(u), p, client.UnsafeDisableDeepCopy); {
	case err == nil:
		product = p
	case client.IgnoreNotFound(err) != nil:
		// Not known: the reconcile finds out.
		return true
	}
	now := r.Clock.Now()
	d := r.dueOf(u, product, now)
	if reads {
		return !d.read.IsZero() && !d.read.After(now)
	}
	return d.check || (!d.work.IsZero() && !d.work.After(now))
}
