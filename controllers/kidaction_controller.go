package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/actions"
)

// countsInterval is how often a KidAction's run counts are refreshed.
const countsInterval = 30 * time.Second

// KidActionReconciler validates KidActions (their CEL filter compiles) and
// keeps their run counts. The runs themselves belong to the KidEvent
// controller, which records them on each event.
type KidActionReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Filters  *actions.Filters
}

// +kubebuilder:rbac:groups=kid.dev,resources=kidactions/status,verbs=get;update;patch

// SetupWithManager registers the controller.
func (r *KidActionReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&kidv1.KidAction{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Named("kidaction").
		Complete(r)
}

// Reconcile sets Ready (False with InvalidFilter when the filter does not
// compile), and the counts of runs recorded on the namespace's events.
func (r *KidActionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	a := &kidv1.KidAction{}
	if err := r.Get(ctx, req.NamespacedName, a); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := a.DeepCopy()
	defer func() {
		if apiequality.Semantic.DeepEqual(before.Status, a.Status) {
			return
		}
		if err := r.Status().Patch(ctx, a, client.MergeFrom(before)); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("updating action status: %w", err))
		}
	}()

	cond := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&a.Status.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: a.Generation})
	}
	if _, err := r.Filters.Compile(a); err != nil {
		msg := "filter does not compile: " + err.Error()
		old := meta.FindStatusCondition(a.Status.Conditions, kidv1.ReadyCondition)
		cond(kidv1.ReadyCondition, metav1.ConditionFalse, kidv1.InvalidFilterReason, msg)
		cond(kidv1.StalledCondition, metav1.ConditionTrue, kidv1.InvalidFilterReason, msg)
		if r.Recorder != nil && (old == nil || old.Reason != kidv1.InvalidFilterReason) {
			r.Recorder.Eventf(a, nil, "Warning", kidv1.InvalidFilterReason, "Validate", "%s", truncate(msg))
		}
	} else {
		cond(kidv1.ReadyCondition, metav1.ConditionTrue, kidv1.SucceededReason, "action is ready")
		meta.RemoveStatusCondition(&a.Status.Conditions, kidv1.StalledCondition)
	}
	a.Status.ObservedGeneration = a.Generation

	if err := r.count(ctx, a); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: countsInterval}, nil
}

// count refreshes the succeeded and failed counts and the last run time from
// the runs recorded on the events the cache holds (retention bounds them).
func (r *KidActionReconciler) count(ctx context.Context, a *kidv1.KidAction) error {
	var list kidv1.KidEventList
	if err := r.List(ctx, &list, client.InNamespace(a.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing events: %w", err)
	}
	var succeeded, failed int64
	var last *metav1.Time
	for i := range list.Items {
		for _, run := range list.Items[i].Status.Actions {
			if run.Name != a.Name || run.CompletedAt == nil {
				continue
			}
			switch run.Phase {
			case kidv1.RunSucceeded:
				succeeded++
			case kidv1.RunFailed:
				failed++
			default:
				continue
			}
			if last == nil || last.Before(run.CompletedAt) {
				last = run.CompletedAt.DeepCopy()
			}
		}
	}
	a.Status.Succeeded, a.Status.Failed, a.Status.LastRunTime = succeeded, failed, last
	return nil
}
