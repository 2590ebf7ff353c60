package controllers

import (
	"time"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/cachemem"
)

// What is due for a KidUser, and when (design.md §5, "Start and sweeps").
// The KidUser controllers keep no timer per player and reconcile no player
// at a start for nothing: the informer's first list and its resyncs
// enqueue a user only when something is due for it now (startFilter), and
// a sweep (kiduser_sweep.go) enqueues, every sweep interval, the users due
// before the next sweep, at their exact time. Both ask dueOf.

// userDue is what is due for one user.
type userDue struct {
	// check is work that no time marks and that a restart must not lose:
	// a stand-in to merge into the user holding its id (any user of
	// another kind than Session), an erased user's events to delete, id
	// labels that miss an id the user holds (labelIDs). The
	// informer's first list and its resyncs enqueue such a user; the
	// sweeps do not.
	check bool
	// work is when the kiduser controller is next due: the user's expiry
	// by the product's retention.users, or the bound on a stand-in's
	// personal data (boundStandIn). Zero: never, as the user stands (a
	// change to it enqueues it).
	work time.Time
	// read is when the kiduser-api controller is next due: a read of k-ID
	// (reconcileAPI). Zero: never, as the user stands.
	read time.Time
	// part is what the user adds to its product's status.api, for a user
	// this process has not read yet (none when part.product is empty):
	// the sweep records it, so that the product's summary counts every
	// player from the first sweep on, read or not.
	part userPart
}

// dueOf is what is due for the user at now, and when; product is the
// user's KidProduct, nil when it is gone. It reads, of the user, only what
// the cache's skeleton of a KidUser keeps:
//   - metadata: uid, creationTimestamp, the kid.dev/requested-at annotation,
//     whether the id labels cover the ids (cachemem.IDLabelsStale);
//   - spec: productRef, identity;
//   - status: erasedAt, lastEventTime, personalData (whether set),
//     session.state, session.syncedAt, session.permissionsChangedAt,
//     session.permissionsReadAt, consent.state, consent.time,
//     consent.challengeID, and verification.records (id, state, time);
//
// besides this process's memory of the user (deletedUsers, pollMemory and
// the erasure memory) and of its product's reads (resyncLoads).
//
// A user that the kiduser-api controller has read since the start is due
// when that reconcile said (pollState.wakeAt: it knows the waits no status
// shows, such as a rate-limiter slot or a failure's backoff). Any other
// user is due as reconcileAPI would find it with an empty memory: at a
// restart, that is the resync spread over one interval from the start
// (resyncDue).
func (r *KidUserReconciler) dueOf(u *kidv1.KidUser, product *kidv1.KidProduct, now time.Time) userDue {
	var d userDue
	if r.deleted.has(u.UID, now) {
		// Merged and deleted already; the cache has not seen it go.
		return d
	}
	standIn := u.Spec.Identity.Kind != kidv1.IdentitySession
	d.check = standIn || u.Status.ErasedAt != nil || cachemem.IDLabelsStale(u)
	if product == nil {
		// The garbage collector deletes the users of a deleted product.
		return d
	}
	ret := retentionOf(product)
	if reason, wait := ret.userExpiry(u, now); reason != "" {
		d.work = now
	} else if wait > 0 {
		d.work = now.Add(wait)
	}
	if standIn && u.Status.ErasedAt == nil && u.Status.PersonalData != nil {
		since := u.CreationTimestamp.Time
		if t := u.Status.LastEventTime; t != nil && t.After(since) {
			since = t.Time
		}
		d.work = earliest(d.work, maxTime(now, since.Add(ret.maxAge)))
	}

	if r.APIClients == nil || product.Spec.API == nil || u.Status.ErasedAt != nil {
		return d
	}
	if mem := r.polls.get(u); mem.asked {
		d.read = mem.wakeAt
		return d
	}
	// Not read since the start: as reconcileAPI would find it now.
	p := &apiPass{now: now, force: u.Annotations[kidv1.RequestedAtAnnotation] != ""}
	if p.force {
		d.read = now
	}
	if due, wait, _ := r.sessionDue(product, u, p); due {
		d.read = now
	} else if wait > 0 {
		d.read = earliest(d.read, now.Add(wait))
	}
	givenUp := false
	if kind, _, since := pending(u); kind != "" {
		var due bool
		var next time.Duration
		givenUp, due, next = recoveryDue(product, since, time.Time{}, now)
		switch {
		case givenUp:
		case due:
			d.read = now
		default:
			d.read = earliest(d.read, now.Add(next))
		}
	}
	if product.Spec.API.Recovery.RechecksVerifications() {
		interval := r.resyncInterval(product, u)
		for i := range u.Status.Verification.Records {
			if rec := &u.Status.Verification.Records[i]; rec.State == kidv1.VerificationVerified {
				d.read = earliest(d.read, maxTime(now, r.recheckAt(u, rec, interval)))
			}
		}
	}
	d.part = userPart{product: product.Name, due: r.resyncMinute(product, u), givenUp: givenUp}
	return d
}

// earliest is the earlier of two times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// maxTime is the later of two times.
func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
