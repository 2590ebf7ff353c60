package controllers

import (
	"context"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/cachemem"
	"github.com/kid-operator/kid-operator/internal/fold"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// A player's events queued together fold in one status write of the
// player's KidUser (design.md §2, "Folding a player's queued events
// together"). When the controllers are behind, a player's next events are
// stored before the first is folded; one user write per event was most of
// an event's cost (docs/benchmarks.md, "Journeys"). The pass that folds an
// event into a session's user folds with it the player's other Pending
// events that name that session, each counted once, and writes the user
// once. Each of those events still goes through its own pass, which finds
// it in the user's inFlightEvents (its fold then counts and writes
// nothing), matches its actions and marks it Applied: a batch spares the
// user writes, never an event's own pass.

// maxBatch bounds the events one pass folds ahead of their own pass. It
// keeps a fold's work bounded, and far from fold.MaxInFlightEvents: a name
// dropped from inFlightEvents would let its event be counted again.
const maxBatch = 16

// queuedWith returns the events to fold into user with e, the event its
// pass folds into the target t: the player's other Pending events of k-ID
// that name t's session, oldest signature first, decoded. Each is taken
// from the cache after user was read, and read from the API server when
// the cache may not show a write that applied it (ownWrites): only an event
// shown Pending is counted (the cache may show Pending an event applied
// since, whose name a later fold pruned from the user), and one the user
// holds in flight already is skipped (folded, not yet applied). An
// event that cannot be folded here (gone, no longer Pending, undecodable)
// is left to its own pass: a bad event never costs the others their fold.
func (r *KidEventReconciler) queuedWith(ctx context.Context, e *kidv1.KidEvent, t target, user *kidv1.KidUser) []*kidv1.KidEvent {
	if !t.batch {
		return nil
	}
	session := t.identity.ID
	cached, err := r.queued(ctx, e, session)
	if err != nil {
		// The batch is an economy: without it the event folds alone.
		ctrl.LoggerFrom(ctx).Error(err, "listing the player's queued events; folding the event alone")
		return nil
	}
	room := min(maxBatch, fold.MaxInFlightEvents-len(user.Status.InFlightEvents)-1)
	var out []*kidv1.KidEvent
	for i := range cached {
		c := &cached[i]
		if len(out) >= room {
			break
		}
		if slices.Contains(user.Status.InFlightEvents, c.Name) {
			continue
		}
		live := c
		if !r.written.current(ctx, c, r.liveReader()) {
			// The cache may not show a write that applied it: read it.
			live = &kidv1.KidEvent{}
			if err := r.liveReader().Get(ctx, client.ObjectKeyFromObject(c), live); err != nil {
				if !apierrors.IsNotFound(err) {
					ctrl.LoggerFrom(ctx).Error(err, "reading a queued event; leaving it to its own pass", "event", c.Name)
				}
				continue
			}
			if !batchable(live, e.Spec.ProductRef.Name, session) {
				continue
			}
		}
		if _, err := foldEvent(live); err != nil {
			continue // its own pass records it Ignored
		}
		out = append(out, live)
	}
	return out
}

// queuedIDs returns the ids named by the player's queued events (those of
// a session's user that queuedWith may fold with e, at most maxBatch), for
// the labels of the user's create (newUser): a player's first event often
// names fewer ids than the events queued behind it (an IN_PROGRESS linked
// to its session names no kuid; the PASS behind it does), and each id its
// create did not label would cost a label write (labelIDs). Every such
// event names the session, so its ids are the player's whether a batch or
// its own pass folds it. Read from the cache; nothing for another target.
func (r *KidEventReconciler) queuedIDs(ctx context.Context, e *kidv1.KidEvent, t target) []string {
	if t.identity.Kind != kidv1.IdentitySession {
		return nil
	}
	cached, err := r.queued(ctx, e, t.identity.ID)
	if err != nil {
		// The labels are an economy too: a missing one costs a write.
		return nil
	}
	var ids []string
	for i := range cached[:min(len(cached), maxBatch)] {
		ids = append(ids, cached[i].Spec.Subject.IDs()...)
	}
	return ids
}

// queued returns, from the cache, the events other than e that a batch may
// fold with it into the user of session (batchable), oldest signature
// first.
func (r *KidEventReconciler) queued(ctx context.Context, e *kidv1.KidEvent, session string) ([]kidv1.KidEvent, error) {
	product := e.Spec.ProductRef.Name
	cached, err := cachemem.EventsNaming(ctx, r, e.Namespace, kidv1.UserIDKey(product, kidv1.IdentitySession, session))
	if err != nil {
		return nil, err
	}
	cached = slices.DeleteFunc(cached, func(c kidv1.KidEvent) bool { return c.Name == e.Name || !batchable(&c, product, session) })
	slices.SortFunc(cached, bySignature)
	return cached, nil
}

// batchable reports whether an event may be folded ahead of its own pass
// into the user of session: a Pending event of k-ID (not a page's hint,
// which is never folded), of a type this version folds, about that session
// of the product, stored as first delivered (an enriched copy may belong
// to a stand-in too: enrichedInFlight), and not an erasure: an event folded
// after an erasure sees its player erased (reconcileErase), so an erasure
// is folded only in its own pass, never ahead of the events before it.
func batchable(e *kidv1.KidEvent, product, session string) bool {
	return (e.Status.Phase == "" || e.Status.Phase == kidv1.EventPending) &&
		e.DeletionTimestamp == nil &&
		e.Spec.Source != kidv1.SourceBrowser &&
		e.Spec.ProductRef.Name == product &&
		e.Spec.Subject.SessionID == session &&
		e.Generation <= 1 &&
		kid.Known(e.Spec.EventType) && !erases(e.Spec.EventType)
}

// erases reports whether an event type erases its player.
func erases(eventType string) bool {
	return eventType == kid.SessionDelete || eventType == kid.AccountDelete
}

// bySignature orders events by k-ID's signing time, then name.
func bySignature(a, b kidv1.KidEvent) int {
	if c := signedAt(&a).Compare(signedAt(&b)); c != 0 {
		return c
	}
	if a.Name < b.Name {
		return -1
	}
	if a.Name > b.Name {
		return 1
	}
	return 0
}

// signedAt is when k-ID signed an event, or when it was received if the
// signature carried no time.
func signedAt(e *kidv1.KidEvent) time.Time {
	if e.Spec.SignedAt != nil {
		return e.Spec.SignedAt.Time
	}
	return e.Spec.ReceivedAt.Time
}

// foldedAhead remembers the events a batch folded, from just before the
// user's write until their own pass: that pass need not read the event
// from the API server again (reconcileReread). The batch read it there,
// Pending, after it read the user, and the user's write holds its name in
// flight; only the event's own pass marks it past Pending, and the
// workqueue runs one pass of an event at a time. A pass takes its event's
// mark once: a later pass (its phase write failed, its runs are retried)
// reads the event again as any pass does. In memory, per process, like
// foldReplays: a restart forgets it, and a new leader reads every event.
type foldedAhead struct {
	mu     sync.Mutex
	events map[types.NamespacedName]struct{}
}

func (f *foldedAhead) mark(events []*kidv1.KidEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.events == nil {
		f.events = map[types.NamespacedName]struct{}{}
	}
	for _, e := range events {
		f.events[client.ObjectKeyFromObject(e)] = struct{}{}
	}
}

func (f *foldedAhead) unmark(events []*kidv1.KidEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range events {
		delete(f.events, client.ObjectKeyFromObject(e))
	}
}

// take reports whether a batch folded the event since its last pass, and
// forgets it.
func (f *foldedAhead) take(key types.NamespacedName) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.events[key]
	delete(f.events, key)
	return ok
}
