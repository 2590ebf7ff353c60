package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidapi"
	"github.com/kid-operator/kid-operator/internal/secrets"
)

// KidProductReconciler resolves a product's webhook Secret, publishes its
// webhook path and Ready condition, tracks when its last events arrived, and
// runs the retention sweep of its finished KidEvents.
type KidProductReconciler struct {
	client.Client
	Recorder events.EventRecorder
	// Clock is the controller's time (retention, the API key's probe).
	// SetupWithManager sets the real clock when it is nil; tests pass a
	// fake one. The Secret re-check runs on real time, as the requeue
	// timers do.
	Clock clock.PassiveClock
	// APIClients are the products' k-ID API clients; nil leaves every
	// product on webhooks alone.
	APIClients *APIClients
	// Secrets reads the Secrets products name (one get each, kept for a
	// short TTL, shared with the receiver). Nil reads them with Client,
	// which must then not cache Secrets.
	Secrets *secrets.Cache
	// SecretRecheck is how often every Secret a product names is read
	// again (with up to as much again of jitter), so that a change is seen
	// without watching Secrets; 0 means DefaultSecretRecheck.
	SecretRecheck time.Duration
}

// DefaultSecretRecheck is how often, at the least, the Secrets products name
// are read again: a Secret changed or deleted is seen within one to two of
// these (or sooner, when the receiver or a sync re-reads it first).
const DefaultSecretRecheck = time.Minute

// The operator reads the Secrets its products name, one get each, and
// never lists or watches Secrets: it has no business holding the others.
// +kubebuilder:rbac:groups=kid.dev,resources=kidproducts,verbs=get;list;watch
// +kubebuilder:rbac:groups=kid.dev,resources=kidproducts/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get

// SetupWithManager registers the controller: products (spec changes only),
// stored or finished events, and changes of the Secrets they name (seen by
// re-reading them, not by a watch).
func (r *KidProductReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	b := ctrl.NewControllerManagedBy(mgr).
		For(&kidv1.KidProduct{}, builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, resumeErasuresChanged))).
		Watches(&kidv1.KidEvent{}, wakeProductOfEvent)
	if r.Secrets != nil {
		b = b.WatchesRawSource(source.Func(r.secretChanges))
	}
	if r.APIClients != nil {
		// k-ID refused a product's key during a sync or a poll.
		b = b.WatchesRawSource(source.Channel(r.APIClients.Wakes(), &handler.EnqueueRequestForObject{}))
	}
	return b.Named("kidproduct").Complete(r)
}

// eventWakeDelay is how long an event's product waits before its pass over
// its events. The queue holds one request per product, so a burst of events
// makes one pass, not one per event; the pass reads every event of the
// product, and lastEventTime is at most this late.
const eventWakeDelay = time.Second

// wakeProductOfEvent wakes an event's product, a little later, when the
// event is stored (lastEventTime) and when its phase changes (a finished
// event may be due for retention), and when an event still Pending is
// deleted (the backlog gauges, which a phase change updates otherwise).
var wakeProductOfEvent = handler.Funcs{
	CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		addProductOf(e.Object, q)
	},
	UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		o, ok1 := e.ObjectOld.(*kidv1.KidEvent)
		n, ok2 := e.ObjectNew.(*kidv1.KidEvent)
		if ok1 && ok2 && o.Status.Phase != n.Status.Phase {
			addProductOf(n, q)
		}
	},
	DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		// Retention deletes finished events only, in the product's own
		// pass: those need no second pass. A Pending one goes when the
		// fold finds its player erased.
		if ev, ok := e.Object.(*kidv1.KidEvent); ok && eventPending(ev) {
			addProductOf(ev, q)
		}
	},
}

func addProductOf(o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if e, ok := o.(*kidv1.KidEvent); ok {
		q.AddAfter(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: e.Namespace, Name: e.Spec.ProductRef.Name}}, eventWakeDelay)
	}
}

// secretChanges is the source that stands in for a watch on Secrets: it
// wakes the products that name a Secret whenever a read of it (by this
// controller, the receiver or the API clients, which share the cache) finds
// it created, changed or deleted, and it re-reads every Secret a product
// names once per SecretRecheck, so that a change nobody else read is seen
// too. Only the Secrets products name are read.
func (r *KidProductReconciler) secretChanges(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	r.Secrets.OnChange(func(key types.NamespacedName) {
		if ctx.Err() != nil {
			return
		}
		for _, req := range r.productsOfSecret(ctx, key) {
			q.Add(req)
		}
	})
	go r.recheckSecrets(ctx)
	return nil
}

func (r *KidProductReconciler) secretRecheck() time.Duration {
	if r.SecretRecheck > 0 {
		return r.SecretRecheck
	}
	return DefaultSecretRecheck
}

// recheckSecrets reads every Secret a product names again, each time it is
// older than SecretRecheck, every one to two SecretRecheck, until ctx ends.
// A read that finds a change wakes the products (secretChanges).
func (r *KidProductReconciler) recheckSecrets(ctx context.Context) {
	log := ctrl.LoggerFrom(ctx).WithName("secret-recheck")
	every := r.secretRecheck()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait.Jitter(every, 1)):
		}
		var products kidv1.KidProductList
		if err := r.List(ctx, &products, client.UnsafeDisableDeepCopy); err != nil {
			log.Error(err, "listing products")
			continue
		}
		seen := map[types.NamespacedName]bool{}
		for i := range products.Items {
			p := &products.Items[i]
			for _, name := range r.secretsToRecheck(p) {
				key := types.NamespacedName{Namespace: p.Namespace, Name: name}
				if seen[key] || ctx.Err() != nil {
					continue
				}
				seen[key] = true
				if _, err := r.Secrets.GetWithin(ctx, key, every); err != nil && !apierrors.IsNotFound(err) {
					log.Info("re-reading a product's secret failed", "product", client.ObjectKeyFromObject(p), "error", err.Error())
				}
			}
		}
	}
}

// secretsToRecheck are the Secrets of p that recheckSecrets reads: its
// webhook's, and its API key's unless the key may not go to its base URL
// (APIClients.MayReadKey). Such a Secret was read every SecretRecheck,
// though For refuses to (the refused-URL spec failed now and then).
func (r *KidProductReconciler) secretsToRecheck(p *kidv1.KidProduct) []string {
	names := secretNames(p)
	if len(names) > 1 && r.APIClients != nil && !r.APIClients.MayReadKey(p) {
		names = names[:1]
	}
	return names
}

// productsOfSecret lists the products that name a Secret.
func (r *KidProductReconciler) productsOfSecret(ctx context.Context, key types.NamespacedName) []reconcile.Request {
	var products kidv1.KidProductList
	if err := r.List(ctx, &products, client.InNamespace(key.Namespace), client.MatchingFields{secretIndex: key.Name}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing products of a secret")
		return nil
	}
	out := make([]reconcile.Request, 0, len(products.Items))
	for _, p := range products.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
	}
	return out
}

// readSecret returns the data of a Secret a product names, for the webhook
// key (KidProductReconciler) and the API key (APIClients) alike. It reads
// from the secrets cache when there is one: one get per TTL, shared with the
// receiver, however often products and users reconcile (every KidUser
// reconcile asks for its product's API client). Only a Secret labelled
// kidv1.SecretLabel is used: one without it is a *secrets.NotLabelledError.
// Without a cache it gets
// the Secret through r, which must then not cache Secrets: the operator may
// only get them, not list or watch.
func readSecret(ctx context.Context, cache *secrets.Cache, r client.Reader, key types.NamespacedName) (map[string][]byte, error) {
	if cache != nil {
		s, err := cache.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		return s.Data, nil
	}
	s := &corev1.Secret{}
	if err := r.Get(ctx, key, s); err != nil {
		return nil, err
	}
	if err := secrets.Check(s); err != nil {
		return nil, err
	}
	return s.Data, nil
}

// errConfig is a problem only the user can fix: the product stalls and is
// not retried until something it watches changes.
type errConfig struct {
	reason string
	msg    string
}

func (e *errConfig) Error() string { return e.msg }

// Reconcile brings one product's status up to date. Its status is written
// once, at the end, and only if it changed.
func (r *KidProductReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	product := &kidv1.KidProduct{}
	if err := r.Get(ctx, req.NamespacedName, product); err != nil {
		if apierrors.IsNotFound(err) {
			// Labels of products that are gone are dropped, so that the
			// metrics stay bounded by the products that exist.
			forgetProductSeries(req.String())
			forgetProductGauges(req.NamespacedName)
			if r.APIClients != nil {
				r.APIClients.erasures.forget(req.NamespacedName)
				r.APIClients.Forget(req.NamespacedName)
				r.APIClients.activity.forget(req.NamespacedName)
			}
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := product.DeepCopy()
	defer func() {
		if err := r.patchStatus(ctx, before, product); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()

	product.Status.WebhookPath = kidv1.WebhookPath(product.Namespace, product.Name)
	secretErr := r.reconcileSecret(ctx, product)
	next, err := r.reconcileEvents(ctx, product)
	if err != nil {
		return ctrl.Result{}, err
	}
	var cfg *errConfig
	switch {
	case errors.As(secretErr, &cfg):
		r.setReady(product, metav1.ConditionFalse, cfg.reason, cfg.msg)
		meta.SetStatusCondition(&product.Status.Conditions, metav1.Condition{Type: kidv1.StalledCondition, Status: metav1.ConditionTrue, Reason: cfg.reason, Message: cfg.msg, ObservedGeneration: product.Generation})
	case secretErr != nil:
		return ctrl.Result{}, secretErr
	default:
		r.setReady(product, metav1.ConditionTrue, kidv1.SucceededReason, "receiving webhooks at "+product.Status.WebhookPath)
		meta.RemoveStatusCondition(&product.Status.Conditions, kidv1.StalledCondition)
	}
	productReady.WithLabelValues(product.Namespace, product.Name).Set(boolGauge(meta.IsStatusConditionTrue(product.Status.Conditions, kidv1.ReadyCondition)))
	apiNext, err := r.reconcileAPI(ctx, product)
	if err != nil {
		return ctrl.Result{}, err
	}
	if apiNext > 0 && (next == 0 || apiNext < next) {
		next = apiNext
	}
	r.reconcileErasures(product)
	meta.RemoveStatusCondition(&product.Status.Conditions, kidv1.ReconcilingCondition)
	product.Status.ObservedGeneration = product.Generation
	if next > 0 {
		// Up to 10 % of jitter, so that many products do not sweep in
		// lockstep.
		next = wait.Jitter(next, 0.1)
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

// reconcileSecret checks that the webhook Secret exists and holds a usable
// key. It returns an *errConfig for what the user must fix.
func (r *KidProductReconciler) reconcileSecret(ctx context.Context, p *kidv1.KidProduct) error {
	name := p.Spec.Webhook.SecretRef.Name
	data, err := readSecret(ctx, r.Secrets, r.Client, types.NamespacedName{Namespace: p.Namespace, Name: name})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return &errConfig{reason: kidv1.SecretNotFoundReason, msg: fmt.Sprintf("webhook Secret %q not found; deliveries are answered 503", name)}
		}
		if secrets.IsNotLabelled(err) {
			return &errConfig{reason: kidv1.SecretNotLabelledReason, msg: "webhook " + err.Error() + "; deliveries are answered 503"}
		}
		return fmt.Errorf("reading webhook secret: %w", err)
	}
	if len(kid.KeysFromSecretData(data)) == 0 {
		return &errConfig{reason: kidv1.SecretKeyMissingReason, msg: fmt.Sprintf("webhook Secret %q holds no non-empty key; deliveries are answered 503", name)}
	}
	return nil
}

// reconcileEvents records the newest event times and deletes the finished
// events retention lets go. It returns when the next event expires.
func (r *KidProductReconciler) reconcileEvents(ctx context.Context, p *kidv1.KidProduct) (time.Duration, error) {
	var list kidv1.KidEventList
	// The cache's objects are read, never written: no need to copy them.
	if err := r.List(ctx, &list, client.InNamespace(p.Namespace), client.MatchingFields{eventProductIndex: p.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return 0, fmt.Errorf("listing events: %w", err)
	}
	events := make([]*kidv1.KidEvent, 0, len(list.Items))
	pendingCount, oldestPending, failedRuns := 0, time.Time{}, 0
	for i := range list.Items {
		e := &list.Items[i]
		events = append(events, e)
		t := e.Spec.ReceivedAt
		if p.Status.LastEventTime == nil || p.Status.LastEventTime.Before(&t) {
			p.Status.LastEventTime = t.DeepCopy()
		}
		if e.Spec.EventType == kid.TestEvent && (p.Status.LastTestEventTime == nil || p.Status.LastTestEventTime.Before(&t)) {
			p.Status.LastTestEventTime = t.DeepCopy()
		}
		for _, run := range e.Status.Actions {
			if run.Phase == kidv1.RunFailed {
				failedRuns++
			}
		}
		if eventPending(e) {
			pendingCount++
			if oldestPending.IsZero() || t.Time.Before(oldestPending) {
				oldestPending = t.Time
			}
		}
	}
	label := client.ObjectKeyFromObject(p).String()
	eventsPending.WithLabelValues(label).Set(float64(pendingCount))
	oldest := 0.0
	if !oldestPending.IsZero() {
		oldest = float64(oldestPending.UnixNano()) / 1e9
	}
	oldestPendingTimestamp.WithLabelValues(label).Set(oldest)
	productFailedRuns.WithLabelValues(p.Namespace, p.Name).Set(float64(failedRuns))

	byAge, byCount, next := retentionOf(p).expired(events, r.Clock.Now())
	deleted := 0
	for reason, batch := range map[string][]*kidv1.KidEvent{"age": byAge, "count": byCount} {
		for _, e := range batch {
			if deleted == maxDeletesPerPass {
				return time.Second, nil
			}
			if err := r.Delete(ctx, e, client.Preconditions{UID: &e.UID}); client.IgnoreNotFound(err) != nil {
				return 0, fmt.Errorf("deleting expired event: %w", err)
			}
			retentionDeletedTotal.WithLabelValues(reason).Inc()
			deleted++
		}
	}
	return next, nil
}

// eventPending reports whether an event is stored and not yet folded (the
// receiver creates it without a phase).
func eventPending(e *kidv1.KidEvent) bool {
	return e.Status.Phase == "" || e.Status.Phase == kidv1.EventPending
}

// unreachableRecheck is how soon a product whose API k-ID did not answer is
// checked again.
const unreachableRecheck = time.Minute

// reconcileAPI sets APIReady: whether the product can call k-ID's REST API,
// and with which of its Secret's keys. It is False with reason Failing while
// the product's breaker is open, and sends the breaker's probe when it is
// due (apibreaker.go); when APIReady turns True again, the product's paused
// users are woken. It also copies the product's status.api from what its
// players' reconciles summed (apiactivity.go). It returns when to look
// again.
func (r *KidProductReconciler) reconcileAPI(ctx context.Context, p *kidv1.KidProduct) (time.Duration, error) {
	wasReady := meta.IsStatusConditionTrue(p.Status.Conditions, kidv1.APIReadyCondition)
	set := func(status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{
			Type: kidv1.APIReadyCondition, Status: status, Reason: reason, Message: msg, ObservedGeneration: p.Generation,
		})
	}
	if p.Spec.API == nil || r.APIClients == nil {
		if r.APIClients != nil {
			r.APIClients.Forget(client.ObjectKeyFromObject(p))
		}
		p.Status.API = nil
		set(metav1.ConditionFalse, kidv1.NotConfiguredReason, "no spec.api: the product works on webhooks alone; session sync, recovery and the confirmation of browser events are off")
		return 0, nil
	}
	// Kept to the minute by the KidUser controller, which wakes the
	// product when it changes (apiactivity.go).
	p.Status.API = r.APIClients.activity.status(client.ObjectKeyFromObject(p))
	c, err := r.APIClients.For(ctx, r.Client, p)
	if err == nil && c.Unauthorized() && r.Secrets != nil {
		// k-ID refused the key: the Secret may already hold a new one that
		// the cached copy predates. Read it again (at most once a second).
		key := types.NamespacedName{Namespace: p.Namespace, Name: p.Spec.API.SecretRef.Name}
		if _, reread, rerr := r.Secrets.Refresh(ctx, key); rerr == nil && reread {
			c, err = r.APIClients.For(ctx, r.Client, p)
		}
	}
	var cfg *errConfig
	switch {
	case errors.As(err, &cfg):
		set(metav1.ConditionFalse, cfg.reason, cfg.msg)
		return 0, nil
	case err != nil:
		return 0, err
	}
	now := r.Clock.Now()
	err = c.Probe(ctx, now)
	if open, until, cause := c.Paused(now); open && !kidapi.IsUnauthorized(err) {
		set(metav1.ConditionFalse, kidv1.FailingReason, failingMessage(cause))
		return max(until, time.Second), nil
	}
	switch {
	case err == nil:
		// The Secret key's name, never its value: which of a rotation's
		// two keys k-ID accepts.
		set(metav1.ConditionTrue, kidv1.APIReadyReason, fmt.Sprintf("k-ID accepts the API key %q of Secret %q; session sync and recovery are on", c.KeyName(p.Spec.API), p.Spec.API.SecretRef.Name))
		if !wasReady {
			r.APIClients.Resumed(client.ObjectKeyFromObject(p))
		}
		return 0, nil
	case kidapi.IsUnauthorized(err):
		set(metav1.ConditionFalse, kidv1.UnauthorizedReason, fmt.Sprintf("k-ID refused the API key in Secret %q (401 to key %q, and to %q where set); session sync and recovery are paused until it changes", p.Spec.API.SecretRef.Name, p.Spec.API.SecretRef.Key, p.Spec.API.NextKeyName()))
		return probeInterval, nil
	default:
		set(metav1.ConditionFalse, kidv1.UnreachableReason, "k-ID's API did not answer: "+err.Error())
		return unreachableRecheck, nil
	}
}

func (r *KidProductReconciler) setReady(p *kidv1.KidProduct, status metav1.ConditionStatus, reason, msg string) {
	old := meta.FindStatusCondition(p.Status.Conditions, kidv1.ReadyCondition)
	meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{
		Type: kidv1.ReadyCondition, Status: status, Reason: reason, Message: msg, ObservedGeneration: p.Generation,
	})
	if r.Recorder == nil || (old != nil && old.Status == status && old.Reason == reason) {
		return
	}
	eventType := "Normal"
	if status != metav1.ConditionTrue {
		eventType = "Warning"
	}
	r.Recorder.Eventf(p, nil, eventType, reason, "Reconcile", "%s", msg)
}

func (r *KidProductReconciler) patchStatus(ctx context.Context, before, after *kidv1.KidProduct) error {
	if apiequality.Semantic.DeepEqual(before.Status, after.Status) {
		return nil
	}
	if err := r.Status().Patch(ctx, after, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("updating product status: %w", err)
	}
	return nil
}
