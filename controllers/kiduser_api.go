package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/fold"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/kid"
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
//
// Nothing here holds a worker for k-ID: a user that must wait for the
// product's rate limiter books its slot and is requeued until then (takeSlot),
// so a backlog of one product costs two reconciles per call, not a queue that
// spins, and leaves the workers to every other namespace.

const (
	// propagationGrace is how long after a session first appears a "not
	// found" from /session/get is read as k-ID's propagation delay (the
	// vendor reports 1-2 s) rather than a deletion.
	propagationGrace = 30 * time.Second
	// minReadSpacing keeps two reads of one session apart, whatever the
	// events say (a signing time ahead of our clock must not loop).
	minReadSpacing = 5 * time.Second
	// refusedRecheck is how soon a user retries after k-ID refused the
	// product's key; the product's own probe clears the refusal sooner.
	refusedRecheck = 5 * time.Minute
	// propagationRetry is the wait after a read that hit the propagation
	// delay.
	propagationRetry = 2 * time.Second
)

// pollMemory remembers, per KidUser object, when k-ID was last asked about
// it. It is in memory on purpose: a read that finds nothing new must cost no
// write, and after a restart every due user is asked once more, which is
// what recovery wants anyway.
type pollMemory struct {
	mu sync.Mutex
	m  map[types.NamespacedName]pollState
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
	// limiter is due; zero when it holds none.
	slotAt time.Time
	// The event times the last read answered for: a permission change or
	// a consent signed later asks for another read. (k-ID signs in whole
	// seconds, so comparing them with the read's own time would miss a
	// change made in the second of the read.)
	readForChange, readForConsent time.Time
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
	if s.uid != u.UID {
		s = pollState{uid: u.UID}
	}
	f(&s)
	p.m[key] = s
}

func (p *pollMemory) forget(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, key)
}

// reconcileAPI syncs the user's session and recovers its pending challenge
// or verification, as due. It returns when the user is next due.
func (r *KidUserReconciler) reconcileAPI(ctx context.Context, user *kidv1.KidUser) (time.Duration, error) {
	if r.APIClients == nil || user.Status.ErasedAt != nil {
		return 0, nil
	}
	product := &kidv1.KidProduct{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: user.Namespace, Name: user.Spec.ProductRef.Name}, product); err != nil {
		return 0, client.IgnoreNotFound(err)
	}
	api := product.Spec.API
	if api == nil {
		return 0, nil
	}
	c, err := r.APIClients.For(ctx, r.Client, product)
	var cfg *errConfig
	switch {
	case errors.As(err, &cfg):
		// The product's APIReady says why; look again later.
		return jitter(refusedRecheck), nil
	case err != nil:
		return 0, err
	case c.Unauthorized():
		return jitter(refusedRecheck), nil
	}

	// kid.dev/requested-at asks for k-ID now, whatever the schedule: a
	// browser event's confirmation, or a person's kubectl annotate.
	requested := user.Annotations[kidv1.RequestedAtAnnotation]
	pass := &apiPass{now: r.now(), force: requested != "" && requested != r.polls.get(user).handledRequest}
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
	if pass.force && !pass.waiting {
		r.polls.update(user, func(s *pollState) { s.handledRequest = requested })
	}
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
}

// takeSlot returns 0 when the user may call k-ID now, having taken a token
// of the product's rate limiter; otherwise the wait before it asks again.
// A user that must wait first books a slot in the product's schedule, so
// that a backlog comes back one user per rate-interval instead of all at
// once; when the slot comes, the token is taken at the moment of the call.
func (r *KidUserReconciler) takeSlot(c *APIClient, user *kidv1.KidUser, p *apiPass) time.Duration {
	d := r.slot(c, user, p.now)
	p.waiting = p.waiting || d > 0
	return d
}

func (r *KidUserReconciler) slot(c *APIClient, user *kidv1.KidUser, now time.Time) time.Duration {
	slot := r.polls.get(user).slotAt
	if slot.IsZero() {
		if d := c.Book(); d > 0 {
			r.polls.update(user, func(s *pollState) { s.slotAt = now.Add(d) })
			return d
		}
	} else if now.Before(slot) {
		return slot.Sub(now)
	}
	if d := c.Reserve(); d > 0 {
		// Late for the slot (a busy queue), with others: wait for the
		// next token, keeping the slot that has come.
		return d
	}
	if !slot.IsZero() {
		r.polls.update(user, func(s *pollState) { s.slotAt = time.Time{} })
	}
	return 0
}

// sessionDue says whether the user's session should be read now, and if
// not, how long until it should.
func (r *KidUserReconciler) sessionDue(product *kidv1.KidProduct, user *kidv1.KidUser, p *apiPass) (bool, time.Duration) {
	st, now := &user.Status, p.now
	if user.Spec.Identity.Kind != kidv1.IdentitySession || st.Session.State == kidv1.SessionDeleted {
		return false, 0
	}
	if p.force {
		return true, 0
	}
	mem := r.polls.get(user)
	known := mem.sessionReadAt
	if st.Session.SyncedAt != nil && st.Session.SyncedAt.After(known) {
		known = st.Session.SyncedAt.Time
	}
	if known.IsZero() {
		return true, 0
	}
	if since := now.Sub(known); since < minReadSpacing {
		return false, minReadSpacing - since
	}
	// Something happened since the last read: a parent changed the
	// permissions, or consent was granted (again). After a restart the
	// memory is empty and the last write's time stands in for it.
	changedSince := func(t *metav1.Time, readFor time.Time) bool {
		if mem.sessionReadAt.IsZero() && st.Session.SyncedAt != nil {
			readFor = st.Session.SyncedAt.Time
		}
		return t != nil && t.After(readFor)
	}
	if changedSince(st.Session.PermissionsChangedAt, mem.readForChange) {
		return true, 0
	}
	if st.Consent.State == kidv1.ConsentGranted && changedSince(st.Consent.Time, mem.readForConsent) {
		return true, 0
	}
	// The periodic resync, spread by up to 10% per user so that users
	// synced together do not stay in step.
	interval := product.Spec.API.ResyncInterval()
	interval += time.Duration(float64(interval) * 0.1 * spread(user.UID))
	if due := known.Add(interval); now.Before(due) {
		return false, due.Sub(now)
	}
	return true, 0
}

// syncSession reads the user's session from k-ID when due.
func (r *KidUserReconciler) syncSession(ctx context.Context, c *APIClient, product *kidv1.KidProduct, user *kidv1.KidUser, p *apiPass) (time.Duration, error) {
	now := p.now
	if unwritten := r.polls.get(user).unwritten; unwritten != nil {
		// A read whose write lost a race with a fold: write it again,
		// without asking k-ID a second time.
		return 0, r.writeSync(ctx, user, unwritten)
	}
	due, wait := r.sessionDue(product, user, p)
	if !due {
		return wait, nil
	}
	if d := r.takeSlot(c, user, p); d > 0 {
		return d, nil
	}
	st := &user.Status
	// A session's user knows its id from its identity, even before k-ID
	// confirmed it (a browser event made it).
	sessionID := user.Spec.Identity.ID
	session, err := c.WithReservation().GetSession(ctx, sessionID, st.Session.ETag)
	switch {
	case errors.Is(err, kidapi.ErrNotModified):
		sessionSyncsTotal.WithLabelValues("unchanged").Inc()
		r.readSession(user, now)
		return 0, nil
	case kidapi.IsNotFound(err):
		if st.SessionID == "" {
			// Never confirmed: a browser event named a session k-ID
			// does not know. Nothing to erase, nothing to believe.
			sessionSyncsTotal.WithLabelValues("unknown").Inc()
			return 0, nil
		}
		if r.withinPropagation(user, now) {
			p.waiting = true
			return propagationRetry, nil
		}
		// k-ID no longer knows the session: it was deleted, and its
		// Session.Delete webhook did not reach us. Store that event, so
		// the fold erases as it would for the webhook.
		sessionSyncsTotal.WithLabelValues("deleted").Inc()
		return 0, r.storePolled(ctx, product, kid.SessionDelete, map[string]any{"id": st.SessionID})
	case err != nil:
		wait, err := r.apiFailed(ctx, c, product, "session", err)
		p.waiting = p.waiting || wait > 0
		return wait, err
	}
	privacy := kid.Privacy{KeepEmail: product.Spec.Privacy.StoreApproverEmail, KeepDateOfBirth: product.Spec.Privacy.StoreDateOfBirth}
	delta := fold.SyncDelta(&fold.Session{
		SessionID: sessionID, KUID: session.KUID, AgeStatus: session.AgeStatus, Jurisdiction: session.Jurisdiction,
		Status: session.Status, ETag: session.ETag, DateOfBirth: session.DateOfBirth,
		Permissions: permissions(session.Permissions), At: now,
	}, privacy)
	r.readSession(user, now)
	return 0, r.writeSync(ctx, user, delta)
}

// writeSync joins a read of the session into the user. The write carries the
// resourceVersion read; when a fold wrote first, the read is kept and
// written again on the retry. (A join of the same read onto a newer status
// is still right.)
func (r *KidUserReconciler) writeSync(ctx context.Context, user *kidv1.KidUser, delta *kidv1.KidUserStatus) error {
	before := user.DeepCopy()
	user.Status = *fold.Merge(&user.Status, delta)
	setUserConditions(user)
	if sameButTime(before.Status.Session, user.Status.Session) && apiequality.Semantic.DeepEqual(before.Status.PersonalData, user.Status.PersonalData) && before.Status.KUID == user.Status.KUID {
		// k-ID sent the session whole (no etag match) but nothing changed.
		sessionSyncsTotal.WithLabelValues("unchanged").Inc()
		user.Status = before.Status
		r.polls.update(user, func(s *pollState) { s.unwritten = nil })
		return nil
	}
	if err := r.Status().Patch(ctx, user, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		r.polls.update(user, func(s *pollState) { s.unwritten = delta })
		return fmt.Errorf("writing synced session: %w", err)
	}
	r.polls.update(user, func(s *pollState) { s.unwritten = nil })
	sessionSyncsTotal.WithLabelValues("changed").Inc()
	return nil
}

// readSession remembers a read k-ID answered, and the changes it answered
// for.
func (r *KidUserReconciler) readSession(user *kidv1.KidUser, now time.Time) {
	r.polls.update(user, func(s *pollState) {
		s.sessionReadAt = now
		if t := user.Status.Session.PermissionsChangedAt; t != nil {
			s.readForChange = t.Time
		}
		if t := user.Status.Consent.Time; t != nil {
			s.readForConsent = t.Time
		}
	})
}

// sameButTime reports whether two session statuses differ at most in when
// they were read.
func sameButTime(a, b kidv1.SessionStatus) bool {
	a.SyncedAt, b.SyncedAt = nil, nil
	return apiequality.Semantic.DeepEqual(a, b)
}

func permissions(in []kidapi.Permission) []kidv1.SessionPermission {
	out := make([]kidv1.SessionPermission, 0, len(in))
	for _, p := range in {
		if p.Name == "" {
			continue
		}
		out = append(out, kidv1.SessionPermission{Name: p.Name, Enabled: p.Enabled, ManagedBy: p.ManagedBy, VerifiedAgeThreshold: p.VerifiedAgeThreshold})
	}
	return out
}

// withinPropagation reports whether the user's session appeared too
// recently for a "not found" to mean anything.
func (r *KidUserReconciler) withinPropagation(user *kidv1.KidUser, now time.Time) bool {
	first := user.CreationTimestamp.Time
	if t := user.Status.Consent.Time; t != nil && t.After(first) {
		first = t.Time
	}
	return now.Sub(first) < propagationGrace
}

// pending returns what of the user is pending at k-ID: a challenge or a
// verification, and since when.
func pending(user *kidv1.KidUser) (kind kidv1.IdentityKind, id string, since time.Time) {
	st, ident := &user.Status, user.Spec.Identity
	switch {
	case st.Consent.State == kidv1.ConsentPending && st.Consent.ChallengeID != "":
		since = user.CreationTimestamp.Time
		if st.Consent.Time != nil {
			since = st.Consent.Time.Time
		}
		return kidv1.IdentityChallenge, st.Consent.ChallengeID, since
	case ident.Kind == kidv1.IdentityChallenge && (st.Consent.State == "" || st.Consent.State == kidv1.ConsentNone):
		// A challenge the game registered (it created this KidUser) and
		// of which no event has arrived yet.
		return kidv1.IdentityChallenge, ident.ID, user.CreationTimestamp.Time
	case ident.Kind == kidv1.IdentityVerification && !hasRecord(st, ident.ID):
		return kidv1.IdentityVerification, ident.ID, user.CreationTimestamp.Time
	}
	return "", "", time.Time{}
}

func hasRecord(st *kidv1.KidUserStatus, id string) bool {
	for _, r := range st.Verification.Records {
		if r.ID == id {
			return true
		}
	}
	return false
}

// pollPoint returns the latest point of the recovery schedule at or before
// elapsed (-1 before the first) and the wait until the next one. The points
// are first, then at doubling intervals capped at maxInterval.
func pollPoint(elapsed, first, maxInterval time.Duration) (point, next time.Duration) {
	point, at, step := time.Duration(-1), first, first
	for at <= elapsed {
		point = at
		step = min(step*2, maxInterval)
		at += step
	}
	return point, at - elapsed
}

// recover polls the user's pending challenge or verification when due.
func (r *KidUserReconciler) recover(ctx context.Context, c *APIClient, product *kidv1.KidProduct, user *kidv1.KidUser, p *apiPass) (time.Duration, error) {
	now := p.now
	kind, id, since := pending(user)
	if kind == "" {
		return 0, nil
	}
	first, maxInterval, horizon := product.Spec.API.Recovery.Backoff()
	elapsed := now.Sub(since)
	if elapsed > horizon && !p.force {
		return 0, nil
	}
	point, next := pollPoint(elapsed, first, maxInterval)
	if !p.force && (point < 0 || !r.polls.get(user).polledAt.Before(since.Add(point))) {
		return next, nil
	}
	if d := r.takeSlot(c, user, p); d > 0 {
		return d, nil
	}
	var err error
	if kind == kidv1.IdentityChallenge {
		err = r.pollChallenge(ctx, c, product, user, id)
	} else {
		err = r.pollVerification(ctx, c, product, id)
	}
	if err != nil {
		wait, err := r.apiFailed(ctx, c, product, string(kind), err)
		p.waiting = p.waiting || wait > 0
		if err != nil || wait > 0 {
			return wait, err
		}
	}
	r.polls.update(user, func(s *pollState) { s.polledAt = now })
	return next, nil
}

// pollChallenge asks k-ID for a challenge's status and stores what changed.
func (r *KidUserReconciler) pollChallenge(ctx context.Context, c *APIClient, product *kidv1.KidProduct, user *kidv1.KidUser, id string) error {
	got, err := c.WithReservation().ChallengeStatus(ctx, id)
	if err != nil {
		if kidapi.IsNotFound(err) {
			recoveryPollsTotal.WithLabelValues("challenge", "not-found").Inc()
			return nil
		}
		return err
	}
	data := map[string]any{"id": id, "status": got.Status}
	switch got.Status {
	case kid.StatusPass:
		for k, v := range map[string]string{"sessionId": got.SessionID, "kuid": got.KUID, "approverEmail": got.ApproverEmail, "dob": got.DOB} {
			if v != "" {
				data[k] = v
			}
		}
	case kid.StatusFail:
	case kid.StatusInProgress:
		if user.Status.Consent.State == kidv1.ConsentPending {
			recoveryPollsTotal.WithLabelValues("challenge", "unchanged").Inc()
			return nil
		}
	default:
		recoveryPollsTotal.WithLabelValues("challenge", "unchanged").Inc()
		return nil
	}
	recoveryPollsTotal.WithLabelValues("challenge", "changed").Inc()
	return r.storePolled(ctx, product, kid.ChallengeStateChange, data)
}

// pollVerification asks k-ID for a verification's status and stores a
// decision.
func (r *KidUserReconciler) pollVerification(ctx context.Context, c *APIClient, product *kidv1.KidProduct, id string) error {
	got, err := c.WithReservation().VerificationStatus(ctx, id)
	if err != nil {
		var apiErr *kidapi.Error
		if errors.As(err, &apiErr) && apiErr.HTTPStatus == 400 {
			// Not found (k-ID answers INVALID_INPUT): never started, or
			// deleted after its two weeks. Nothing to recover.
			recoveryPollsTotal.WithLabelValues("verification", "not-found").Inc()
			return nil
		}
		return err
	}
	if got.Status != kid.StatusPass && got.Status != kid.StatusFail {
		recoveryPollsTotal.WithLabelValues("verification", "unchanged").Inc()
		return nil
	}
	data := map[string]any{"id": id, "status": got.Status}
	for k, v := range map[string]string{"method": got.Method, "ageCategory": got.AgeCategory, "failureReason": got.FailureReason, "dob": got.DOB} {
		if v != "" {
			data[k] = v
		}
	}
	if got.AgeLow != nil || got.AgeHigh != nil {
		age := map[string]int32{}
		if got.AgeLow != nil {
			age["low"] = *got.AgeLow
		}
		if got.AgeHigh != nil {
			age["high"] = *got.AgeHigh
		}
		data["age"] = age
	}
	recoveryPollsTotal.WithLabelValues("verification", "changed").Inc()
	return r.storePolled(ctx, product, kid.VerificationResult, data)
}

// storePolled stores what k-ID's API answered as an event with source poll,
// through the same inbox as the webhooks: same name, labels and redaction,
// so a webhook of the same change is a duplicate, whichever comes first.
func (r *KidUserReconciler) storePolled(ctx context.Context, product *kidv1.KidProduct, eventType string, data map[string]any) error {
	body, err := json.Marshal(map[string]any{"eventType": eventType, "data": data})
	if err != nil {
		return err
	}
	env, err := kid.ParseEnvelope(body)
	if err != nil {
		return fmt.Errorf("k-ID's answer makes no event: %w", err)
	}
	now := r.now()
	event, err := inbox.Build(product, env, body, now, now, kidv1.SourcePoll)
	if err != nil {
		return err
	}
	if err := r.Create(ctx, event); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("storing polled event: %w", err)
	}
	recoveredEventsTotal.WithLabelValues(typeLabel(eventType)).Inc()
	return nil
}

// apiFailed turns a failed call into a wait: k-ID's Retry-After, the
// backoff of a transient failure, or a pause after k-ID refused the key
// (which the product's APIReady then shows). Errors that retrying cannot
// help are logged, not returned: the user is asked again at its next point.
func (r *KidUserReconciler) apiFailed(ctx context.Context, c *APIClient, product *kidv1.KidProduct, what string, err error) (time.Duration, error) {
	switch {
	case kidapi.IsUnauthorized(err):
		r.APIClients.Refused(c, client.ObjectKeyFromObject(product))
		return jitter(refusedRecheck), nil
	case kidapi.IsPropagating(err):
		return propagationRetry, nil
	}
	if wait, ok := kidapi.RetryAfter(err); ok {
		return jitter(max(wait, time.Second)), nil
	}
	ctrl.LoggerFrom(ctx).Info("k-ID API call failed", "call", what, "error", err.Error())
	return 0, nil
}

// spread is a stable number in [0, 1) per user.
func spread(uid types.UID) float64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(uid))
	return float64(h.Sum32()%1000) / 1000
}

// jitter adds up to 10% to d, so that users told to wait together do not
// all come back in the same instant.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d/10)+1))
}
