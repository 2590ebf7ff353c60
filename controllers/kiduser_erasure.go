package controllers

import (
	"context"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidapi"
)

// Never erase on one read (design.md §3, "Session sync"). A session that
// reads NOT_FOUND from /session/get, or answers with a session.status that
// is not ACTIVE (spec §4.2: "ACTIVE or DEL…"), is only suspected of being
// deleted. It is read again after confirmDelay, longer than any
// propagation delay, by its sessionId and, where the player's kuid is
// known, by the kuid too; only when both agree is its Session.Delete
// stored (source poll), and only while the product's erasure breaker
// (erasure_breaker.go) is closed. An answer that shows the session ACTIVE
// at any step clears the suspicion. Webhook deletions take none of this
// path: k-ID sent them on purpose.

const (
	// confirmDelay is how long after a session first read as gone it is
	// read again: far past the vendor's 1-2 s of propagation and our own
	// propagationGrace, and short enough that the erasure comes within
	// two minutes (the requeue adds up to 10 %, and the slot a little).
	confirmDelay = time.Minute
	// heldRecheck is how often a player whose erasure the breaker holds
	// reads its session again (a person resuming wakes it at once).
	heldRecheck = 5 * time.Minute
)

// erasureMemory remembers, per KidUser, where its session stands on the
// way to an erasure learned from the API. It is in memory: after a restart
// a suspicion starts again from its first read, which only delays an
// erasure, never hastens one.
type erasureMemory struct {
	mu sync.Mutex
	m  map[types.NamespacedName]erasureState
}

type erasureState struct {
	uid types.UID
	// suspectedAt is when a read first said the session is gone.
	suspectedAt time.Time
	// idAgreed is set when the confirming read by sessionId agreed; the
	// read by kuid is left.
	idAgreed bool
	// heldAt is when the breaker held the confirmed erasure.
	heldAt time.Time
}

func (m *erasureMemory) get(u *kidv1.KidUser) erasureState {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.m[client.ObjectKeyFromObject(u)]; s.uid == u.UID {
		return s
	}
	return erasureState{}
}

func (m *erasureMemory) set(u *kidv1.KidUser, s erasureState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := client.ObjectKeyFromObject(u)
	if s == (erasureState{}) {
		delete(m.m, key)
		return
	}
	if m.m == nil {
		m.m = map[types.NamespacedName]erasureState{}
	}
	s.uid = u.UID
	m.m[key] = s
}

func (m *erasureMemory) forget(key types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, key)
}

// sessionActive reads session.status as spec §4.2 gives it: ACTIVE, or
// the deleted value ("DEL…", cut off in the copy we have). Anything but
// ACTIVE says the session is not there to use; an answer without a status
// says nothing against it.
func sessionActive(status string) bool {
	return status == "" || strings.EqualFold(status, "ACTIVE")
}

// erasureDue says, for a user whose session is suspected of being deleted,
// whether it should be read now, and if not, how long until it should.
// suspected is false when no suspicion stands and the usual schedule
// applies.
func (r *KidUserReconciler) erasureDue(product *kidv1.KidProduct, user *kidv1.KidUser, now time.Time) (suspected, due bool, wait time.Duration) {
	e := r.erasures.get(user)
	switch {
	case e.suspectedAt.IsZero():
		return false, false, 0
	case e.idAgreed:
		return true, true, 0
	case !e.heldAt.IsZero():
		if r.APIClients.erasures.resumedSince(productKey(product), e.heldAt) {
			return true, true, 0
		}
		if d := e.heldAt.Add(heldRecheck).Sub(now); d > 0 {
			return true, false, d
		}
		return true, true, 0
	}
	if d := e.suspectedAt.Add(confirmDelay).Sub(now); d > 0 {
		return true, false, d
	}
	return true, true, 0
}

// sessionAnswered clears a suspicion: k-ID answered the session.
func (r *KidUserReconciler) sessionAnswered(product *kidv1.KidProduct, user *kidv1.KidUser) {
	if r.erasures.get(user).suspectedAt.IsZero() {
		return
	}
	sessionSyncsTotal.WithLabelValues(productLabel(product), "not-confirmed").Inc()
	r.erasures.set(user, erasureState{})
	r.APIClients.erasures.release(productKey(product), client.ObjectKeyFromObject(user))
}

// sessionGone handles a read that says the session is gone: the first
// makes a suspicion (counted by the product's breaker), a later one, after
// confirmDelay, goes on to the read by kuid.
func (r *KidUserReconciler) sessionGone(ctx context.Context, c *APIClient, product *kidv1.KidProduct, user *kidv1.KidUser, p *apiPass) (time.Duration, error) {
	e := r.erasures.get(user)
	if e.suspectedAt.IsZero() {
		r.erasures.set(user, erasureState{suspectedAt: p.now})
		r.readSession(user, p.now, changeTime(user))
		sessionSyncsTotal.WithLabelValues(productLabel(product), "suspected").Inc()
		tripped, err := r.APIClients.erasures.suspect(productKey(product), client.ObjectKeyFromObject(user), p.now, func() (int, error) {
			return r.productSessions(ctx, product)
		})
		if err != nil {
			return 0, err
		}
		if tripped {
			ctrl.LoggerFrom(ctx).Info("erasures from k-ID's API held: too many sessions read NOT_FOUND", "product", product.Name)
			r.APIClients.wakeProduct(productKey(product))
		}
		return wait.Jitter(confirmDelay, waitJitter), nil
	}
	r.erasures.set(user, erasureState{suspectedAt: e.suspectedAt, idAgreed: true})
	r.readSession(user, p.now, changeTime(user))
	return r.confirmByKUID(ctx, c, product, user, p, true)
}

// confirmByKUID asks k-ID for the player's session by kuid, where it is
// known, and erases when that agrees too and the breaker lets it. slot
// says whether a rate-limiter slot must be taken first (one was for the
// read that led here).
func (r *KidUserReconciler) confirmByKUID(ctx context.Context, c *APIClient, product *kidv1.KidProduct, user *kidv1.KidUser, p *apiPass, slot bool) (time.Duration, error) {
	st := &user.Status
	// accountGone: k-ID knows no session of the player's kuid at all.
	accountGone := false
	if st.KUID != "" {
		if slot {
			// A confirmation keeps to its own schedule: the resync lane.
			if d := r.takeSlot(c, user, p, kidapi.Resync); d > 0 {
				return d, nil
			}
		}
		got, err := c.WithReservation().GetSessionByKUID(ctx, st.KUID, "")
		switch {
		case kidapi.IsNotFound(err):
			// Agrees: k-ID knows no session of the player.
			accountGone = true
		case err != nil:
			return r.apiFailed(ctx, c, product, user, p, "session", err), nil
		case got.SessionID == st.SessionID && sessionActive(got.Status):
			// k-ID still has the session under the player: the reads
			// by sessionId were wrong.
			r.sessionAnswered(product, user)
			return 0, nil
		}
		// Otherwise it agrees: the player's newest session is another
		// one (re-consent makes a new id), or this one, not ACTIVE.
	}
	e := r.erasures.get(user)
	if r.APIClients.erasures.hold(product, client.ObjectKeyFromObject(user)) {
		sessionSyncsTotal.WithLabelValues(productLabel(product), "held").Inc()
		r.erasures.set(user, erasureState{suspectedAt: e.suspectedAt, heldAt: p.now})
		return wait.Jitter(heldRecheck, waitJitter), nil
	}
	// k-ID no longer knows the session, twice over and a minute apart:
	// it was deleted, and its Session.Delete webhook did not reach us.
	// Store that event, so the fold erases as it would for the webhook.
	if err := r.storeDeletion(ctx, product, user, accountGone); err != nil {
		return 0, err
	}
	sessionSyncsTotal.WithLabelValues(productLabel(product), "deleted").Inc()
	r.erasures.set(user, erasureState{})
	r.APIClients.erasures.release(productKey(product), client.ObjectKeyFromObject(user))
	return 0, nil
}

// storeDeletion stores what k-ID's confirmed answers say was deleted:
// this session (Session.Delete) and, when no session is left under the
// player's kuid, the account too (Account.Delete), which erases every
// player of the kuid at once, so that the account's other sessions need
// not wait for their own resync and confirmation.
func (r *KidUserReconciler) storeDeletion(ctx context.Context, product *kidv1.KidProduct, user *kidv1.KidUser, accountGone bool) error {
	st := &user.Status
	if _, err := r.storePolled(ctx, product, kid.SessionDelete, map[string]any{"id": st.SessionID}); err != nil {
		return err
	}
	if !accountGone {
		return nil
	}
	_, err := r.storePolled(ctx, product, kid.AccountDelete, map[string]any{"kuid": st.KUID})
	return err
}

// productSessions counts the product's players with a session k-ID
// confirmed and not erased: the whole the breaker's share is taken of.
func (r *KidUserReconciler) productSessions(ctx context.Context, product *kidv1.KidProduct) (int, error) {
	n := 0
	err := r.users().EachOfProduct(ctx, product.Namespace, product.Name, func(u *kidv1.KidUser) {
		if u.Spec.Identity.Kind == kidv1.IdentitySession && u.Status.SessionID != "" && u.Status.ErasedAt == nil {
			n++
		}
	})
	return n, err
}
