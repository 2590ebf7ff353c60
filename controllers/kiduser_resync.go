package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/cachemem"
)

// The resync's interval (design.md §3, "Session sync"). Unless
// spec.api.sessionResync sets it, a product's sessions are read again as
// often as its rate allows: one round of resync reads (a read per active
// session, and one per passed verification when recovery rechecks them)
// must fit in kidv1.ResyncRateShare of spec.api.requestsPerSecond, between
// an hour and a day (kidv1.APISpec.ResyncInterval). The number of reads
// per product is counted here from the informer's own notifications, so
// that no reconcile lists the product's players to know it.

// resyncLoads counts, per product, the reads one resync round costs.
type resyncLoads struct {
	mu sync.Mutex
	m  map[types.NamespacedName]resyncLoad
}

// resyncLoad is what one user, or a product's users together, costs a
// resync round: its active sessions and its passed verifications.
type resyncLoad struct {
	sessions, verified int
}

// loadOf is what a user costs a resync round. An erased user is never read
// again.
func loadOf(u *kidv1.KidUser) resyncLoad {
	var l resyncLoad
	if u == nil || u.Status.ErasedAt != nil {
		return l
	}
	if u.Spec.Identity.Kind == kidv1.IdentitySession && u.Status.Session.State != kidv1.SessionDeleted {
		l.sessions = 1
	}
	for _, rec := range u.Status.Verification.Records {
		if rec.State == kidv1.VerificationVerified {
			l.verified++
		}
	}
	return l
}

// change counts a user's change from was to is; either may be nil (a user
// created or deleted).
func (r *resyncLoads) change(was, is *kidv1.KidUser) {
	from, to := loadOf(was), loadOf(is)
	if from == to {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[types.NamespacedName]resyncLoad{}
	}
	if was != nil {
		key := userProduct(was)
		l := r.m[key]
		l.sessions -= from.sessions
		l.verified -= from.verified
		r.m[key] = l
	}
	if is != nil {
		key := userProduct(is)
		l := r.m[key]
		l.sessions += to.sessions
		l.verified += to.verified
		r.m[key] = l
	}
}

// reads is the number of reads one resync round of the product costs.
func (r *resyncLoads) reads(product *kidv1.KidProduct) int {
	r.mu.Lock()
	l := r.m[productKey(product)]
	r.mu.Unlock()
	n := l.sessions
	if product.Spec.API != nil && product.Spec.API.Recovery.RechecksVerifications() {
		n += l.verified
	}
	return max(n, 0)
}

func userProduct(u *kidv1.KidUser) types.NamespacedName {
	return types.NamespacedName{Namespace: u.Namespace, Name: u.Spec.ProductRef.Name}
}

// countLoads is the KidUser watch that keeps the counts: it enqueues
// nothing.
func (r *KidUserReconciler) countLoads() handler.EventHandler {
	user := cachemem.UserOf
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.loads.change(nil, user(e.Object))
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.loads.change(user(e.ObjectOld), user(e.ObjectNew))
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.loads.change(user(e.Object), nil)
		},
	}
}

// resyncInterval is how long after its last read the user's session (or a
// passed verification) is read again: the product's interval, spread by up
// to 10% per user (a stable hash of its UID) so that users synced together
// do not stay in step.
func (r *KidUserReconciler) resyncInterval(product *kidv1.KidProduct, user *kidv1.KidUser) time.Duration {
	interval := product.Spec.API.ResyncInterval(product.Spec.Environment, r.loads.reads(product))
	return interval + time.Duration(float64(interval)*0.1*spread(user.UID))
}
