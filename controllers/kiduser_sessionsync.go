package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/cachemem"
	"github.com/kid-operator/kid-operator/internal/fold"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidapi"
)

// Session sync (design.md §3, "Session sync"): a session's user reads its
// session from k-ID, with its etag, when the session first appears, when a
// permission change or a newer consent was folded after the last read, and
// once per resync interval. A 200 that changes something is one status
// write; a 304 is none; a session k-ID no longer knows (NOT_FOUND, or a
// status that is not ACTIVE) is never erased on one read: it is confirmed a
// minute later, by sessionId and by kuid, and held by the product's erasure
// breaker (kiduser_erasure.go) before it is stored as a Session.Delete
// event (storePolled), so the fold erases as for the webhook.
// When a user is due and how long it waits for its slot is the schedule's
// business (kiduser_schedule.go).

const (
	// propagationGrace is how long after a session first appears a "not
	// found" from /session/get is read as k-ID's propagation delay (the
	// vendor reports 1-2 s) rather than a deletion.
	propagationGrace = 30 * time.Second
	// minReadSpacing keeps two reads of one session apart, whatever the
	// events say (a signing time ahead of our clock must not loop).
	minReadSpacing = 5 * time.Second
)

// sessionDue says whether the user's session should be read now, and in
// which lane of the product's schedule; if not, how long until it should.
// A read that something which just happened asks for (the session is new: a
// consent PASS; a permission change; a newer consent; kid.dev/requested-at)
// is urgent; the periodic resync and an erasure's confirmations are not.
func (r *KidUserReconciler) sessionDue(product *kidv1.KidProduct, user *kidv1.KidUser, p *apiPass) (bool, time.Duration, kidapi.Lane) {
	st, now := &user.Status, p.now
	if user.Spec.Identity.Kind != kidv1.IdentitySession || st.Session.State == kidv1.SessionDeleted {
		return false, 0, kidapi.Resync
	}
	// A session suspected of being deleted keeps to its confirmation's
	// times, whatever else asks: a read sooner would confirm nothing.
	if suspected, due, wait := r.erasureDue(product, user, now); suspected {
		return due, wait, kidapi.Resync
	}
	if p.force {
		return true, 0, kidapi.Urgent
	}
	mem := r.polls.get(user)
	known := mem.sessionReadAt
	if st.Session.SyncedAt != nil && st.Session.SyncedAt.After(known) {
		known = st.Session.SyncedAt.Time
	}
	if known.IsZero() {
		return true, 0, kidapi.Urgent
	}
	if since := now.Sub(known); since < minReadSpacing {
		return false, minReadSpacing - since, kidapi.Resync
	}
	// Something happened since the last read: a parent changed the
	// permissions, or consent was granted (again).
	if r.noticePending(user) {
		return true, 0, kidapi.Urgent
	}
	// The receiver spooled events after the last read: the API server
	// was down, and k-ID may have given up on a delivery (apioutage.go).
	if outage := r.APIClients.resyncSince(productKey(product)); known.Before(outage) {
		return true, 0, kidapi.Urgent
	}
	readForConsent := mem.readForConsent
	if mem.sessionReadAt.IsZero() && st.Session.SyncedAt != nil {
		// After a restart the memory is empty and the last write's time
		// stands in for it.
		readForConsent = st.Session.SyncedAt.Time
	}
	if st.Consent.State == kidv1.ConsentGranted && st.Consent.Time != nil && st.Consent.Time.After(readForConsent) {
		return true, 0, kidapi.Urgent
	}
	// The periodic resync (kiduser_resync.go).
	if due := r.resyncDue(product, user, known, mem.sessionReadAt.IsZero()); now.Before(due) {
		return false, due.Sub(now), kidapi.Resync
	}
	return true, 0, kidapi.Resync
}

// resyncDue is when the session's periodic resync is due: once per resync
// interval after it was last read, spread by up to 10% per user so that
// users synced together do not stay in step (resyncInterval). A user this
// process has not read yet is known only by syncedAt, the last read that
// changed something (a 304 does not move it), so after a restart nearly
// every session is overdue at once: those overdue since before the
// controller started are spread over one interval from its start, by the
// same stable hash, instead of all being read in its first minutes.
func (r *KidUserReconciler) resyncDue(product *kidv1.KidProduct, user *kidv1.KidUser, known time.Time, unread bool) time.Time {
	due := known.Add(r.resyncInterval(product, user))
	if started := r.startedAt(); unread && due.Before(started) {
		interval := product.Spec.API.ResyncInterval(product.Spec.Environment, r.loads.reads(product))
		due = started.Add(time.Duration(float64(interval) * spread(user.UID)))
	}
	return due
}

// noticePending reports whether a permission change was folded (a
// Session.ChangePermissions) that no read of the session has answered
// for yet. What was answered is kept in memory and written as
// permissionsReadAt, so it survives a restart; a user written before that
// field existed, and not read since the start, has its last write's time
// stand in for it.
func (r *KidUserReconciler) noticePending(user *kidv1.KidUser) bool {
	st, mem := &user.Status.Session, r.polls.get(user)
	changed := st.PermissionsChangedAt
	if changed == nil {
		return false
	}
	readFor := mem.readForChange
	if st.PermissionsReadAt != nil && st.PermissionsReadAt.After(readFor) {
		readFor = st.PermissionsReadAt.Time
	}
	if mem.sessionReadAt.IsZero() && st.PermissionsReadAt == nil && st.SyncedAt != nil && st.SyncedAt.After(readFor) {
		readFor = st.SyncedAt.Time
	}
	return changed.After(readFor)
}

// changeTime is the newest permission change folded into the user (zero:
// none): what a read made now answers for.
func changeTime(user *kidv1.KidUser) time.Time {
	if t := user.Status.Session.PermissionsChangedAt; t != nil {
		return t.Time
	}
	return time.Time{}
}

// syncSession reads the user's session from k-ID when due.
func (r *KidUserReconciler) syncSession(ctx context.Context, c *APIClient, product *kidv1.KidProduct, user *kidv1.KidUser, p *apiPass) (time.Duration, error) {
	now := p.now
	if unwritten := r.polls.get(user).unwritten; unwritten != nil {
		// A read whose write lost a race with a fold: write it again,
		// without asking k-ID a second time, and go on. The fold that won
		// the race may be a notice that asks for a read of its own, and a
		// replay that writes nothing wakes no other pass.
		if err := r.writeSync(ctx, user, unwritten); err != nil {
			return 0, err
		}
	}
	due, wait, lane := r.sessionDue(product, user, p)
	if !due {
		return wait, nil
	}
	if d := r.takeSlot(c, user, p, lane); d > 0 {
		return d, nil
	}
	if r.erasures.get(user).idAgreed {
		// The confirming read by sessionId agreed already; the read by
		// kuid waited for its slot.
		return r.confirmByKUID(ctx, c, product, user, p, false)
	}
	st := &user.Status
	// A session's user knows its id from its identity, even before k-ID
	// confirmed it (a browser event made it).
	sessionID := user.Spec.Identity.ID
	// What this read answers for: the notices folded before it was made.
	readFor, noticed := changeTime(user), r.noticePending(user)
	session, err := c.WithReservation().GetSession(ctx, sessionID, st.Session.ETag)
	gone := kidapi.IsNotFound(err) || (err == nil && !sessionActive(session.Status))
	switch {
	case errors.Is(err, kidapi.ErrNotModified):
		sessionSyncsTotal.WithLabelValues(productLabel(product), "unchanged").Inc()
		r.sessionAnswered(product, user)
		r.readSession(user, now, readFor)
		if noticed && (st.Session.PermissionsReadAt == nil || st.Session.PermissionsReadAt.Time.Before(readFor)) {
			// Nothing changed, but a notice's actions wait for this read
			// (kidevent_controller.go, reconcileMatch): say it was made.
			return r.resyncInterval(product, user), r.writeSync(ctx, user, fold.ReadDelta(readFor))
		}
		return r.resyncInterval(product, user), nil
	case gone && st.SessionID == "":
		// Never confirmed: a browser event named a session k-ID does not
		// know (or knows deleted). Nothing to erase, nothing to believe.
		sessionSyncsTotal.WithLabelValues(productLabel(product), "unknown").Inc()
		return 0, nil
	case gone:
		if err != nil && r.erasures.get(user).suspectedAt.IsZero() && r.withinPropagation(user, now) {
			p.waiting = true
			return propagationRetry, nil
		}
		// k-ID no longer knows the session, or says it is not ACTIVE:
		// deleted, and its Session.Delete webhook did not reach us, or a
		// blip. Confirm before erasing (kiduser_erasure.go).
		return r.sessionGone(ctx, c, product, user, p)
	case err != nil:
		return r.apiFailed(ctx, c, product, user, p, "session", err), nil
	}
	r.sessionAnswered(product, user)
	privacy := inbox.PrivacyOf(product)
	read := &fold.Session{
		SessionID: sessionID, KUID: session.KUID, AgeStatus: session.AgeStatus, Jurisdiction: session.Jurisdiction,
		Status: session.Status, ETag: session.ETag, DateOfBirth: session.DateOfBirth,
		Permissions: permissions(session.Permissions), At: now, ReadFor: readFor,
	}
	delta := fold.SyncDelta(read, privacy)
	if !noticed && permissionsChanged(&st.Session, &delta.Session) {
		// A change no notice announced (an age-up, spec §1.9, or a notice
		// k-ID lost): stored as the event the webhook would have been.
		found, err := r.storeFoundChange(ctx, product, user, session.ETag)
		if err != nil {
			return 0, err
		}
		if !found.IsZero() {
			read.ReadFor = found
			delta = fold.SyncDelta(read, privacy)
		}
	}
	r.readSession(user, now, read.ReadFor)
	return r.resyncInterval(product, user), r.writeSync(ctx, user, delta)
}

// permissionsChanged reports whether a read of a session that was read
// before found other permissions or another age status.
func permissionsChanged(before, read *kidv1.SessionStatus) bool {
	if before.ETag == "" || before.SyncedAt == nil {
		// The first read of the session: nothing to compare with.
		return false
	}
	return before.AgeStatus != read.AgeStatus || !apiequality.Semantic.DeepEqual(before.Permissions, read.Permissions)
}

// storeFoundChange stores a Session.ChangePermissions (source poll) for a
// change the session sync found and no notice announced, named by the
// session's new etag (design.md §2, the identity rule), and returns its
// time: the read answers for it, so the fold of the event asks for no
// second read and its actions wait for none. It stores nothing, and
// returns zero, when k-ID's own notice is stored and not yet folded (it
// raced this read): that event is the change's, and its fold asks for the
// read its actions wait for.
func (r *KidUserReconciler) storeFoundChange(ctx context.Context, product *kidv1.KidProduct, user *kidv1.KidUser, etag string) (time.Time, error) {
	sessionID := user.Spec.Identity.ID
	events, err := cachemem.EventsNaming(ctx, r, user.Namespace, kidv1.UserIDKey(product.Name, kidv1.IdentitySession, sessionID))
	if err != nil {
		return time.Time{}, err
	}
	for i := range events {
		e := &events[i]
		if e.Spec.EventType == kid.SessionChangePermissions && e.Spec.Source != kidv1.SourceBrowser &&
			(e.Status.Phase == "" || e.Status.Phase == kidv1.EventPending) {
			return time.Time{}, nil
		}
	}
	data := map[string]any{"id": sessionID}
	if etag != "" {
		data["etag"] = etag
	}
	if _, err := r.storePolled(ctx, product, kid.SessionChangePermissions, data); err != nil {
		return time.Time{}, err
	}
	sessionSyncsTotal.WithLabelValues(productLabel(product), "found-change").Inc()
	// The event was signed (stored) before this moment.
	return r.Clock.Now(), nil
}

// writeSync joins a read of the session into the user. The write carries the
// resourceVersion read; when a fold wrote first, the read is kept and
// written again on the retry. (A join of the same read onto a newer status
// is still right.) A delta without syncedAt (fold.ReadDelta, after a 304
// already counted) is not counted again.
func (r *KidUserReconciler) writeSync(ctx context.Context, user *kidv1.KidUser, delta *kidv1.KidUserStatus) error {
	count := func(result string) {
		if delta.Session.SyncedAt != nil {
			sessionSyncsTotal.WithLabelValues(userProductLabel(user), result).Inc()
		}
	}
	before := user.DeepCopy()
	user.Status = *fold.Merge(&user.Status, delta)
	setUserConditions(user)
	if sameButTime(before.Status.Session, user.Status.Session) && apiequality.Semantic.DeepEqual(before.Status.PersonalData, user.Status.PersonalData) && before.Status.KUID == user.Status.KUID {
		// k-ID sent the session whole (no etag match) but nothing changed.
		count("unchanged")
		user.Status = before.Status
		r.polls.update(user, func(s *pollState) { s.unwritten = nil })
		return nil
	}
	if err := r.Status().Patch(ctx, user, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		r.polls.update(user, func(s *pollState) { s.unwritten = delta })
		return fmt.Errorf("writing synced session: %w", err)
	}
	r.polls.update(user, func(s *pollState) { s.unwritten = nil })
	count("changed")
	return nil
}

// resyncMinute is the minute (rounded up) the user's session is due its
// periodic read (resyncDue), for its product's status.api; 0 when it has
// none (not a session's user, or the session is deleted).
func (r *KidUserReconciler) resyncMinute(product *kidv1.KidProduct, user *kidv1.KidUser) int64 {
	if user.Spec.Identity.Kind != kidv1.IdentitySession || user.Status.Session.State == kidv1.SessionDeleted {
		return 0
	}
	mem := r.polls.get(user)
	known := mem.sessionReadAt
	if t := user.Status.Session.SyncedAt; t != nil && t.After(known) {
		known = t.Time
	}
	if known.IsZero() {
		// Never read: due now, or overdue.
		return minuteOf(r.Clock.Now(), true)
	}
	return minuteOf(r.resyncDue(product, user, known, mem.sessionReadAt.IsZero()), true)
}

// readSession remembers a read k-ID answered, and the changes it answered
// for: the permission change at readFor (the newest folded before the read
// was made), and the consent.
func (r *KidUserReconciler) readSession(user *kidv1.KidUser, now, readFor time.Time) {
	if r.polls.activity != nil {
		r.polls.activity.read(types.NamespacedName{Namespace: user.Namespace, Name: user.Spec.ProductRef.Name}, now)
	}
	r.polls.update(user, func(s *pollState) {
		s.sessionReadAt = now
		if readFor.After(s.readForChange) {
			s.readForChange = readFor
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
