package controllers

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// Every write of a KidUser wakes both KidUser controllers, and each read
// the user live before it looked at it: up to four GETs for an event about
// a new player (its create and its fold), the most of any kind of request
// an event cost (docs/benchmarks.md, "Journeys"). Most of those passes
// find nothing to do: a session's user, not erased, with no expiry due,
// and, for kiduser-api, a product without spec.api. The cache's skeleton
// tells as much (dueOf reads only what a skeleton keeps, TestDueOf), so a
// pass reads the user live only when there is work. The skeleton is only
// looked at: nothing is written from it, and the memories below keep its
// name and uid, nothing else.

// idleWork reports whether Reconcile would do nothing for the user now,
// seen from its cached skeleton s, and when the user is next due (0: not
// until it changes). A stand-in (to merge) and an erased user (events to
// delete) are never idle; a session's user is idle while its product's
// retention.users does not expire it. A product that cannot be read
// (other than gone) is left to Reconcile, which reports it.
func (r *KidUserReconciler) idleWork(ctx context.Context, s *kidv1.KidUser) (bool, time.Duration) {
	product := &kidv1.KidProduct{}
	switch err := r.Get(ctx, userProduct(s), product, client.UnsafeDisableDeepCopy); {
	case apierrors.IsNotFound(err):
		product = nil
	case err != nil:
		return false, 0
	}
	now := r.Clock.Now()
	d := r.dueOf(s, product, now)
	if d.check || (!d.work.IsZero() && !d.work.After(now)) {
		return false, 0
	}
	if d.work.IsZero() {
		return true, 0
	}
	return true, d.work.Sub(now)
}

// idleReads reports whether reconcileAPI would ask k-ID nothing for the
// user, seen from its cached skeleton s: no k-ID clients, the user erased,
// its product gone or without spec.api. It then records what reconcileAPI
// and reconcileReads record in that case (nothing added to the product's
// status.api; nothing due for the sweep), as they would.
func (r *KidUserReconciler) idleReads(ctx context.Context, s *kidv1.KidUser) bool {
	now := r.Clock.Now()
	if r.deleted.has(s.UID, now) {
		return true
	}
	switch {
	case r.APIClients == nil:
	case s.Status.ErasedAt != nil:
		r.polls.setPart(s, userPart{})
	default:
		product := &kidv1.KidProduct{}
		err := r.Get(ctx, userProduct(s), product, client.UnsafeDisableDeepCopy)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil || product.Spec.API != nil:
			return false
		default:
			r.polls.setPart(s, userPart{})
		}
	}
	r.polls.woke(s, now, 0)
	return true
}
