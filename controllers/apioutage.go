package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// After an outage of the API server, a product's sessions are read again
// early, in the urgent lane: the receiver's spool kept what k-ID delivered,
// but a delivery k-ID gave up on (the spool full, the receiver down) is
// found only by asking k-ID. The signal is the receiver's: it marks each
// event it spooled with kid.dev/spooled-at (it can create events, nothing
// else), and folding such an event tells the product's players that every
// session last read before that time is due now (sessionDue).

// outageWakeSpacing bounds how often one product's players are woken for
// one outage: its spooled events are folded in a burst, each a little
// later than the one before.
const outageWakeSpacing = time.Minute

// apiOutages remembers, per product, the latest time the receiver spooled
// an event (in the leader's memory: a restart forgets it, and its own
// resync spread takes over).
type apiOutages struct {
	mu    sync.Mutex
	at    map[types.NamespacedName]time.Time
	woken map[types.NamespacedName]time.Time
}

// spooled records that the receiver spooled an event of product at t, and
// reports whether the product's players should be woken to read again.
func (o *apiOutages) spooled(product types.NamespacedName, t time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.at == nil {
		o.at, o.woken = map[types.NamespacedName]time.Time{}, map[types.NamespacedName]time.Time{}
	}
	if !t.After(o.at[product]) {
		return false
	}
	o.at[product] = t
	if w := o.woken[product]; !w.IsZero() && t.Sub(w) < outageWakeSpacing {
		return false
	}
	o.woken[product] = t
	return true
}

// since is the latest time product's receiver spooled an event; zero when
// none was.
func (o *apiOutages) since(product types.NamespacedName) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.at[product]
}

// Spooled tells the product's users that the receiver spooled one of its
// events at t (kid.dev/spooled-at): each session read before t is read
// again, urgently.
func (s *APIClients) Spooled(product types.NamespacedName, t time.Time) {
	if s.outages.spooled(product, t) {
		s.send(s.reread, product)
	}
}

// resyncSince is the time before which a product's sessions were read
// during or before an outage of the API server, and are read again.
func (s *APIClients) resyncSince(product types.NamespacedName) time.Time {
	if s == nil {
		return time.Time{}
	}
	return s.outages.since(product)
}

// noteSpooled passes a folded event's kid.dev/spooled-at to the product's
// users (APIClients.Spooled).
func (r *KidEventReconciler) noteSpooled(ctx context.Context, e *kidv1.KidEvent) {
	v, ok := e.Annotations[kidv1.SpooledAtAnnotation]
	if !ok || r.APIClients == nil {
		return
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		ctrl.LoggerFrom(ctx).Info("ignoring a malformed annotation", "annotation", kidv1.SpooledAtAnnotation)
		return
	}
	r.APIClients.Spooled(types.NamespacedName{Namespace: e.Namespace, Name: e.Spec.ProductRef.Name}, t)
}
