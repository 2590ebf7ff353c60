package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// A Pending event whose cached copy may be stale (ownWrites,
// kidevent_writes.go) is read from the API server before its fold
// (reconcileReread): the cache may show Pending an event applied since.
// That read is a round trip on the event's path, and a worker's
// events per second are its round trips' latency (docs/benchmarks.md,
// "e2e"). So the read is made while the pass goes on: nothing is written
// before its answer is in, but for one write, the create of a new player's
// session user, which the read overlaps. If the answer shows the cached
// copy was stale (or the event gone), the user made for it is deleted
// again, only if nothing was written to it since, and the fold starts over
// from the API server's copy.

// liveRead is a read of an event from the API server, in flight.
type liveRead struct {
	done  chan struct{}
	event *kidv1.KidEvent // nil: the event is gone
	err   error
}

// readLive starts reading e from the API server.
func (r *KidEventReconciler) readLive(ctx context.Context, e *kidv1.KidEvent) *liveRead {
	l := &liveRead{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.event, l.err = r.reread(ctx, e)
	}()
	return l
}

// awaitLive waits for the pass's read of its event, if one is in flight,
// and puts the API server's copy in the pass. It reports whether the
// cached copy the pass began with was stale (the API server has a newer
// version), and whether the event is gone.
func (r *KidEventReconciler) awaitLive(ctx context.Context, p *eventPass) (stale, gone bool, err error) {
	l := p.live
	if l == nil {
		return false, false, nil
	}
	p.live = nil
	select {
	case <-l.done:
	case <-ctx.Done():
		return false, false, ctx.Err()
	}
	if l.err != nil {
		return false, false, l.err
	}
	if l.event == nil {
		return false, true, nil
	}
	stale = l.event.ResourceVersion != p.event.ResourceVersion
	p.event = l.event
	return stale, false, nil
}

// createsAhead reports whether a pass creates the event's user before its
// fold, as the cache shows it missing, while the event's live read (if one
// was needed) is in flight: an event of k-ID about a session, whose only
// target is that session's user and which the cache does not hold.
func createsAhead(e *kidv1.KidEvent, targets []target) bool {
	return len(targets) == 1 && targets[0].identity.Kind == kidv1.IdentitySession && !targets[0].holdsEvent && !targets[0].uncounted &&
		e.Spec.Source != kidv1.SourceBrowser && kid.Known(e.Spec.EventType)
}

// createAhead creates the target's user if the cache of skeletons does not
// show it, and returns it (nil when it exists). The cache, not a live read,
// is asked: a user the cache shows exists, and one it does not show yet
// (another worker made it a moment ago) makes the create fail with
// AlreadyExists, an error as in applyTo, and the retry reads it. A live GET
// here was one more read for every new player (docs/benchmarks.md).
func (r *KidEventReconciler) createAhead(ctx context.Context, e *kidv1.KidEvent, product *kidv1.KidProduct, t target) (*kidv1.KidUser, error) {
	cached, err := userCache(r.Users, r.Client).Peek(ctx, types.NamespacedName{Namespace: e.Namespace, Name: t.name}, nil)
	if err != nil || cached {
		return nil, err
	}
	user := newUser(e, product, t, r.queuedIDs(ctx, e, t))
	if err := r.Create(ctx, user); err != nil {
		return nil, err
	}
	return user, nil
}

// undoCreate deletes a user created ahead for an event the API server
// showed was not Pending, unless anything was written to it since.
func (r *KidEventReconciler) undoCreate(ctx context.Context, u *kidv1.KidUser) {
	if u == nil {
		return
	}
	uid, rv := u.UID, u.ResourceVersion
	_ = r.Delete(ctx, u, client.Preconditions{UID: &uid, ResourceVersion: &rv})
}
