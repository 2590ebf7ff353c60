package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/secrets"
)

// countsInterval is how often a KidAction's run counts are refreshed.
const countsInterval = 30 * time.Second

// KidActionReconciler validates KidActions (their CEL filter compiles within
// its cost budget, their templates are allowed, a resource action has a
// ServiceAccount that may create its namespaced kind) and keeps their run
// counts. The runs themselves belong to the KidEvent controller, which
// records them on each event.
type KidActionReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Filters  *actions.Filters
	// Impersonator acts as a resource action's ServiceAccount, built on the
	// manager's rest.Config, to ask whether it may create the template's
	// kind; it also knows the default ServiceAccount. Nil: resource actions
	// are never Ready.
	Impersonator *actions.Impersonator
	// MaxActions is how many of a namespace's actions, in name order, an
	// event evaluates (the KidEvent controller's MatchLimits.MaxActions);
	// 0 means actions.DefaultMaxActions. The ones past it are not Ready.
	MaxActions int
	// Secrets reads an http action's signing Secret, to show one without
	// the label kid.dev/secret=true as SecretNotLabelled; nil reads it
	// through Client, which must not cache Secrets.
	Secrets *secrets.Cache
}

// kid-operator creates a resource action's object as the action's
// ServiceAccount, so it needs to impersonate ServiceAccounts, and no create
// rights on those kinds itself. The access review is asked as the
// ServiceAccount (every authenticated user may ask about itself), so
// kid-operator needs no right on access reviews either.
// +kubebuilder:rbac:groups=kid.dev,resources=kidactions/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=impersonate

// SetupWithManager registers the controller.
func (r *KidActionReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&kidv1.KidAction{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Named("kidaction").
		Complete(r)
}

// Reconcile sets Ready (False with InvalidFilter, InvalidTemplate,
// SecretNotLabelled, SinkNotResolved, ServiceAccountRequired,
// MissingPermission or ActionLimitExceeded, and Stalled, for what the user
// must fix), and the counts of runs recorded on the namespace's events. It
// comes back every 30 s, so a permission granted, a label added or a sink
// that became ready later makes the action Ready. A deleted action's
// compiled filter is forgotten.
func (r *KidActionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	a := &kidv1.KidAction{}
	if err := r.Get(ctx, req.NamespacedName, a); err != nil {
		if apierrors.IsNotFound(err) {
			r.Filters.Forget(req.NamespacedName)
		}
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
	reason, msg, err := r.validate(ctx, a)
	if err == nil && reason == "" {
		reason, msg, err = r.pastLimit(ctx, a)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if reason != "" {
		old := meta.FindStatusCondition(a.Status.Conditions, kidv1.ReadyCondition)
		cond(kidv1.ReadyCondition, metav1.ConditionFalse, reason, msg)
		cond(kidv1.StalledCondition, metav1.ConditionTrue, reason, msg)
		if r.Recorder != nil && (old == nil || old.Reason != reason) {
			r.Recorder.Eventf(a, nil, "Warning", reason, "Validate", "%s", truncate(msg))
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

// validate returns the reason and message that keep the action from being
// Ready, or "" when it is: its filter compiles within its cost budget, its
// templates are allowed, a cloudEvent action's sink.ref resolves (as its
// ServiceAccount), and, for a resource action, the template's kind is served
// and namespaced, the action has a ServiceAccount, and that ServiceAccount
// may create the kind in the action's namespace (asked of the API server, so
// a missing grant shows before an event needs it).
func (r *KidActionReconciler) validate(ctx context.Context, a *kidv1.KidAction) (string, string, error) {
	if _, err := r.Filters.Compile(a); err != nil {
		return kidv1.InvalidFilterReason, "filter is invalid: " + err.Error(), nil
	}
	if err := actions.CheckTemplates(a); err != nil {
		return kidv1.InvalidTemplateReason, "template is invalid: " + err.Error(), nil
	}
	if h := actions.HTTPOf(a); h != nil && h.SigningSecretRef != nil {
		// A missing Secret is left to the runs (it may be created with
		// the action); one without its owner's consent is shown here.
		_, err := readSecret(ctx, r.Secrets, r.Client, types.NamespacedName{Namespace: a.Namespace, Name: h.SigningSecretRef.Name})
		switch {
		case secrets.IsNotLabelled(err):
			return kidv1.SecretNotLabelledReason, "signing " + err.Error() + "; its runs fail until it is", nil
		case err != nil && !apierrors.IsNotFound(err):
			return "", "", fmt.Errorf("reading the signing secret: %w", err)
		}
	}
	if ce := a.Spec.CloudEvent; ce != nil && ce.Sink.Ref != nil {
		// Resolved as the runs resolve it, as the action's ServiceAccount.
		// Not ready yet is shown here; the runs retry meanwhile.
		if _, err := actions.ResolveSink(ctx, r.Impersonator, a); err != nil {
			return kidv1.SinkNotResolvedReason, err.Error() + "; its runs are retried until it resolves", nil
		}
	}
	if a.Spec.Resource == nil {
		return "", "", nil
	}
	var obj unstructured.Unstructured
	if err := obj.UnmarshalJSON(a.Spec.Resource.Template.Raw); err != nil {
		return kidv1.InvalidTemplateReason, "template is not a Kubernetes object: " + err.Error(), nil
	}
	gvk := obj.GroupVersionKind()
	mapping, err := r.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		if meta.IsNoMatchError(err) {
			return kidv1.InvalidTemplateReason, fmt.Sprintf("template kind %s is not served by this cluster", gvk), nil
		}
		return "", "", fmt.Errorf("mapping the template's kind: %w", err)
	}
	if mapping.Scope.Name() != meta.RESTScopeNameNamespace {
		return kidv1.InvalidTemplateReason, actions.ClusterScopedError(gvk.GroupKind()).Error(), nil
	}
	sa := r.Impersonator.ServiceAccount(a)
	if sa == "" {
		return kidv1.ServiceAccountRequiredReason, actions.ErrServiceAccountRequired.Error(), nil
	}
	c, err := r.Impersonator.Client(a.Namespace, sa)
	if err != nil {
		return "", "", err
	}
	// A SelfSubjectAccessReview made as the ServiceAccount answers for
	// exactly the identity the create will use, groups included.
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: a.Namespace, Verb: "create", Group: mapping.Resource.Group, Resource: mapping.Resource.Resource,
		},
	}}
	if err := c.Create(ctx, review); err != nil {
		if actions.IsImpersonationForbidden(err) {
			return kidv1.MissingPermissionReason, actions.ImpersonationError(a.Namespace, sa).Error(), nil
		}
		return "", "", fmt.Errorf("reviewing the permissions of ServiceAccount %s/%s: %w", a.Namespace, sa, err)
	}
	if !review.Status.Allowed {
		return kidv1.MissingPermissionReason, fmt.Sprintf("ServiceAccount %s may not create %s in namespace %s: grant it create on %s with a Role and RoleBinding (see config/samples/actions_rbac_jobs.yaml)",
			sa, mapping.Resource.GroupResource(), a.Namespace, mapping.Resource.GroupResource()), nil
	}
	return "", "", nil
}

// pastLimit returns ActionLimitExceeded when the action is past the number
// of actions an event evaluates, in name order: it never runs. The same
// order decides which, so the condition names exactly the actions events
// leave out. It is checked again every countsInterval, so an action pushed
// past the limit by a new one (or brought back by a deletion) shows it
// within that time.
func (r *KidActionReconciler) pastLimit(ctx context.Context, a *kidv1.KidAction) (string, string, error) {
	limit := r.MaxActions
	if limit <= 0 {
		limit = actions.DefaultMaxActions
	}
	// Only the names are read: no copy of every action of the namespace
	// for each of them, every 30 s.
	var list kidv1.KidActionList
	if err := r.List(ctx, &list, client.InNamespace(a.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return "", "", fmt.Errorf("listing actions: %w", err)
	}
	if pos := actions.ActionPosition(list.Items, a.Name); pos >= limit {
		return kidv1.ActionLimitExceededReason, fmt.Sprintf("namespace %s holds %d KidActions; an event evaluates the first %d in name order, and this one is number %d: it never runs (delete or merge actions, or ask the administrator to raise --max-actions-per-namespace)",
			a.Namespace, len(list.Items), limit, pos+1), nil
	}
	return "", "", nil
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
