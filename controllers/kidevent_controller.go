package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/cachemem"
	"github.com/kid-operator/kid-operator/internal/fold"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// KidEventReconciler folds each stored KidEvent into the KidUser(s) it is
// about, then marks the event Applied (or Ignored). An event is folded once:
// only a Pending event is processed, and the fold itself is idempotent. A
// retry after a failure between the two writes (the user's, then the
// event's) changes nothing, not even the user's event count: the first fold
// left the event's name in the user's inFlightEvents, and the retry folds
// into that same user.
//
// A player's transitions (consent granted, verified, erased) are recorded in
// the KidUser's status and conditions and counted in metrics, not as
// Kubernetes Events: an Event per player would be one more API write per
// k-ID event (it was the fifth, docs/benchmarks.md) and would bury the
// Events an operator must see. Events are kept for what
// needs a person: a failed action, an invalid KidAction, a product not Ready.
type KidEventReconciler struct {
	client.Client
	Recorder events.EventRecorder
	// Filters holds the KidActions' compiled CEL filters.
	Filters *actions.Filters
	// HTTPClient sends http actions; nil means an outbound client with no
	// allowances (internal addresses refused).
	HTTPClient *http.Client
	// Impersonator gives resource actions a client that acts as their
	// ServiceAccount; nil turns resource actions off (their runs fail).
	Impersonator *actions.Impersonator
	// APIReader reads around the cache; an action is attempted only after
	// the API server confirms its run is still pending. Nil means Client.
	APIReader client.Reader
	// Users reads the manager's cache of KidUser skeletons (the users
	// holding an id); Client reads every KidUser live. Unset, Client is
	// read as the cache (specs that drive a reconciler by hand).
	Users cachemem.UserCache
	// Clock tells the time of applied events and action attempts; tests
	// move it forward. SetupWithManager sets the real clock when nil.
	Clock clock.PassiveClock
	// MaxConcurrentReconciles defaults to 16: each event waits on three API
	// round trips in turn, so throughput is workers divided by latency.
	MaxConcurrentReconciles int
	// APIClients, if set, learns of events the receiver spooled during an
	// outage of the API server, so that their product's sessions are read
	// again early (apioutage.go).
	APIClients *APIClients
	// ConfirmSpacing is the least time between two confirmations at k-ID
	// that one subject's browser events ask for (kidevent_browser.go); 0
	// means DefaultConfirmSpacing.
	ConfirmSpacing time.Duration
	// MatchLimits bound one event's matching: the time all its filters
	// share and how many of the namespace's actions it evaluates (zero:
	// actions.DefaultFilterBudget and actions.DefaultMaxActions).
	MatchLimits actions.MatchLimits
	// FilterLanes is how many of one namespace's events evaluate their
	// filters at once (filter_lanes.go); 0 means DefaultFilterLanes.
	FilterLanes int
	// StandInDelay is how long after its receipt a challenge event that
	// nothing links to a session yet waits before its stand-in is made
	// (kidevent_standin_delay.go). The manager sets DefaultStandInDelay; 0
	// (specs that drive a reconciler by hand) makes it at once.
	StandInDelay time.Duration

	confirms  confirmSpacer
	replays   foldReplays
	ahead     foldedAhead
	written   ownWrites
	lanesOnce sync.Once
	lanes     *filterLanes
}

// +kubebuilder:rbac:groups=kid.dev,resources=kidevents,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=kid.dev,resources=kidevents/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=kid.dev,resources=kidusers,verbs=get;list;watch;create;delete;patch
// +kubebuilder:rbac:groups=kid.dev,resources=kidusers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=kid.dev,resources=kidevents,verbs=patch
// +kubebuilder:rbac:groups=kid.dev,resources=kidactions,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the controller. Creates trigger it, spec
// changes (a later copy added what the stored one lacked: reconcileRefold)
// and annotation changes (the redrive annotation); status writes must not
// retrigger.
func (r *KidEventReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.MaxConcurrentReconciles == 0 {
		r.MaxConcurrentReconciles = 16
	}
	if r.Filters == nil {
		r.Filters = actions.NewFilters()
	}
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	// The cache's copy of a Pending event is trusted once it shows this
	// process's writes (kidevent_writes.go): they are recorded, and
	// forgotten as the informer shows them.
	r.Client = r.written.wrap(r.Client)
	inf, err := mgr.GetCache().GetInformer(context.Background(), &kidv1.KidEvent{}, cache.BlockUntilSynced(false))
	if err != nil {
		return err
	}
	if _, err := inf.AddEventHandler(r.written.handler()); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&kidv1.KidEvent{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		// A read of a session wakes the permission changes waiting for it.
		Watches(&kidv1.KidUser{}, r.wakePermissionEvents()).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Named("kidevent").
		Complete(quietRaces(r))
}

// eventPass is what one pass over a KidEvent has learned so far. Each step
// records what it found for the steps after it: what the fold learned
// decides whether the event is erased or matched, and whether its runs need
// the API server's copy.
type eventPass struct {
	// event is the cache's copy, then the API server's for a Pending event
	// (reread), then the answer to the pass's own status write (match).
	event *kidv1.KidEvent
	// product is the event's KidProduct, read by the first step that needs
	// its privacy settings or its suspend switch (fold, or run for an event
	// applied on an earlier pass).
	product *kidv1.KidProduct
	// folded: the fold ran (even into no user: an event may name no id).
	folded bool
	// users are the KidUsers the event was folded into, the one it belongs
	// to first (fold).
	users []*kidv1.KidUser
	// playerErased: one of those users is erased (fold).
	playerErased bool
	// applied: this pass marked the event Applied, so event is the API
	// server's answer to that write and its runs need no second read
	// (match).
	applied bool
	// live: the read of a Pending event from the API server, in flight
	// (reconcileReread); awaitLive waits for it before anything is
	// written (kidevent_reread.go).
	live *liveRead
}

// pending reports whether the event is still to be folded or confirmed.
func (p *eventPass) pending() bool {
	return p.event.Status.Phase == "" || p.event.Status.Phase == kidv1.EventPending
}

// eventStep is one step of a pass. An error ends the pass as well, and the
// event is retried.
type eventStep func(ctx context.Context, p *eventPass) (stepOutcome, error)

// stepOutcome says whether the pass goes on to the next step and, when it
// ends, what to tell the workqueue.
type stepOutcome struct {
	done   bool
	result ctrl.Result
}

var (
	// carryOn hands the event to the next step.
	carryOn = stepOutcome{}
	// endPass ends the pass; the event is seen again when it changes.
	endPass = stepOutcome{done: true}
)

// comeBackAfter ends the pass and asks for the event again after d (0:
// only when it changes).
func comeBackAfter(d time.Duration) stepOutcome {
	return stepOutcome{done: true, result: ctrl.Result{RequeueAfter: d}}
}

// Reconcile runs one pass over a KidEvent: its steps in order, until one
// ends the pass. A Pending event goes through confirm (browser), fold, erase
// and match once; an Applied event goes straight to run, pass after pass,
// until each of its runs is done. Every step checks for itself whether it
// applies, so a finished event falls through to run, which ends the pass.
func (r *KidEventReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	event := &kidv1.KidEvent{}
	if err := r.Get(ctx, req.NamespacedName, event); err != nil {
		if apierrors.IsNotFound(err) {
			r.replays.forget(req.NamespacedName)
			r.ahead.take(req.NamespacedName)
			r.written.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	p := &eventPass{event: event}
	for _, step := range []eventStep{
		r.reconcileRedrive,
		r.reconcileFilterLane,
		r.reconcileStandInDelay,
		r.reconcileReread,
		r.reconcileConfirm,
		r.reconcileFold,
		r.reconcileRefold,
		r.reconcileErase,
		r.reconcileMatch,
		r.reconcileRun,
	} {
		out, err := step(ctx, p)
		if err != nil {
			return ctrl.Result{}, err
		}
		if out.done {
			return out.result, nil
		}
	}
	return ctrl.Result{}, nil
}

// reconcileRedrive answers the redrive annotation: the failed runs go back
// to Pending and the annotation is removed. It ends the pass: the removal
// wakes the next one, which runs the redriven actions from an up-to-date
// cache.
func (r *KidEventReconciler) reconcileRedrive(ctx context.Context, p *eventPass) (stepOutcome, error) {
	if _, ok := p.event.Annotations[kidv1.RedriveAnnotation]; !ok {
		return carryOn, nil
	}
	return endPass, r.redrive(ctx, p.event)
}

// reconcileFilterLane sends a Pending event back to the queue, before any
// API call, while every filter lane of its namespace is busy
// (filter_lanes.go): its matching would wait for one, and its fold would be
// repeated then. A browser event is never matched.
func (r *KidEventReconciler) reconcileFilterLane(_ context.Context, p *eventPass) (stepOutcome, error) {
	if !p.pending() || p.event.Spec.Source == kidv1.SourceBrowser || !r.filterLanes().full(p.event.Namespace) {
		return carryOn, nil
	}
	filterLaneWaitsTotal.WithLabelValues(p.event.Namespace).Inc()
	return comeBackAfter(laneWait()), nil
}

// filterLanes returns the reconciler's lanes, made on first use (tests
// build reconcilers by hand).
func (r *KidEventReconciler) filterLanes() *filterLanes {
	r.lanesOnce.Do(func() {
		per := r.FilterLanes
		if per <= 0 {
			per = DefaultFilterLanes
		}
		r.lanes = newFilterLanes(per)
	})
	return r.lanes
}

// reconcileReread starts reading a Pending event from the API server when
// the cache's copy may be stale: the steps after it wait for the answer
// before they write anything (awaitLive), take the API server's copy, and
// end the pass if it is gone. The cache may lag behind a write that
// applied the event: an event requeued soon after it was applied (to retry
// its runs) can still show Pending there, and folding it again would count
// it twice and reset its runs. A copy that shows every such write is
// folded as it is (ownWrites, kidevent_writes.go); any other is read. The
// read is in flight while the fold resolves its users and creates a new
// player's (kidevent_reread.go).
func (r *KidEventReconciler) reconcileReread(ctx context.Context, p *eventPass) (stepOutcome, error) {
	if !p.pending() {
		return carryOn, nil
	}
	if r.ahead.take(client.ObjectKeyFromObject(p.event)) {
		// A batch of its player's events folded it since its last pass,
		// after reading it Pending from the API server (kidevent_batch.go):
		// the user holds its name, so its fold counts nothing again, and
		// its phase write is made only over the version read.
		return carryOn, nil
	}
	if r.written.current(ctx, p.event, r.liveReader()) {
		return carryOn, nil
	}
	p.live = r.readLive(ctx, p.event)
	return carryOn, nil
}

// reconcileConfirm records a Pending browser event as Ignored and asks k-ID
// to confirm its subject (kidevent_browser.go), or leaves it Pending until
// its subject's next confirmation may be asked for. It ends the pass: a
// hint from a game page is never folded and never acted on.
func (r *KidEventReconciler) reconcileConfirm(ctx context.Context, p *eventPass) (stepOutcome, error) {
	if !p.pending() || p.event.Spec.Source != kidv1.SourceBrowser {
		return carryOn, nil
	}
	if _, gone, err := r.awaitLive(ctx, p); gone || err != nil {
		return endPass, err
	}
	if !p.pending() {
		return carryOn, nil
	}
	wait, err := r.confirmBrowserEvent(ctx, p.event)
	return comeBackAfter(wait), err
}

// reconcileFold folds a Pending event into its KidUser(s), and records the
// product, the users and whether the player is erased. An event of a type
// this version does not know (Test events among them), or whose stored data
// does not decode, can never fold: it is kept for the record as Ignored,
// and the pass ends.
func (r *KidEventReconciler) reconcileFold(ctx context.Context, p *eventPass) (stepOutcome, error) {
	if !p.pending() {
		return carryOn, nil
	}
	// confirmed waits for the live read (reconcileReread) and starts the
	// fold over if the cached copy was stale.
	confirmed := func(created *kidv1.KidUser) (stepOutcome, bool, error) {
		stale, gone, err := r.awaitLive(ctx, p)
		if err == nil && !gone && !stale {
			return carryOn, false, nil
		}
		r.undoCreate(ctx, created)
		if err != nil || gone {
			return endPass, true, err
		}
		out, err := r.reconcileFold(ctx, p)
		return out, true, err
	}
	e := p.event
	if !kid.Known(e.Spec.EventType) {
		if out, done, err := confirmed(nil); done {
			return out, err
		}
		return endPass, r.ignore(ctx, e, ignoredUnknownType)
	}
	product, err := r.productOf(ctx, e)
	if err != nil {
		// Without its product the privacy settings are unknown: wait.
		return endPass, err
	}
	p.product = product
	fe, err := foldEvent(e)
	if err != nil {
		if out, done, err := confirmed(nil); done {
			return out, err
		}
		ctrl.LoggerFrom(ctx).Error(err, "event data does not decode; ignoring the event")
		return endPass, r.ignore(ctx, e, ignoredUndecodable(e.Spec.EventType))
	}
	targets, err := r.targets(ctx, e, fe)
	if err != nil {
		return endPass, err
	}
	if targets, err = r.enrichedInFlight(ctx, e, fe, targets); err != nil {
		return endPass, err
	}
	// A new player's user is created as the cache shows it missing, not
	// after a live GET answered 404 (applyTo reads users live), and while
	// the event's read, if one was needed, is in flight.
	var created *kidv1.KidUser
	if createsAhead(e, targets) {
		if created, err = r.createAhead(ctx, e, product, targets[0]); err != nil {
			_, _, _ = r.awaitLive(ctx, p)
			return endPass, fmt.Errorf("creating user: %w", err)
		}
		targets[0].created = created
	}
	if out, done, err := confirmed(created); done {
		return out, err
	}
	if len(targets) == 1 && targets[0].identity.Kind == kidv1.IdentitySession && !targets[0].uncounted &&
		e.Generation <= 1 && !erases(e.Spec.EventType) {
		// Its player's other queued events fold with it (kidevent_batch.go).
		targets[0].batch = true
	}
	privacy := inbox.PrivacyOf(product)
	for _, t := range targets {
		user, err := r.applyTo(ctx, e, product, t, privacy)
		if errors.Is(err, errWaitingForMerge) {
			return endPass, r.waitForMerge(ctx, e, err)
		}
		if err != nil {
			return endPass, err
		}
		p.users = append(p.users, user)
		p.playerErased = p.playerErased || user.Status.ErasedAt != nil
	}
	p.folded = true
	r.noteSpooled(ctx, e)
	return carryOn, nil
}

// reconcileRefold folds an event again, uncounted, when a later copy added
// to it what the stored copy lacked after it was folded (inbox.Enrich;
// design.md §2, "The richer copy wins"): its generation is newer than the
// one folded. The fold is a join, so only what was added changes anything:
// a session id that links its challenge to the player, a kuid, personal
// data the product keeps. The event was counted by the user(s) it was
// folded into first; Join counts nothing, and that user, a stand-in now
// holding an id the player's user holds too, is merged into it with its
// count, so the event is counted once. It records the generation folded
// (one status write) and goes on: erase deletes the event if it now keeps
// personal data about an erased player; its runs are left as they are (an
// event's actions run once).
func (r *KidEventReconciler) reconcileRefold(ctx context.Context, p *eventPass) (stepOutcome, error) {
	e := p.event
	foldable := e.Status.Phase != kidv1.EventIgnored && e.Spec.Source != kidv1.SourceBrowser && kid.Known(e.Spec.EventType)
	if !p.pending() && !foldable && 0 < e.Status.ObservedGeneration && e.Status.ObservedGeneration < e.Generation {
		// Nothing to fold again, but kstatus reads the event InProgress
		// until its status says the new generation was seen. Only an
		// event this version wrote (observedGeneration set) is written:
		// one finished before the field existed is left as it is.
		before := e.DeepCopy()
		e.Status.ObservedGeneration = e.Generation
		if err := r.Status().Patch(ctx, e, client.MergeFrom(before)); err != nil {
			return endPass, fmt.Errorf("recording the event's observed generation: %w", err)
		}
		return carryOn, nil
	}
	if p.pending() || !foldable || e.Generation <= max(e.Status.FoldedGeneration, 1) {
		return carryOn, nil
	}
	product, err := r.productOf(ctx, e)
	if err != nil {
		return endPass, err
	}
	p.product = product
	fe, err := foldEvent(e)
	if err != nil {
		// It folded once, so its data decoded then; keep what was folded.
		ctrl.LoggerFrom(ctx).Error(err, "enriched event data does not decode; not folding it again")
		return endPass, nil
	}
	targets, err := r.targets(ctx, e, fe)
	if err != nil {
		return endPass, err
	}
	privacy := inbox.PrivacyOf(product)
	for _, t := range targets {
		t.uncounted = true
		user, err := r.applyTo(ctx, e, product, t, privacy)
		if err != nil {
			return endPass, err
		}
		p.playerErased = p.playerErased || user.Status.ErasedAt != nil
	}
	before := e.DeepCopy()
	e.Status.FoldedGeneration = e.Generation
	e.Status.ObservedGeneration = e.Generation
	if err := r.Status().Patch(ctx, e, client.MergeFrom(before)); err != nil {
		return endPass, fmt.Errorf("recording the event's folded generation: %w", err)
	}
	eventsProcessedTotal.WithLabelValues(typeLabel(e.Spec.EventType), "refolded").Inc()
	return carryOn, nil
}

// enrichedInFlight handles a Pending event that a later copy enriched with
// a session after a first fold into a challenge's stand-in counted it, and
// before the event was marked Applied (a crash between the two writes): the
// stand-in holds the event in flight. The fold goes to that stand-in again,
// which does not count it twice, and to the session's user uncounted, so
// the stand-in is merged into the player with its count. Any other event is
// left to targets' choice.
func (r *KidEventReconciler) enrichedInFlight(ctx context.Context, e *kidv1.KidEvent, fe *fold.Event, targets []target) ([]target, error) {
	s := e.Spec.Subject
	if e.Generation <= 1 || s.SessionID == "" || s.ChallengeID == "" || len(targets) != 1 {
		return targets, nil
	}
	holders, err := r.holders(ctx, e.Namespace, kidv1.UserIDKey(e.Spec.ProductRef.Name, kidv1.IdentityChallenge, s.ChallengeID), fe)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(holders, func(h target) bool { return h.holdsEvent && h.name != targets[0].name })
	if i < 0 {
		return targets, nil
	}
	session := targets[0]
	session.uncounted = true
	return []target{session, holders[i]}, nil
}

// reconcileErase deletes a late delivery about a player k-ID already
// erased, when the event kept personal data: the fold took what it may,
// and the data must not stay. It ends the pass, so nothing is applied and no
// action runs. (An event whose player is erased while its runs are pending
// is deleted by run, when they settle.)
func (r *KidEventReconciler) reconcileErase(ctx context.Context, p *eventPass) (stepOutcome, error) {
	if !p.playerErased || !p.event.Spec.PersonalData {
		return carryOn, nil
	}
	eventsProcessedTotal.WithLabelValues(typeLabel(p.event.Spec.EventType), "erased").Inc()
	erasedEventsTotal.Inc()
	return endPass, client.IgnoreNotFound(r.Delete(ctx, p.event))
}

// reconcileMatch starts a Pending run for each KidAction the folded event
// matches, given its user's status after the fold, and marks the event
// Applied with its user and runs: the event's one status write of the fold.
// It records that the event was applied, counts it and observes the time
// from k-ID's signature. It ends the pass when no action matched.
func (r *KidEventReconciler) reconcileMatch(ctx context.Context, p *eventPass) (stepOutcome, error) {
	if !p.folded {
		return carryOn, nil
	}
	e := p.event
	// A permission change's actions wait, Pending, for the read of the
	// session that shows the change (kidevent_permissions.go).
	read, wait := r.sessionRead(p)
	if wait > 0 {
		return comeBackAfter(wait), nil
	}
	var userRef *kidv1.LocalObjectReference
	var userStatus *kidv1.KidUserStatus
	if len(p.users) > 0 {
		userRef = &kidv1.LocalObjectReference{Name: p.users[0].Name}
		userStatus = &p.users[0].Status
	}
	m, err := r.matchActions(ctx, e, p.product, userStatus)
	if err != nil {
		return endPass, err
	}
	if m.laneBusy {
		// Folded already; the next pass folds it again, which changes
		// nothing, and matches it when a lane is free.
		filterLaneWaitsTotal.WithLabelValues(e.Namespace).Inc()
		return comeBackAfter(laneWait()), nil
	}
	runs := m.runs
	if err := r.setPhase(ctx, e, kidv1.EventApplied, userRef, runs, read, m.condition); err != nil {
		return endPass, err
	}
	p.applied = true
	eventsProcessedTotal.WithLabelValues(typeLabel(e.Spec.EventType), "applied").Inc()
	if e.Spec.SignedAt != nil {
		applyLatency.WithLabelValues(typeLabel(e.Spec.EventType)).Observe(r.Clock.Since(e.Spec.SignedAt.Time).Seconds())
	}
	if len(runs) == 0 {
		return endPass, nil
	}
	return carryOn, nil
}

// reconcileRun makes the due attempts of an Applied event's runs, records
// them, settles the event's phase once every run is done, and deletes the
// event then if it kept personal data about a player erased meanwhile
// (runActions, actions.go). It ends the pass, asking for the event again
// when the next attempt is due. An event applied on an earlier pass with no
// pending run, or finished, has nothing left to do.
func (r *KidEventReconciler) reconcileRun(ctx context.Context, p *eventPass) (stepOutcome, error) {
	e := p.event
	if !p.applied {
		waiting := slices.ContainsFunc(e.Status.Actions, func(a kidv1.ActionRunStatus) bool { return a.Phase == kidv1.RunPending })
		if e.Status.Phase != kidv1.EventApplied || !waiting {
			return endPass, nil
		}
		product, err := r.productOf(ctx, e)
		if err != nil {
			return endPass, err
		}
		p.product = product
	}
	next, err := r.runActions(ctx, e, p.product, p.applied)
	if err != nil {
		return endPass, err
	}
	return comeBackAfter(next), nil
}

// productOf reads the event's KidProduct.
func (r *KidEventReconciler) productOf(ctx context.Context, e *kidv1.KidEvent) (*kidv1.KidProduct, error) {
	product := &kidv1.KidProduct{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: e.Namespace, Name: e.Spec.ProductRef.Name}, product); err != nil {
		return nil, fmt.Errorf("reading product of event: %w", err)
	}
	return product, nil
}

// ignore records an event that folds into no user as Ignored, and why.
func (r *KidEventReconciler) ignore(ctx context.Context, e *kidv1.KidEvent, why ignored) error {
	eventsProcessedTotal.WithLabelValues(typeLabel(e.Spec.EventType), "ignored").Inc()
	return r.setPhase(ctx, e, kidv1.EventIgnored, nil, nil, why.condition(e))
}

// waitForMerge records on a Pending event that its fold waits for the cache
// to show a merge (its Processed condition, written once per wait: a retry
// that finds it set writes nothing), and returns err, so the fold is
// retried.
func (r *KidEventReconciler) waitForMerge(ctx context.Context, e *kidv1.KidEvent, err error) error {
	before := e.DeepCopy()
	setEventCondition(e, kidv1.ProcessedCondition, metav1.ConditionFalse, kidv1.WaitingForMergeReason,
		"the stand-in that counted the event was merged away, or the cache does not show it yet; the fold is retried")
	setEventHealth(e)
	if !apiequality.Semantic.DeepEqual(before.Status, e.Status) {
		if perr := r.Status().Patch(ctx, e, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); perr != nil {
			return fmt.Errorf("recording the wait for a merge: %w (%w)", perr, err)
		}
	}
	return err
}

// reread returns the API server's copy of an event (through APIReader,
// around the cache).
func (r *KidEventReconciler) reread(ctx context.Context, e *kidv1.KidEvent) (*kidv1.KidEvent, error) {
	fresh := &kidv1.KidEvent{}
	if err := r.liveReader().Get(ctx, client.ObjectKeyFromObject(e), fresh); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	return fresh, nil
}

// liveReader reads around the cache: APIReader, or Client when none is set.
func (r *KidEventReconciler) liveReader() client.Reader {
	if r.APIReader == nil {
		return r.Client
	}
	return r.APIReader
}

// redrive puts the failed runs back to Pending and removes the annotation
// that asked for it.
func (r *KidEventReconciler) redrive(ctx context.Context, event *kidv1.KidEvent) error {
	before := event.DeepCopy()
	redrive(event)
	setProcessed(event)
	if !apiequality.Semantic.DeepEqual(before.Status, event.Status) {
		// The runs list is replaced whole: only over the version read.
		if err := r.Status().Patch(ctx, event, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
			return fmt.Errorf("redriving event: %w", err)
		}
	}
	before = event.DeepCopy()
	delete(event.Annotations, kidv1.RedriveAnnotation)
	if err := r.Patch(ctx, event, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("removing the redrive annotation: %w", err)
	}
	return nil
}

// foldEvent decodes what the fold needs of a KidEvent.
func foldEvent(e *kidv1.KidEvent) (*fold.Event, error) {
	fe := &fold.Event{Name: e.Name, Type: e.Spec.EventType, Subject: e.Spec.Subject, SignedAt: e.Spec.ReceivedAt.Time}
	if e.Spec.SignedAt != nil {
		fe.SignedAt = e.Spec.SignedAt.Time
	}
	if e.Spec.Data != nil {
		if err := json.Unmarshal(e.Spec.Data.Raw, &fe.Payload); err != nil {
			return nil, err
		}
	}
	return fe, nil
}

// target is one KidUser an event folds into, with the event narrowed to
// that user.
type target struct {
	name     string
	identity kidv1.UserIdentity
	event    *fold.Event
	// holdsEvent: the user has the event in flight already, so this is a
	// fold repeated after a failure between the user's write and the
	// event's.
	holdsEvent bool
	// uncounted: another user counted the event; this fold only joins
	// what it says (reconcileRefold, enrichedInFlight).
	uncounted bool
	// batch: the user is a session's, and the player's other queued
	// events fold with this one (queuedWith).
	batch bool
	// created: the user, created by this pass while its event's live read
	// was in flight (createAhead).
	created *kidv1.KidUser
}

// targets resolves the KidUsers an event folds into (design.md §2, "Identity
// and linking"):
//   - an event that names a session folds into that session's user;
//   - otherwise into the strongest user that already holds one of its ids,
//     else into a user known by its strongest id;
//   - Verification.Revoke folds each revoked id into whichever users hold it;
//   - Account.Delete folds into every user with that kuid.
//
// Users that stand in for a player (known by a challenge, verification or
// kuid) are merged into the player's session user by the KidUser controller
// once a link appears.
func (r *KidEventReconciler) targets(ctx context.Context, e *kidv1.KidEvent, fe *fold.Event) ([]target, error) {
	product, s := e.Spec.ProductRef.Name, e.Spec.Subject
	one := func(kind kidv1.IdentityKind, id string) target {
		return target{name: kidv1.UserName(product, kind, id), identity: kidv1.UserIdentity{Kind: kind, ID: id}, event: fe}
	}
	switch {
	case s.SessionID != "":
		return []target{one(kidv1.IdentitySession, s.SessionID)}, nil

	case e.Spec.EventType == kid.VerificationRevoke:
		byUser := map[string]*target{}
		var order []string
		for _, v := range s.VerificationIDs {
			holders, err := r.holders(ctx, e.Namespace, kidv1.UserIDKey(product, kidv1.IdentityVerification, v), fe)
			if err != nil {
				return nil, err
			}
			if len(holders) == 0 {
				t := one(kidv1.IdentityVerification, v)
				holders = []target{t}
			}
			for _, h := range holders {
				t, ok := byUser[h.name]
				if !ok {
					narrowed := *fe
					narrowed.Subject.VerificationIDs = nil
					h.event = &narrowed
					t = &h
					byUser[h.name] = t
					order = append(order, h.name)
				}
				t.event.Subject.VerificationIDs = append(t.event.Subject.VerificationIDs, v)
			}
		}
		out := make([]target, 0, len(order))
		for _, name := range order {
			out = append(out, *byUser[name])
		}
		return out, nil

	case e.Spec.EventType == kid.AccountDelete && s.KUID != "":
		holders, err := r.holders(ctx, e.Namespace, kidv1.UserIDKey(product, kidv1.IdentityAccount, s.KUID), fe)
		if err != nil {
			return nil, err
		}
		// The account's own record is kept too, so that a session linked to
		// this kuid later still learns of the deletion. Not for a deletion
		// the operator inferred from k-ID's API (source poll: no session
		// left under the kuid, kiduser_erasure.go): the same answers would
		// follow a deletion of the player's only session, and a session of
		// the kuid made later (consent given again) must not be erased.
		if e.Spec.Source == kidv1.SourcePoll {
			return holders, nil
		}
		own := one(kidv1.IdentityAccount, s.KUID)
		if !slices.ContainsFunc(holders, func(h target) bool { return h.name == own.name }) {
			holders = append(holders, own)
		}
		return holders, nil
	}

	// A challenge or a verification: the strongest holder, else its own.
	var kind kidv1.IdentityKind
	var id string
	switch {
	case s.ChallengeID != "":
		kind, id = kidv1.IdentityChallenge, s.ChallengeID
	case len(s.VerificationIDs) > 0:
		kind, id = kidv1.IdentityVerification, s.VerificationIDs[0]
	case s.KUID != "":
		kind, id = kidv1.IdentityAccount, s.KUID
	default:
		return nil, nil
	}
	holders, err := r.holders(ctx, e.Namespace, kidv1.UserIDKey(product, kind, id), fe)
	if err != nil {
		return nil, err
	}
	if len(holders) == 0 && kind == kidv1.IdentityChallenge {
		// No user holds the challenge yet, but a stored event may already
		// link it to a session: the PASS waiting behind this IN_PROGRESS.
		// Folding into the session's user now spares the stand-in's
		// create, status, merge and delete (design.md §2, "Identity and
		// linking, as built").
		session, err := r.linkedSession(ctx, e, id)
		if err != nil {
			return nil, err
		}
		if session != "" {
			return r.standInOr(ctx, e, one(kind, id), one(kidv1.IdentitySession, session))
		}
	}
	if len(holders) == 0 {
		return []target{one(kind, id)}, nil
	}
	if i := slices.IndexFunc(holders, func(h target) bool { return h.holdsEvent }); i >= 0 {
		// A fold repeated after a crash goes back to the user the first
		// fold counted the event on, though a stronger holder may have
		// appeared since: that one would count it again, and the merge of
		// the first into it would add both counts. The KidUser controller
		// merges them anyway.
		return holders[i : i+1], nil
	}
	return holders[:1], nil
}

// standInOr returns the stand-in's target if the API server has the
// stand-in, else the linked session's. The cache showed no user holding the
// challenge, but it may lag: a first fold of this event, before the PASS
// that links it was stored, went to the stand-in and failed before the
// event was marked Applied (a 409, a timeout). Folded into the session's
// user now, the event would be counted there too, and again when the
// stand-in is merged in. So the stand-in's fixed name is read live before
// the link is followed (one read, on the look-ahead only).
func (r *KidEventReconciler) standInOr(ctx context.Context, e *kidv1.KidEvent, standIn, session target) ([]target, error) {
	u := &kidv1.KidUser{}
	err := r.liveReader().Get(ctx, types.NamespacedName{Namespace: e.Namespace, Name: standIn.name}, u)
	switch {
	case apierrors.IsNotFound(err):
		return []target{session}, nil
	case err != nil:
		return nil, fmt.Errorf("reading the challenge's stand-in: %w", err)
	}
	standIn.holdsEvent = slices.Contains(u.Status.InFlightEvents, standIn.event.Name)
	return []target{standIn}, nil
}

// linkedSession returns the session that a stored challenge event links the
// challenge to, or "". Only what k-ID said counts: a browser event is a
// page's claim, and a page could name any session.
func (r *KidEventReconciler) linkedSession(ctx context.Context, e *kidv1.KidEvent, challenge string) (string, error) {
	events, err := cachemem.EventsNaming(ctx, r, e.Namespace, kidv1.UserIDKey(e.Spec.ProductRef.Name, kidv1.IdentityChallenge, challenge))
	if err != nil {
		return "", err
	}
	session := ""
	for i := range events {
		o := &events[i]
		s := o.Spec.Subject
		if o.Spec.EventType != kid.ChallengeStateChange || o.Spec.Source == kidv1.SourceBrowser || o.DeletionTimestamp != nil ||
			s.ChallengeID != challenge || s.SessionID == "" {
			continue
		}
		if session != "" && session != s.SessionID {
			// k-ID never links one challenge to two sessions; if stored
			// events say so, the stand-in waits for the folds to decide.
			return "", nil
		}
		session = s.SessionID
	}
	return session, nil
}

// holders lists the users holding an id, strongest identity first, each a
// target for fe (nil where only the users are wanted).
func (r *KidEventReconciler) holders(ctx context.Context, namespace, key string, fe *fold.Event) ([]target, error) {
	users, err := userCache(r.Users, r.Client).Holding(ctx, namespace, key)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(users, func(a, b cachemem.UserRef) int { return byStrength(a.Identity.Kind, a.Name, b.Identity.Kind, b.Name) })
	out := make([]target, 0, len(users))
	for _, u := range users {
		t := target{name: u.Name, identity: u.Identity, event: fe}
		if fe != nil {
			t.holdsEvent = slices.Contains(u.InFlightEvents, fe.Name)
		}
		out = append(out, t)
	}
	return out, nil
}

// strongerFirst orders users by identity strength, then name.
func strongerFirst(a, b kidv1.KidUser) int {
	return byStrength(a.Spec.Identity.Kind, a.Name, b.Spec.Identity.Kind, b.Name)
}

// byStrength orders users, by their identity's kind and their name, by
// identity strength, then name.
func byStrength(ka kidv1.IdentityKind, na string, kb kidv1.IdentityKind, nb string) int {
	if ra, rb := ka.Strength(), kb.Strength(); ra != rb {
		return rb - ra
	}
	if na < nb {
		return -1
	}
	return 1
}

// userCache is the cache of KidUser skeletons a reconciler reads: set, or
// else c (specs that drive a reconciler by hand over one client, whose
// KidUsers carry the user-id index).
func userCache(set cachemem.UserCache, c client.Reader) cachemem.UserCache {
	if set.IsZero() {
		return cachemem.NewUserCache(c)
	}
	return set
}

// applyTo folds the target's event into its KidUser, creating the user if
// needed. The status write carries the resourceVersion read, so two
// concurrent folds into one user never lose each other's work.
func (r *KidEventReconciler) applyTo(ctx context.Context, e *kidv1.KidEvent, product *kidv1.KidProduct, t target, privacy kid.Privacy) (*kidv1.KidUser, error) {
	user := &kidv1.KidUser{}
	var err error
	if t.created != nil {
		user = t.created
	} else {
		err = r.Get(ctx, types.NamespacedName{Namespace: e.Namespace, Name: t.name}, user)
	}
	switch {
	case apierrors.IsNotFound(err) && t.holdsEvent:
		// Merged away since it was listed, with the event's name, or not
		// in the cache yet: made again, it would count the event a second
		// time. The retry finds the name on the user it was merged into.
		return nil, fmt.Errorf("user %s, which holds this event, is not in the cache: %w", t.name, errWaitingForMerge)
	case apierrors.IsNotFound(err):
		user = newUser(e, product, t, r.queuedIDs(ctx, e, t))
		if err := r.Create(ctx, user); err != nil {
			// AlreadyExists: another worker made it; the retry reads it.
			return nil, fmt.Errorf("creating user: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("reading user: %w", err)
	}

	// Read after the user, so that what it shows in flight is current.
	batch := r.queuedWith(ctx, e, t, user)
	before := user.DeepCopy()
	r.replays.fold(e, &before.Status, t.uncounted)
	inFlight, err := r.stillInFlight(ctx, user, t.event.Name)
	if err != nil {
		return nil, err
	}
	user.Status.InFlightEvents = inFlight
	if t.uncounted {
		user.Status = *fold.Join(&user.Status, t.event, privacy)
	} else {
		user.Status = *fold.Apply(&user.Status, t.event, privacy, string(user.UID))
	}
	for _, m := range batch {
		fe, _ := foldEvent(m) // queuedWith kept only those that decode
		r.replays.fold(m, &before.Status, false)
		user.Status = *fold.Apply(&user.Status, fe, privacy, string(user.UID))
	}
	setUserConditions(user)
	if apiequality.Semantic.DeepEqual(before.Status, user.Status) {
		return user, nil
	}
	if slices.Contains(before.Status.InFlightEvents, t.event.Name) && sameButInFlight(&before.Status, &user.Status) {
		// The fold repeated of an event the user holds already (a
		// permission change waiting for its read folds at each pass):
		// pruning the names of finished events is worth no write of its
		// own; the next fold that changes something carries it.
		user.Status = before.Status
		return user, nil
	}
	r.ahead.mark(batch)
	if err := r.Status().Patch(ctx, user, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		r.ahead.unmark(batch)
		return nil, fmt.Errorf("updating user status: %w", err)
	}
	batchedEventsTotal.Add(float64(len(batch)))
	return user, nil
}

// newUser is the KidUser a target names, as the fold creates it. It carries
// the id label (kidv1.IDLabel) of each id it will hold once its event is
// folded, and of queued, the ids of the player's events queued behind it
// (queuedIDs), so that a new player costs no label write of its own
// (labelIDs).
func newUser(e *kidv1.KidEvent, product *kidv1.KidProduct, t target, queued []string) *kidv1.KidUser {
	u := &kidv1.KidUser{
		ObjectMeta: metav1.ObjectMeta{
			Name: t.name, Namespace: e.Namespace,
			// Deleting the product deletes its players too: no personal
			// data outlives it.
			OwnerReferences: []metav1.OwnerReference{product.OwnerReference()},
		},
		Spec: kidv1.KidUserSpec{ProductRef: e.Spec.ProductRef, Identity: t.identity},
	}
	// The ids the fold will give it (privacy decides nothing about ids);
	// the status itself is the fold's to write.
	folded := &kidv1.KidUser{Spec: u.Spec, Status: *fold.Delta(t.event, kid.Privacy{})}
	u.Labels = kidv1.WithIDLabels(map[string]string{kidv1.ProductLabel: e.Spec.ProductRef.Name}, append(folded.HeldIDs(), queued...))
	return u
}

// sameButInFlight reports whether two statuses differ at most in their
// inFlightEvents.
func sameButInFlight(a, b *kidv1.KidUserStatus) bool {
	x, y := *a, *b
	x.InFlightEvents, y.InFlightEvents = nil, nil
	return apiequality.Semantic.DeepEqual(&x, &y)
}

// stillInFlight returns the user's inFlightEvents without the events the
// cache shows finished (past Pending) or gone (retention, erasure), keeping
// the one being folded. A name is there only to tell a fold repeated after a
// crash that its event was counted, and an event past Pending is never
// folded again; pruned at each fold, the list holds about the events in
// flight, not the player's history. The cache may lag, so a finished event's
// name can stay one fold longer; it never shows an event finished before it
// was, but it may not show a stored event yet, so a miss is confirmed
// through the API server.
func (r *KidEventReconciler) stillInFlight(ctx context.Context, user *kidv1.KidUser, folding string) ([]string, error) {
	var kept []string
	for _, name := range user.Status.InFlightEvents {
		if name != folding {
			e := &kidv1.KidEvent{}
			key := types.NamespacedName{Namespace: user.Namespace, Name: name}
			err := r.Get(ctx, key, e)
			if apierrors.IsNotFound(err) {
				// Gone, or not in the cache yet: after a takeover the
				// KidUser watch can run ahead of the KidEvent watch, and a
				// name the old leader wrote, pruned before its event
				// arrives, would let the fold repeated count it again.
				// The API server tells (one read, on a cache miss only).
				err = r.liveReader().Get(ctx, key, e)
			}
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("reading an event in flight: %w", err)
			}
			if e.Status.Phase != "" && e.Status.Phase != kidv1.EventPending {
				continue
			}
		}
		kept = append(kept, name)
	}
	return kept, nil
}

// setUserConditions derives the KidUser conditions from its status.
func setUserConditions(u *kidv1.KidUser) {
	set := func(condType string, ok bool, reason, msg string) {
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&u.Status.Conditions, metav1.Condition{
			Type: condType, Status: status, Reason: reason, Message: msg, ObservedGeneration: u.Generation,
		})
	}
	st := &u.Status
	set(kidv1.ConsentGrantedCondition, st.Consent.State == kidv1.ConsentGranted, kidv1.ConsentReason, "consent is "+string(st.Consent.State))
	set(kidv1.AgeVerifiedCondition, st.Verification.State == kidv1.VerificationVerified, kidv1.VerificationReason, "verification is "+string(st.Verification.State))
	if st.Session.State != "" {
		set(kidv1.SessionActiveCondition, st.Session.State == kidv1.SessionActive, kidv1.SessionReason, "session is "+string(st.Session.State))
	}
}

// setPhase writes the event's phase, user, action runs and conditions (nil
// ones skipped), with the Processed condition of an applied event derived
// from its runs: one status write per event.
func (r *KidEventReconciler) setPhase(ctx context.Context, e *kidv1.KidEvent, phase kidv1.EventPhase, userRef *kidv1.LocalObjectReference, runs []kidv1.ActionRunStatus, conds ...*metav1.Condition) error {
	before := e.DeepCopy()
	now := metav1.NewTime(r.Clock.Now())
	e.Status.Phase = phase
	e.Status.UserRef = userRef
	e.Status.Actions = runs
	for _, cond := range conds {
		if cond != nil {
			meta.SetStatusCondition(&e.Status.Conditions, *cond)
		}
	}
	if phase == kidv1.EventApplied {
		e.Status.AppliedAt = &now
		e.Status.FoldedGeneration = e.Generation
		setProcessed(e)
	}
	setEventHealth(e)
	// A JSON merge patch replaces the runs list whole, so it is written
	// only over the version it was computed from: a stale read can never
	// put a succeeded run back to Pending.
	if err := r.Status().Patch(ctx, e, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("updating event status: %w", err)
	}
	r.replays.forget(client.ObjectKeyFromObject(e))
	r.ahead.take(client.ObjectKeyFromObject(e))
	return nil
}
