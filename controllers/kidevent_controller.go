package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/cachemem"
	"github.com/kid-operator/kid-operator/internal/fold"
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
	// Clock tells the time of applied events and action attempts; tests
	// move it forward. SetupWithManager sets the real clock when nil.
	Clock clock.PassiveClock
	// MaxConcurrentReconciles defaults to 16: each event waits on three API
	// round trips in turn, so throughput is workers divided by latency.
	MaxConcurrentReconciles int
}

// +kubebuilder:rbac:groups=kid.dev,resources=kidevents,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=kid.dev,resources=kidevents/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=kid.dev,resources=kidusers,verbs=get;list;watch;create;delete;patch
// +kubebuilder:rbac:groups=kid.dev,resources=kidusers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=kid.dev,resources=kidevents,verbs=patch
// +kubebuilder:rbac:groups=kid.dev,resources=kidactions,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the controller. Creates trigger it, and
// annotation changes (the redrive annotation): the spec of an event never
// changes, and status writes must not retrigger.
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
	return ctrl.NewControllerManagedBy(mgr).
		For(&kidv1.KidEvent{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Named("kidevent").
		Complete(r)
}

// Reconcile processes one KidEvent: it folds a Pending event into its
// user(s), then runs the KidActions it matched until each run is done.
func (r *KidEventReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	event := &kidv1.KidEvent{}
	if err := r.Get(ctx, req.NamespacedName, event); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if _, ok := event.Annotations[kidv1.RedriveAnnotation]; ok {
		// The removal of the annotation wakes the next pass, which runs
		// the redriven actions from an up-to-date cache.
		return ctrl.Result{}, r.redrive(ctx, event)
	}
	if event.Status.Phase == "" || event.Status.Phase == kidv1.EventPending {
		// The cache may lag behind this controller's own last write: an
		// event requeued soon after it was applied (to retry its runs) can
		// still show Pending there, and folding it again would count it
		// twice and reset its runs. Only the API server's copy tells.
		fresh, err := r.reread(ctx, event)
		if err != nil || fresh == nil {
			return ctrl.Result{}, err
		}
		event = fresh
	}
	switch event.Status.Phase {
	case "", kidv1.EventPending:
		if event.Spec.Source == kidv1.SourceBrowser {
			// A hint from a game page: never folded, never acted on.
			return ctrl.Result{}, r.confirmBrowserEvent(ctx, event)
		}
	case kidv1.EventApplied:
		if !slices.ContainsFunc(event.Status.Actions, func(a kidv1.ActionRunStatus) bool { return a.Phase == kidv1.RunPending }) {
			return ctrl.Result{}, nil
		}
		return r.continueRuns(ctx, event)
	default:
		return ctrl.Result{}, nil
	}

	if !kid.Known(event.Spec.EventType) {
		// Test events and types this version does not know: kept for the
		// record, folded into no user.
		eventsProcessedTotal.WithLabelValues(typeLabel(event.Spec.EventType), "ignored").Inc()
		return ctrl.Result{}, r.setPhase(ctx, event, kidv1.EventIgnored, nil, nil)
	}
	product := &kidv1.KidProduct{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: event.Namespace, Name: event.Spec.ProductRef.Name}, product); err != nil {
		// Without its product the privacy settings are unknown: wait.
		return ctrl.Result{}, fmt.Errorf("reading product of event: %w", err)
	}
	fe, err := foldEvent(event)
	if err != nil {
		// Stored data that does not decode can never fold: ignore it.
		ctrl.LoggerFrom(ctx).Error(err, "event data does not decode; ignoring the event")
		eventsProcessedTotal.WithLabelValues(typeLabel(event.Spec.EventType), "ignored").Inc()
		return ctrl.Result{}, r.setPhase(ctx, event, kidv1.EventIgnored, nil, nil)
	}

	targets, err := r.targets(ctx, event, fe)
	if err != nil {
		return ctrl.Result{}, err
	}
	privacy := kid.Privacy{KeepEmail: product.Spec.Privacy.StoreApproverEmail, KeepDateOfBirth: product.Spec.Privacy.StoreDateOfBirth}
	var folded []*kidv1.KidUser
	erased := false
	for _, t := range targets {
		user, err := r.applyTo(ctx, event, product, t, privacy)
		if err != nil {
			return ctrl.Result{}, err
		}
		folded = append(folded, user)
		erased = erased || user.Status.ErasedAt != nil
	}
	if erased && event.Spec.PersonalData {
		// A late delivery about a player k-ID already erased: its personal
		// data must not stay. The fold took what it may; drop the event.
		eventsProcessedTotal.WithLabelValues(typeLabel(event.Spec.EventType), "erased").Inc()
		erasedEventsTotal.Inc()
		return ctrl.Result{}, client.IgnoreNotFound(r.Delete(ctx, event))
	}

	var userRef *kidv1.LocalObjectReference
	var userStatus *kidv1.KidUserStatus
	if len(folded) > 0 {
		userRef = &kidv1.LocalObjectReference{Name: folded[0].Name}
		userStatus = &folded[0].Status
	}
	runs, err := r.matchActions(ctx, event, product, userStatus)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.setPhase(ctx, event, kidv1.EventApplied, userRef, runs); err != nil {
		return ctrl.Result{}, err
	}
	eventsProcessedTotal.WithLabelValues(typeLabel(event.Spec.EventType), "applied").Inc()
	if event.Spec.SignedAt != nil {
		applyLatency.WithLabelValues(typeLabel(event.Spec.EventType)).Observe(r.Clock.Since(event.Spec.SignedAt.Time).Seconds())
	}
	if len(runs) == 0 {
		return ctrl.Result{}, nil
	}
	next, err := r.runActions(ctx, event, product, true)
	return ctrl.Result{RequeueAfter: next}, err
}

// continueRuns makes the next due attempts of an applied event's runs.
func (r *KidEventReconciler) continueRuns(ctx context.Context, event *kidv1.KidEvent) (ctrl.Result, error) {
	product := &kidv1.KidProduct{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: event.Namespace, Name: event.Spec.ProductRef.Name}, product); err != nil {
		return ctrl.Result{}, fmt.Errorf("reading product of event: %w", err)
	}
	next, err := r.runActions(ctx, event, product, false)
	return ctrl.Result{RequeueAfter: next}, err
}

// reread returns the API server's copy of an event (through APIReader,
// around the cache).
func (r *KidEventReconciler) reread(ctx context.Context, e *kidv1.KidEvent) (*kidv1.KidEvent, error) {
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	fresh := &kidv1.KidEvent{}
	if err := reader.Get(ctx, client.ObjectKeyFromObject(e), fresh); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	return fresh, nil
}

// redrive puts the failed runs back to Pending and removes the annotation
// that asked for it.
func (r *KidEventReconciler) redrive(ctx context.Context, event *kidv1.KidEvent) error {
	before := event.DeepCopy()
	redrive(event)
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
		// this kuid later still learns of the deletion.
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
			return []target{one(kidv1.IdentitySession, session)}, nil
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
	users, err := cachemem.UsersHolding(ctx, r, namespace, key)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(users, strongerFirst)
	out := make([]target, 0, len(users))
	for i := range users {
		u := &users[i]
		t := target{name: u.Name, identity: u.Spec.Identity, event: fe}
		if fe != nil {
			t.holdsEvent = slices.Contains(u.Status.InFlightEvents, fe.Name)
		}
		out = append(out, t)
	}
	return out, nil
}

// strongerFirst orders users by identity strength, then name.
func strongerFirst(a, b kidv1.KidUser) int {
	if ra, rb := a.Spec.Identity.Kind.Strength(), b.Spec.Identity.Kind.Strength(); ra != rb {
		return rb - ra
	}
	if a.Name < b.Name {
		return -1
	}
	return 1
}

// applyTo folds the target's event into its KidUser, creating the user if
// needed. The status write carries the resourceVersion read, so two
// concurrent folds into one user never lose each other's work.
func (r *KidEventReconciler) applyTo(ctx context.Context, e *kidv1.KidEvent, product *kidv1.KidProduct, t target, privacy kid.Privacy) (*kidv1.KidUser, error) {
	user := &kidv1.KidUser{}
	err := r.Get(ctx, types.NamespacedName{Namespace: e.Namespace, Name: t.name}, user)
	switch {
	case apierrors.IsNotFound(err) && t.holdsEvent:
		// Merged away since it was listed, with the event's name: made
		// again, it would count the event a second time. The retry finds
		// the name on the user it was merged into.
		return nil, fmt.Errorf("user %s, which holds this event, is gone; resolving the event's users again", t.name)
	case apierrors.IsNotFound(err):
		user = &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{
				Name: t.name, Namespace: e.Namespace,
				Labels: map[string]string{kidv1.ProductLabel: e.Spec.ProductRef.Name},
				// Deleting the product deletes its players too: no
				// personal data outlives it.
				OwnerReferences: []metav1.OwnerReference{product.OwnerReference()},
			},
			Spec: kidv1.KidUserSpec{ProductRef: e.Spec.ProductRef, Identity: t.identity},
		}
		if err := r.Create(ctx, user); err != nil {
			// AlreadyExists: another worker made it; the retry reads it.
			return nil, fmt.Errorf("creating user: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("reading user: %w", err)
	}

	before := user.DeepCopy()
	inFlight, err := r.stillInFlight(ctx, user, t.event.Name)
	if err != nil {
		return nil, err
	}
	user.Status.InFlightEvents = inFlight
	user.Status = *fold.Apply(&user.Status, t.event, privacy, string(user.UID))
	setUserConditions(user)
	if apiequality.Semantic.DeepEqual(before.Status, user.Status) {
		return user, nil
	}
	if err := r.Status().Patch(ctx, user, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return nil, fmt.Errorf("updating user status: %w", err)
	}
	return user, nil
}

// stillInFlight returns the user's inFlightEvents without the events the
// cache shows finished (past Pending) or gone (retention, erasure), keeping
// the one being folded. A name is there only to tell a fold repeated after a
// crash that its event was counted, and an event past Pending is never
// folded again; pruned at each fold, the list holds about the events in
// flight, not the player's history. The cache may lag, so a finished event's
// name can stay one fold longer; it never shows an event finished before it
// was.
func (r *KidEventReconciler) stillInFlight(ctx context.Context, user *kidv1.KidUser, folding string) ([]string, error) {
	var kept []string
	for _, name := range user.Status.InFlightEvents {
		if name != folding {
			e := &kidv1.KidEvent{}
			err := r.Get(ctx, types.NamespacedName{Namespace: user.Namespace, Name: name}, e)
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

// setPhase writes the event's phase, user and action runs (one status write
// per event).
func (r *KidEventReconciler) setPhase(ctx context.Context, e *kidv1.KidEvent, phase kidv1.EventPhase, userRef *kidv1.LocalObjectReference, runs []kidv1.ActionRunStatus) error {
	before := e.DeepCopy()
	now := metav1.NewTime(r.Clock.Now())
	e.Status.Phase = phase
	e.Status.UserRef = userRef
	e.Status.Actions = runs
	if phase == kidv1.EventApplied {
		e.Status.AppliedAt = &now
	}
	// A JSON merge patch replaces the runs list whole, so it is written
	// only over the version it was computed from: a stale read can never
	// put a succeeded run back to Pending.
	if err := r.Status().Patch(ctx, e, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("updating event status: %w", err)
	}
	return nil
}
