package controllers

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/cachemem"
)

// Reasons of kid_retention_deleted_total for KidUsers (the events' are age
// and count).
const (
	reasonUserErased   = "user-erased"
	reasonUserInactive = "user-inactive"
)

// unfoldedRecheck is when a user due for deletion is looked at again while
// an event about it still waits to be folded. Folding into an erased user
// may write nothing to it, so nothing else would wake it.
const unfoldedRecheck = time.Minute

// userExpiry applies the product's retention.users to one user: it returns
// the reason to delete it now, or else how long until it may be due (zero:
// no rule will ever make it due as it stands; a change to it wakes it).
//
//   - An erased user (status.erasedAt) is due afterErasure after its
//     erasure, and by that rule only: the erasure stays visible for audit
//     however inactive the user is. afterErasure is never shorter than the
//     deduplication horizon: until then k-ID may still deliver an event it
//     signed before the erasure (the receiver refuses any later one, its
//     signature being out of the timestamp tolerance), and the erased user
//     is what keeps that event's personal data out.
//   - Any other user is due afterInactivity (when set) after it was last
//     active: its creation, its newest event (k-ID's signing time) or the
//     last change read from k-ID's API (session.syncedAt), whichever is
//     latest. An unchanged read (an etag match) is not activity: it says
//     only that k-ID still holds the session, which a returning player's
//     next event shows as well.
func (r retention) userExpiry(u *kidv1.KidUser, now time.Time) (reason string, wait time.Duration) {
	var due time.Time
	switch {
	case u.Status.ErasedAt != nil:
		reason, due = reasonUserErased, u.Status.ErasedAt.Add(r.userAfterErasure)
	case r.userAfterInactivity > 0:
		reason, due = reasonUserInactive, lastActive(u).Add(r.userAfterInactivity)
	default:
		return "", 0
	}
	if wait := due.Sub(now); wait > 0 {
		return "", wait
	}
	return reason, 0
}

// lastActive is the latest of a user's creation, its newest event and the
// last change read from k-ID's API.
func lastActive(u *kidv1.KidUser) time.Time {
	t := u.CreationTimestamp.Time
	for _, at := range []*metav1.Time{u.Status.LastEventTime, u.Status.Session.SyncedAt} {
		if at != nil && at.After(t) {
			t = at.Time
		}
	}
	return t
}

// expireUser deletes a user that the product's retention.users says is due
// (userExpiry), and otherwise returns when to look again, so that no user is
// polled: each comes back once, when it may be due. It reports whether the
// user is gone.
//
// A user is not deleted while an event about it waits to be folded: folded
// after the deletion, a stored event signed before an erasure would make a
// new user and could keep its personal data again. The delete is made on
// the UID and resourceVersion read, so a fold that raced this pass keeps the
// user, and the pass its write wakes decides again.
func (r *KidUserReconciler) expireUser(ctx context.Context, user *kidv1.KidUser) (gone bool, next time.Duration, err error) {
	product := &kidv1.KidProduct{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: user.Namespace, Name: user.Spec.ProductRef.Name}, product); err != nil {
		// No product: the garbage collector deletes its users.
		return false, 0, client.IgnoreNotFound(err)
	}
	reason, wait := retentionOf(product).userExpiry(user, r.Clock.Now())
	if reason == "" {
		return false, wait, nil
	}
	unfolded, err := r.hasUnfoldedEvents(ctx, user)
	if err != nil || unfolded {
		return false, unfoldedRecheck, err
	}
	rv := user.ResourceVersion
	err = r.Delete(ctx, user, client.Preconditions{UID: &user.UID, ResourceVersion: &rv})
	switch {
	case apierrors.IsNotFound(err):
		return true, 0, nil
	case apierrors.IsConflict(err):
		// Changed since it was read: the change wakes it again.
		return false, 0, nil
	case err != nil:
		return false, 0, fmt.Errorf("deleting user by retention: %w", err)
	}
	retentionDeletedTotal.WithLabelValues(reason).Inc()
	ctrl.LoggerFrom(ctx).V(1).Info("deleted KidUser by retention", "reason", reason)
	return true, 0, nil
}

// hasUnfoldedEvents says whether a stored event naming one of the user's
// ids is not folded yet.
func (r *KidUserReconciler) hasUnfoldedEvents(ctx context.Context, user *kidv1.KidUser) (bool, error) {
	for _, key := range user.IDKeys() {
		events, err := cachemem.EventsNaming(ctx, r, user.Namespace, key)
		if err != nil {
			return false, err
		}
		for i := range events {
			e := &events[i]
			if e.DeletionTimestamp == nil && (e.Status.Phase == "" || e.Status.Phase == kidv1.EventPending) {
				return true, nil
			}
		}
	}
	return false, nil
}

// soonest is the shortest of the positive waits, zero if none is.
func soonest(waits ...time.Duration) time.Duration {
	var out time.Duration
	for _, w := range waits {
		if w > 0 && (out == 0 || w < out) {
			out = w
		}
	}
	return out
}
