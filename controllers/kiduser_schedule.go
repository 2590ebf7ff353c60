package controllers

import (
	"context"
	"errors"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kidapi"
)

// What the KidUser controller asks k-ID's REST API (design.md §3, "Session
// sync" and "Recovery"):
//   - a player's session, with its etag: when it first appears (a challenge
//     passed), when a parent changed its permissions, and once per resync
//     interval. An unchanged session is a 304 and costs no write; a session
//     k-ID no longer knows becomes a Session.Delete event, with the same
//     erasure as the webhook.
//   - a pending challenge or verification, on a backoff from when it was
//     first seen, until its horizon. A changed status becomes an event named
//     by the same identity rule as the webhook, so whichever of the two
//     arrives second is a duplicate.
//   - a passed verification, once per resync interval, in case k-ID
//     revoked it (kiduser_revocation.go).
//
// Nothing here holds a worker for k-ID longer than a call: a user that must
// wait for the product's rate limiter books its slot and is requeued until
// then (takeSlot), so a backlog of one product costs two reconciles per
// call, not a queue that spins, and leaves the workers to every other
// namespace. Slots are booked in two lanes (kidapi.Lanes): a read something
// just asked for goes ahead of the periodic resyncs. The calls themselves
// run on the kiduser-api controller's workers (ReadConcurrency), apart from
// the KidUser controller's own.
//
// This file holds the schedule: reconcileAPI, the entry point, which runs
// the session sync (kiduser_sessionsync.go) and the recovery
// (kiduser_recovery.go) and requeues at the sooner of their waits; the
// memory of when each user was last asked (pollMemory); the product's rate
// limiter slots (takeSlot); and the waits after a failed call (apiFailed):
// the player's own backoff and the product's breaker (apibreaker.go).

const (
	// refusedRecheck is how soon a user retries after k-ID refused the
	// product's key; the product's own probe clears the refusal sooner.
	refusedRecheck = 5 * time.Minute
	// propagationRetry is the wait after a read that hit the propagation
	// delay (within propagationGrace of the session's PASS).
	propagationRetry = 2 * time.Second
	// waitJitter is the most added to a wait (10 %, by wait.Jitter), so
	// that users told to wait together do not all come back in the same
	// instant.
	waitJitter = 0.1
)

// pollMemory remembers, per KidUser object, when k-ID was last asked about
// it. It is in memory on purpose: a read that finds nothing new must cost no
// write, and after a restart every due user is asked once more, which is
// what recovery wants anyway (the sessions' resync spread over one interval:
// resyncDue).
type pollMemory struct {
	mu sync.Mutex
	m  map[types.NamespacedName]pollState
	// activity, if set, keeps each product's sum of its users' parts
	// (apiactivity.go) as they change here.
	activity *apiActivity
}

type pollState struct {
	uid           types.UID // a user deleted and made again starts afresh
	sessionReadAt time.Time // the last read of the session that k-ID answered
	polledAt      time.Time // the last poll of the pending challenge or verification
	// unwritten is a read of the session not yet written (its write lost
	// an optimistic-lock race with a fold).
	unwritten *kidv1.KidUserStatus
	// handledRequest is the kid.dev/requested-at value last answered.
	handledRequest string
	// slotAt is when the call this user booked with the product's rate
	// limiter is due, in slotLane; zero when it holds none. bookedAt is
	// when the user first booked for the call it waits to make (for
	// kid_api_slot_wait_seconds), zero when it waits for none.
	slotAt   time.Time
	slotLane kidapi.Lane
	bookedAt time.Time
	// failures counts the user's failed calls in a row, and retryAt is
	// when its backoff (failureBackoff) lets it call again; a call k-ID
	// answers clears both.
	failures int
	retryAt  time.Time
	// The event times the last read answered for: a permission change or
	// a consent signed later asks for another read. (k-ID signs in whole
	// seconds, so comparing them with the read's own time would miss a
	// change made in the second of the read.)
	readForChange, readForConsent time.Time
	// part is what the user adds to its product's status.api
	// (apiactivity.go): when its session's periodic read is due, and
	// whether recovery gave up on it.
	part userPart
	// asked is set once the kiduser-api controller has reconciled the
	// user, and wakeAt is when that reconcile said it is next due (zero:
	// not until it changes): the sweeps enqueue it then (dueOf).
	asked bool
	// paused is set while the user's last pass stopped because its
	// product's calls could not go out (its API not configured, its key
	// refused, its breaker open): the product's resume wakes these users
	// (pausedUsersOf). Kept beside asked, it costs the entry no bytes.
	paused bool
	wakeAt time.Time
	// rechecked is when each passed verification was last read again
	// (kiduser_revocation.go), by id; read and written only under the
	// memory's lock (rechecked, update).
	rechecked map[string]time.Time
}

func (p *pollMemory) get(u *kidv1.KidUser) pollState {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.m[client.ObjectKeyFromObject(u)]; s.uid == u.UID {
		return s
	}
	return pollState{}
}

func (p *pollMemory) update(u *kidv1.KidUser, f func(*pollState)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[types.NamespacedName]pollState{}
	}
	key := client.ObjectKeyFromObject(u)
	s := p.m[key]
	before := s.part
	if s.uid != u.UID {
		s = pollState{uid: u.UID}
	}
	f(&s)
	p.m[key] = s
	if p.activity != nil {
		p.activity.move(key.Namespace, before, s.part)
	}
}

// woke records when a reconcile at now said the user is next due (after
// next; 0: not until it changes). A user with nothing due and no memory
// costs no entry: dueOf finds nothing due for it either.
func (p *pollMemory) woke(u *kidv1.KidUser, now time.Time, next time.Duration) {
	mem := p.get(u)
	if next <= 0 && mem.uid != u.UID {
		return
	}
	var at time.Time
	if next > 0 {
		at = now.Add(next)
	}
	if mem.asked && mem.wakeAt.Equal(at) {
		return
	}
	p.update(u, func(s *pollState) { s.asked, s.wakeAt = true, at })
}

// setPaused records whether the user's pass stopped for its product's
// calls (pollState.paused). A user with no memory is not paused, so
// clearing costs it no entry.
func (p *pollMemory) setPaused(u *kidv1.KidUser, paused bool) {
	if p.get(u).paused == paused {
		return
	}
	p.update(u, func(s *pollState) { s.paused = paused })
}

// rechecked is when the user's passed verification id was last read again
// (zero: not since the start).
func (p *pollMemory) rechecked(u *kidv1.KidUser, id string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.m[client.ObjectKeyFromObject(u)]; s.uid == u.UID {
		return s.rechecked[id]
	}
	return time.Time{}
}

func (p *pollMemory) forget(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.activity != nil {
		p.activity.move(key.Namespace, p.m[key].part, userPart{})
	}
	delete(p.m, key)
}

// setPart records what the user adds to its product's status.api, when it
// changed (a user with nothing to add and no memory costs no entry).
func (p *pollMemory) setPart(u *kidv1.KidUser, part userPart) {
	if p.get(u).part == part {
		return
	}
	p.update(u, func(s *pollState) { s.part = part })
}

// reconcileAPI syncs the user's session and recovers its pending challenge
// or verification, as due. It returns when the user is next due.
func (r *KidUserReconciler) reconcileAPI(ctx context.Context, user *kidv1.KidUser) (time.Duration, error) {
	if r.APIClients == nil {
		return 0, nil
	}
	if user.Status.ErasedAt != nil {
		// Nothing more to ask k-ID: the user leaves its product's sums.
		r.polls.setPart(user, userPart{})
		return 0, nil
	}
	product := &kidv1.KidProduct{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: user.Namespace, Name: user.Spec.ProductRef.Name}, product); err != nil {
		return 0, client.IgnoreNotFound(err)
	}
	api := product.Spec.API
	if api == nil {
		r.polls.setPart(user, userPart{})
		return 0, nil
	}
	// A user whose calls cannot go out is marked paused: the product's
	// resume wakes it (APIClients.Resumed, pausedUsersOf). The resume
	// comes after the product's status write that follows the change, so
	// a pass that looked just before the change is marked by then; the
	// waits below are the fallback.
	c, err := r.APIClients.For(ctx, r.Client, product)
	var cfg *errConfig
	switch {
	case errors.As(err, &cfg):
		// The product's APIReady says why; look again later.
		r.polls.setPaused(user, true)
		return wait.Jitter(refusedRecheck, waitJitter), nil
	case err != nil:
		return 0, err
	case c.Unauthorized():
		r.polls.setPaused(user, true)
		return wait.Jitter(refusedRecheck, waitJitter), nil
	}
	now := r.Clock.Now()
	if open, _, _ := c.Paused(now); open {
		// Most of the product's calls fail: its breaker is open, and the
		// KidProduct controller probes. The user is woken when the
		// probe succeeds; this is the fallback.
		r.polls.setPaused(user, true)
		return wait.Jitter(breakerProbeMax, waitJitter), nil
	}
	r.polls.setPaused(user, false)
	if retryAt := r.polls.get(user).retryAt; now.Before(retryAt) {
		// The user's last call failed: its backoff holds, even for a
		// forced request.
		return retryAt.Sub(now), nil
	}

	// kid.dev/requested-at asks for k-ID now, whatever the schedule: a
	// browser event's confirmation, or a person's kubectl annotate.
	requested := user.Annotations[kidv1.RequestedAtAnnotation]
	pass := &apiPass{now: now, force: requested != "" && requested != r.polls.get(user).handledRequest}
	var next []time.Duration
	if wait, err := r.syncSession(ctx, c, product, user, pass); err != nil {
		return 0, err
	} else if wait > 0 {
		next = append(next, wait)
	}
	if wait, err := r.recover(ctx, c, product, user, pass); err != nil {
		return 0, err
	} else if wait > 0 {
		next = append(next, wait)
	}
	if wait, err := r.recheckVerified(ctx, c, product, user, pass); err != nil {
		return 0, err
	} else if wait > 0 {
		next = append(next, wait)
	}
	if pass.called && !pass.failed {
		// k-ID answered: the user's backoff ends, and the breaker counts
		// an answer.
		r.APIClients.Succeeded(c, now)
		if r.polls.get(user).failures > 0 {
			r.polls.update(user, func(s *pollState) { s.failures, s.retryAt = 0, time.Time{} })
		}
	}
	if pass.force && !pass.waiting {
		r.polls.update(user, func(s *pollState) { s.handledRequest = requested })
	}
	r.polls.setPart(user, userPart{product: product.Name, due: r.resyncMinute(product, user), givenUp: pass.givenUp})
	if len(next) == 0 {
		return 0, nil
	}
	return slices.Min(next), nil
}

// apiPass is one reconcile's business with k-ID.
type apiPass struct {
	now time.Time
	// force asks k-ID now, whatever the schedule.
	force bool
	// waiting is set when a call had to wait (for its slot, or to retry),
	// so a forced request is not yet answered.
	waiting bool
	// called is set when a call went out, and failed when one failed.
	called, failed bool
	// givenUp is set when the user's pending challenge or verification
	// is past its recovery horizon, undecided.
	givenUp bool
}

// takeSlot returns 0 when the user may call k-ID now, having taken a token
// of the product's rate limiter; otherwise the wait before it asks again.
// A user that must wait first books a slot in its lane of the product's
// schedule (kidapi.Lanes), so that a backlog comes back one user per
// rate-interval instead of all at once, and an urgent read never waits
// behind the resync backlog; when the slot comes, the token is taken at the
// moment of the call.
func (r *KidUserReconciler) takeSlot(c *APIClient, user *kidv1.KidUser, p *apiPass, lane kidapi.Lane) time.Duration {
	d := r.slot(c, user, lane, p.now)
	p.waiting = p.waiting || d > 0
	p.called = p.called || d == 0
	return d
}

// staleSlot is how long after its time a booked slot is still taken. A
// slot older than that was left: its pass found the product's breaker
// open, or nothing left to ask, or the product's client was replaced (a
// fixed baseURL) with a schedule of its own. Taken without a booking, it
// would spend the token that another user's slot was booked for, and under
// a backlog that user, finding none, would go to the back of the lane
// (TestAStaleSlotIsBookedAgain). So a stale slot is booked again.
const staleSlot = time.Second

func (r *KidUserReconciler) slot(c *APIClient, user *kidv1.KidUser, lane kidapi.Lane, now time.Time) time.Duration {
	mem, key := r.polls.get(user), string(user.UID)
	switch {
	case mem.slotAt.IsZero(), now.Sub(mem.slotAt) > staleSlot, lane == kidapi.Urgent && mem.slotLane != kidapi.Urgent:
		// No slot yet, a stale one, or one in the resync lane for a read
		// that became urgent (a permission changed while it waited): book
		// one.
		if d := c.lanes.Book(lane, key); d > 0 {
			r.polls.update(user, func(s *pollState) {
				s.slotAt, s.slotLane = now.Add(d), lane
				if s.bookedAt.IsZero() {
					s.bookedAt = now
				}
			})
			return d
		}
	case now.Before(mem.slotAt):
		return mem.slotAt.Sub(now)
	}
	// The slot has come. An urgent read that finds no token keeps its
	// place and claims the next; a resync read that finds none, or finds
	// an urgent read waiting, books again at the back of its lane.
	d := c.lanes.Take(lane, key)
	var bookedAt time.Time
	r.polls.update(user, func(s *pollState) {
		s.slotAt, s.slotLane = time.Time{}, lane
		if d > 0 {
			s.slotAt = now.Add(d)
			if s.bookedAt.IsZero() {
				s.bookedAt = now
			}
			return
		}
		bookedAt, s.bookedAt = s.bookedAt, time.Time{}
	})
	if d == 0 {
		// The call goes out: it waited from its first booking to now,
		// lateness and any rebooking included (0 when it booked none).
		var waited time.Duration
		if !bookedAt.IsZero() {
			waited = now.Sub(bookedAt)
		}
		slotWait.WithLabelValues(userProductLabel(user)).Observe(waited.Seconds())
	}
	return d
}

// apiFailed turns a failed call into a wait, and marks the pass as waiting:
//   - a pause after k-ID refused the key (which the product's APIReady then
//     shows);
//   - propagationRetry for k-ID's 404 NOT_FOUND from /session/get within
//     propagationGrace of the session's PASS (spec §4.2); any other 404, an
//     unknown path above all, is a failure like a 5xx;
//   - k-ID's Retry-After for a 429, or the rate limiter's wait;
//   - otherwise the user's own backoff (failureBackoff), longer after each
//     failure in a row, and the failure is counted in the product's breaker
//     when it says something about the product (failsProduct).
func (r *KidUserReconciler) apiFailed(ctx context.Context, c *APIClient, product *kidv1.KidProduct, user *kidv1.KidUser, p *apiPass, what string, err error) time.Duration {
	p.failed = true
	d := r.failureWait(ctx, c, product, user, p.now, what, err)
	p.waiting = p.waiting || d > 0
	return d
}

func (r *KidUserReconciler) failureWait(ctx context.Context, c *APIClient, product *kidv1.KidProduct, user *kidv1.KidUser, now time.Time, what string, err error) time.Duration {
	var e *kidapi.Error
	switch {
	case kidapi.IsUnauthorized(err):
		r.APIClients.Refused(c, client.ObjectKeyFromObject(product))
		return wait.Jitter(refusedRecheck, waitJitter)
	case kidapi.IsPropagating(err) && r.withinPropagation(user, now):
		return propagationRetry
	case errors.As(err, &e) && e.Code == kidapi.CodeCanceled:
		// The operator is stopping.
		return 0
	}
	if failsProduct(err) {
		r.APIClients.Failed(c, client.ObjectKeyFromObject(product), now, err)
	} else if after, ok := kidapi.RetryAfter(err); ok {
		// k-ID's 429, or the product's own rate: not the user's failure.
		return wait.Jitter(max(after, time.Second), waitJitter)
	}
	var failures int
	var d time.Duration
	r.polls.update(user, func(s *pollState) {
		s.failures++
		failures = s.failures
		d = failureBackoff(s.failures)
		if after, ok := kidapi.RetryAfter(err); ok && after > d {
			d = min(after, failureBackoffMax)
		}
		s.retryAt = now.Add(d)
	})
	ctrl.LoggerFrom(ctx).Info("k-ID API call failed", "call", what, "failure", describeFailure(err), "failures", failures, "retryIn", d)
	return d
}

// spread is a stable number in [0, 1) per user.
func spread(uid types.UID) float64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(uid))
	return float64(h.Sum32()%1000) / 1000
}
