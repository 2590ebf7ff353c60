package controllers

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// quietRaces retries, without reporting an error, a reconcile that lost a
// race the design expects: a write refused for an older resourceVersion
// (409 Conflict: the KidEvent and KidUser controllers write one user's
// status with an optimistic lock, and each keeps what it lost and writes
// again), or a create of a user another worker made a moment before
// (AlreadyExists: the cache did not show it yet). controller-runtime logs
// each returned error as "Reconciler error" with a stack trace: make
// bench's 500 players' session sync logged 795 of them, none a fault. The
// retry is the same as after an error (the queue's backoff, the priority
// the reconcile asked for); controller_runtime_reconcile_total{result="requeue"}
// counts them, and the log says each at verbosity 1.
func quietRaces(r reconcile.Reconciler) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		res, err := r.Reconcile(ctx, req)
		if err != nil && (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) {
			ctrl.LoggerFrom(ctx).V(1).Info("Lost a write race; retrying", "race", err.Error())
			return reconcile.Result{Requeue: true, Priority: res.Priority}, nil //nolint:staticcheck // a rate-limited retry, as after an error
		}
		return res, err
	})
}
