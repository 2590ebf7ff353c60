package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	corev1 "k8s.io/api/core/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/outbound"
	"github.com/kid-operator/kid-operator/internal/secrets"
)

// This file is the KidEvent controller's part in running KidActions: which
// actions an event starts (matchActions, once, when the event is folded) and
// each run's attempts (runActions), recorded in the event's status.actions.

// defaultResourceAttempts bounds the attempts of a resource action, whose
// spec has no maxAttempts: only transient API errors are retried.
const defaultResourceAttempts = 5

// attemptsBudget is the wall-clock time one pass over an event spends
// starting attempts. Each attempt is bounded (actions.MaxHTTPTimeout), but an
// event may have 64 runs, and the KidEvent workers are shared by every
// namespace.
const attemptsBudget = actions.MaxHTTPTimeout

// defaultHTTPClient sends http actions when the reconciler was given no
// client: the outbound client with no allowances, never http.DefaultClient,
// which would reach any address.
var defaultHTTPClient = outbound.New(outbound.Options{Timeout: actions.MaxHTTPTimeout})

// webhookID is the stable id of one (event, action) pair: the webhook-id
// header of every attempt, so the target can deduplicate.
func webhookID(e *kidv1.KidEvent, action string) string {
	sum := sha256.Sum256([]byte(e.Namespace + "/" + e.Name + "/" + action))
	return "kid_" + hex.EncodeToString(sum[:16])
}

// matched is what matchActions found: the runs to start and, when some
// actions were not evaluated, the FiltersEvaluated condition that says
// which; or that the namespace's filter lanes are all busy.
type matched struct {
	runs      []kidv1.ActionRunStatus
	condition *metav1.Condition
	laneBusy  bool
}

// maxRuns bounds an event's runs (its status size).
const maxRuns = 64

// matchActions returns a Pending run for each KidAction the event matches,
// given the user status after the fold. A suspended product starts none. An
// action that is not usable (its filter does not compile or fails) gets a
// Skipped run that says why, rather than silence. The filters run within
// r.MatchLimits, on one of the namespace's filter lanes; the actions they
// leave unevaluated are named in the event's FiltersEvaluated condition.
func (r *KidEventReconciler) matchActions(ctx context.Context, e *kidv1.KidEvent, product *kidv1.KidProduct, user *kidv1.KidUserStatus) (matched, error) {
	if product.Spec.Suspend {
		return matched{}, nil
	}
	var list kidv1.KidActionList
	if err := r.List(ctx, &list, client.InNamespace(e.Namespace)); err != nil {
		return matched{}, fmt.Errorf("listing actions: %w", err)
	}
	if len(list.Items) == 0 {
		return matched{}, nil
	}
	in, err := actions.NewInput(e, user)
	if err != nil {
		return matched{}, err
	}
	lanes := r.filterLanes()
	if !lanes.enter(e.Namespace) {
		return matched{laneBusy: true}, nil
	}
	m := func() actions.Matching {
		defer lanes.leave(e.Namespace)
		return r.Filters.MatchAll(ctx, list.Items, e, in, r.MatchLimits)
	}()
	var runs []kidv1.ActionRunStatus
	for _, res := range m.Results {
		switch {
		case res.Err != nil:
			runs = append(runs, kidv1.ActionRunStatus{Name: res.Action.Name, Phase: kidv1.RunSkipped, LastError: truncate(res.Err.Error())})
		case res.Matched:
			runs = append(runs, kidv1.ActionRunStatus{Name: res.Action.Name, Phase: kidv1.RunPending})
		}
	}
	// Results are in name order already.
	if len(runs) > maxRuns {
		runs = runs[:maxRuns]
	}
	return matched{runs: runs, condition: r.unevaluated(ctx, e, m)}, nil
}

// unevaluated counts and returns the FiltersEvaluated condition of an event
// whose matching left actions unevaluated, or nil.
func (r *KidEventReconciler) unevaluated(ctx context.Context, e *kidv1.KidEvent, m actions.Matching) *metav1.Condition {
	if len(m.OverLimit) == 0 && len(m.OutOfBudget) == 0 {
		return nil
	}
	lim := r.MatchLimits
	if lim.Budget <= 0 {
		lim.Budget = actions.DefaultFilterBudget
	}
	reason := kidv1.ActionLimitExceededReason
	var msg []string
	if len(m.OutOfBudget) > 0 {
		reason = kidv1.FilterBudgetExceededReason
		filterBudgetExceededTotal.WithLabelValues(e.Namespace).Inc()
		msg = append(msg, fmt.Sprintf("the filters spent the event's budget (%s) after %d actions; not evaluated: %s",
			lim.Budget, len(m.Results), someNames(m.OutOfBudget)))
	}
	if len(m.OverLimit) > 0 {
		actionLimitExceededTotal.WithLabelValues(e.Namespace).Inc()
		msg = append(msg, fmt.Sprintf("the namespace holds more KidActions than an event evaluates; past the limit in name order: %s",
			someNames(m.OverLimit)))
	}
	ctrl.LoggerFrom(ctx).Info("event did not evaluate every action", "reason", reason, "evaluated", len(m.Results),
		"outOfBudget", len(m.OutOfBudget), "overLimit", len(m.OverLimit), "spent", m.Spent.String())
	return &metav1.Condition{
		Type: kidv1.FiltersEvaluatedCondition, Status: metav1.ConditionFalse, Reason: reason,
		Message: truncate(strings.Join(msg, "; ")), ObservedGeneration: e.Generation,
	}
}

// someNames lists the first few names, and how many more there are.
func someNames(names []string) string {
	const shown = 5
	if len(names) <= shown {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:shown], ", "), len(names)-shown)
}

// runActions makes the attempts that are due, records them, and settles the
// event's phase once every run is done. It returns when to come back. fresh
// says that e is the API server's copy (the answer to this pass's own
// write), which needs no second read.
func (r *KidEventReconciler) runActions(ctx context.Context, e *kidv1.KidEvent, product *kidv1.KidProduct, fresh bool) (time.Duration, error) {
	if product.Spec.Suspend {
		// Runs wait while the product is suspended.
		return time.Minute, nil
	}
	now := r.Clock.Now()
	if !fresh && due(e, now) {
		// The cache may lag behind our own last write; an attempt must not
		// repeat one that already succeeded.
		read, err := r.reread(ctx, e)
		if err != nil || read == nil {
			return 0, err
		}
		e = read
	}
	before := e.DeepCopy()
	var in *actions.Input
	next := time.Duration(0)
	started := time.Now()
	for i := range e.Status.Actions {
		run := &e.Status.Actions[i]
		if run.Phase != kidv1.RunPending {
			continue
		}
		if run.NextAttemptAt != nil && run.NextAttemptAt.After(now) {
			next = minPositive(next, run.NextAttemptAt.Sub(now))
			continue
		}
		if time.Since(started) >= attemptsBudget {
			// The rest are due but wait for the next pass, behind the
			// other events in the queue: an event whose actions are slow
			// holds a worker for one budget and one attempt at most.
			next = minPositive(next, time.Second)
			continue
		}
		if in == nil {
			var err error
			if in, err = r.actionInput(ctx, e); err != nil {
				return 0, err
			}
		}
		if d := r.attempt(ctx, e, run, in, now); d > 0 {
			next = minPositive(next, d)
		}
	}
	settle(e)
	setProcessed(e)
	if !apiequality.Semantic.DeepEqual(before.Status, e.Status) {
		if err := r.Status().Patch(ctx, e, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
			return 0, fmt.Errorf("recording action runs: %w", err)
		}
	}
	if e.Status.Finished() && !before.Status.Finished() {
		// The erasure pass skips an event whose runs are pending; now that
		// they settled, nothing else would wake it.
		if err := r.eraseIfErased(ctx, e); err != nil {
			return 0, err
		}
	}
	return next, nil
}

// eraseIfErased deletes a finished event that kept personal data about a
// player k-ID has since erased (design.md §2, "Erasure"). The player is the
// event's user or, when that was a stand-in since merged away, the user it
// was merged into (userOf): the erasure reached that one.
func (r *KidEventReconciler) eraseIfErased(ctx context.Context, e *kidv1.KidEvent) error {
	if !e.Spec.PersonalData || e.Status.UserRef == nil {
		return nil
	}
	u, err := r.userOf(ctx, e)
	if err != nil || u == nil || u.Status.ErasedAt == nil {
		return err
	}
	if err := r.Delete(ctx, e, client.Preconditions{UID: &e.UID}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("erasing event: %w", err)
	}
	erasedEventsTotal.Inc()
	return nil
}

// due reports whether any pending run's next attempt is due.
func due(e *kidv1.KidEvent, now time.Time) bool {
	return slices.ContainsFunc(e.Status.Actions, func(run kidv1.ActionRunStatus) bool {
		return run.Phase == kidv1.RunPending && (run.NextAttemptAt == nil || !run.NextAttemptAt.After(now))
	})
}

// actionInput is the input of an event's runs: the event and its user's
// current status and name.
func (r *KidEventReconciler) actionInput(ctx context.Context, e *kidv1.KidEvent) (*actions.Input, error) {
	u, err := r.userOf(ctx, e)
	if err != nil {
		return nil, err
	}
	if u == nil {
		return actions.NewInput(e, nil)
	}
	in, err := actions.NewInput(e, &u.Status)
	if err != nil {
		return nil, err
	}
	in.UserName = u.Name
	return in, nil
}

// userOf returns the KidUser an event's runs describe: the one it was folded
// into or, when that was a stand-in since merged away, the user that holds
// the event's ids now (the one the stand-in was merged into). A retried run
// never sends an empty user because a merge happened between its attempts.
func (r *KidEventReconciler) userOf(ctx context.Context, e *kidv1.KidEvent) (*kidv1.KidUser, error) {
	if e.Status.UserRef == nil {
		return nil, nil
	}
	u := &kidv1.KidUser{}
	err := r.Get(ctx, types.NamespacedName{Namespace: e.Namespace, Name: e.Status.UserRef.Name}, u)
	switch {
	case err == nil:
		return u, nil
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("reading user: %w", err)
	}
	for _, key := range e.IDKeys() {
		holders, err := r.holders(ctx, e.Namespace, key, nil)
		if err != nil {
			return nil, err
		}
		if len(holders) > 0 {
			if err := r.Get(ctx, types.NamespacedName{Namespace: e.Namespace, Name: holders[0].name}, u); err == nil {
				return u, nil
			}
		}
	}
	return nil, nil
}

// attempt makes one attempt of a run and records it. It returns the wait
// before the next attempt, or 0 when the run is done.
func (r *KidEventReconciler) attempt(ctx context.Context, e *kidv1.KidEvent, run *kidv1.ActionRunStatus, in *actions.Input, now time.Time) time.Duration {
	log := ctrl.LoggerFrom(ctx).WithValues("action", run.Name)
	a := &kidv1.KidAction{}
	key := types.NamespacedName{Namespace: e.Namespace, Name: run.Name}
	if err := r.Get(ctx, key, a); err != nil {
		if apierrors.IsNotFound(err) {
			// The KidAction controller forgets it too; whichever sees
			// the deletion first.
			r.Filters.Forget(key)
		}
		finish(run, kidv1.RunSkipped, now, "action unavailable: "+err.Error())
		return 0
	}
	if _, err := r.Filters.Compile(a); err != nil {
		finish(run, kidv1.RunSkipped, now, "action not Ready: "+kidv1.InvalidFilterReason+": "+err.Error())
		return 0
	}
	if a.Spec.DryRun {
		run.Message = truncate(describe(ctx, a, e, in))
		finish(run, kidv1.RunSucceeded, now, "")
		actionAttemptsTotal.WithLabelValues(e.Namespace+"/"+a.Name, "dry-run").Inc()
		return 0
	}

	run.Attempts++
	var out actions.Outcome
	switch {
	case a.Spec.HTTP != nil, a.Spec.CloudEvent != nil:
		out = r.post(ctx, e, a, in, now)
	case a.Spec.Resource != nil:
		out = actions.Create(ctx, r.Impersonator, a, e, in)
	}
	label := e.Namespace + "/" + a.Name
	if out.Err == nil {
		run.Message = truncate(out.Did)
		finish(run, kidv1.RunSucceeded, now, "")
		actionAttemptsTotal.WithLabelValues(label, "success").Inc()
		actionDelay.WithLabelValues(label).Observe(now.Sub(e.Spec.ReceivedAt.Time).Seconds())
		return 0
	}
	log.Info("action attempt failed", "attempt", run.Attempts, "error", out.Err.Error())
	maxAttempts := int32(defaultResourceAttempts)
	if h := actions.HTTPOf(a); h != nil {
		maxAttempts = max(h.MaxAttempts, 1)
	}
	if out.Permanent || run.Attempts >= maxAttempts {
		finish(run, kidv1.RunFailed, now, out.Err.Error())
		actionAttemptsTotal.WithLabelValues(label, "failure").Inc()
		r.recordActionFailure(e, a, out.Err)
		return 0
	}
	actionAttemptsTotal.WithLabelValues(label, "retry").Inc()
	wait := actions.NextDelay(run.Attempts, out.RetryAfter)
	at := metav1.NewTime(now.Add(wait))
	run.LastError = truncate(out.Err.Error())
	run.NextAttemptAt = &at
	return wait
}

// post makes one attempt of an http or cloudEvent action: both are POSTs
// with the run's webhook-id, signed alike.
func (r *KidEventReconciler) post(ctx context.Context, e *kidv1.KidEvent, a *kidv1.KidAction, in *actions.Input, now time.Time) actions.Outcome {
	id := webhookID(e, a.Name)
	var secret []byte
	if ref := actions.HTTPOf(a).SigningSecretRef; ref != nil {
		s := &corev1.Secret{}
		if err := r.Get(ctx, types.NamespacedName{Namespace: e.Namespace, Name: ref.Name}, s); err != nil {
			return actions.Outcome{Err: fmt.Errorf("reading signing secret: %w", err)}
		}
		// Without its owner's consent (the label), a Secret of the
		// namespace is not the operator's to sign with: the action's
		// author chooses the body, so signing would hand them a
		// signature by any key of the namespace. The run is retried,
		// so labelling the Secret in time loses nothing.
		if err := secrets.Check(s); err != nil {
			return actions.Outcome{Err: fmt.Errorf("signing %w", err)}
		}
		if secret = s.Data[ref.Key]; len(secret) == 0 {
			return actions.Outcome{Err: fmt.Errorf("signing secret %s has no key %q", ref.Name, ref.Key)}
		}
	}
	c := r.HTTPClient
	if c == nil {
		c = defaultHTTPClient
	}
	// Rendering and the request share one deadline, actions.Timeout. The
	// call is the namespace's: the guard lets it through what the
	// administrator allowed for this namespace, and for all.
	ctx = outbound.WithNamespace(ctx, e.Namespace)
	var out actions.Outcome
	if a.Spec.CloudEvent != nil {
		// The sink's ref is read as the action's ServiceAccount, and the
		// URL it names goes through the same guard.
		out = actions.DeliverCloudEvent(ctx, c, r.Impersonator, a, e, id, in, secret, now)
	} else {
		out = actions.Deliver(ctx, c, a.Spec.HTTP, id, in, secret, now)
	}
	out.Did = describe(ctx, a, e, in)
	return out
}

func (r *KidEventReconciler) recordActionFailure(e *kidv1.KidEvent, a *kidv1.KidAction, err error) {
	if r.Recorder != nil {
		r.Recorder.Eventf(e, a, "Warning", "ActionFailed", "RunAction", "action %s failed: %s", a.Name, truncate(err.Error()))
	}
}

// describe says what a run does (or, dry, would do).
func describe(ctx context.Context, a *kidv1.KidAction, e *kidv1.KidEvent, in *actions.Input) string {
	prefix := ""
	if a.Spec.DryRun {
		prefix = "dry run: would "
	}
	switch {
	case a.Spec.HTTP != nil:
		return fmt.Sprintf("%sPOST to %s with webhook-id %s", prefix, a.Spec.HTTP.URL, webhookID(e, a.Name))
	case a.Spec.CloudEvent != nil:
		ce := a.Spec.CloudEvent
		mode := ce.ContentMode
		if mode == "" {
			mode = kidv1.ContentModeBinary
		}
		return fmt.Sprintf("%ssend CloudEvent %s (%s) with id %s to %s", prefix,
			actions.CloudEventType(e.Spec.EventType), mode, webhookID(e, a.Name), sinkName(ce.Sink))
	case a.Spec.Resource != nil:
		obj, err := actions.Render(ctx, a, e, in)
		if err != nil {
			return prefix + "create nothing: " + err.Error()
		}
		return prefix + "create " + actions.Describe(obj)
	}
	return prefix + "do nothing"
}

// sinkName says where a cloudEvent action sends, as its author wrote it:
// the URL a ref resolves to may be an internal address, which a run's
// record does not name.
func sinkName(d kidv1.Destination) string {
	if d.Ref == nil {
		return d.URI
	}
	if d.URI != "" {
		return fmt.Sprintf("%s %s (uri %s)", d.Ref.Kind, d.Ref.Name, d.URI)
	}
	return d.Ref.Kind + " " + d.Ref.Name
}

func finish(run *kidv1.ActionRunStatus, phase string, now time.Time, lastError string) {
	at := metav1.NewTime(now)
	run.Phase = phase
	run.CompletedAt = &at
	run.NextAttemptAt = nil
	if lastError != "" {
		run.LastError = truncate(lastError)
	}
}

// settle sets an applied event's final phase once every run is done:
// Succeeded, or Failed if any run failed.
func settle(e *kidv1.KidEvent) {
	if e.Status.Phase != kidv1.EventApplied || len(e.Status.Actions) == 0 {
		return
	}
	phase := kidv1.EventSucceeded
	for _, run := range e.Status.Actions {
		switch run.Phase {
		case kidv1.RunPending:
			return
		case kidv1.RunFailed:
			phase = kidv1.EventFailed
		}
	}
	e.Status.Phase = phase
}

// redrive puts an event's failed runs back to their first attempt.
func redrive(e *kidv1.KidEvent) {
	for i := range e.Status.Actions {
		run := &e.Status.Actions[i]
		if run.Phase == kidv1.RunFailed {
			*run = kidv1.ActionRunStatus{Name: run.Name, Phase: kidv1.RunPending}
		}
	}
	if e.Status.Phase == kidv1.EventFailed {
		e.Status.Phase = kidv1.EventApplied
	}
}

func truncate(s string) string {
	if len(s) > 1000 {
		return s[:1000] + "…"
	}
	return s
}
