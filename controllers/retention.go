package controllers

import (
	"slices"
	"time"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// Retention defaults (design.md §2, KidProduct).
const (
	DefaultRetentionMaxAge    = 7 * 24 * time.Hour
	DefaultRetentionMaxEvents = 5000
	// RetryWindow is how long k-ID keeps retrying one delivery: attempts at
	// +0 s, +5 s and +15 s.
	RetryWindow = 15 * time.Second
	// maxDeletesPerPass bounds the deletes of one reconcile; the rest follow
	// at once in the next pass.
	maxDeletesPerPass = 500
)

// retention is a product's effective retention policy.
type retention struct {
	maxAge    time.Duration
	maxEvents int
	// horizon is the deduplication horizon: an event younger than this may
	// still see a retry of its delivery, which must find the stored object
	// (AlreadyExists) rather than make a new one. Nothing younger is deleted.
	horizon time.Duration
	// userAfterErasure is how long an erased KidUser is kept; never shorter
	// than horizon (kiduser_retention.go says why).
	userAfterErasure time.Duration
	// userAfterInactivity is how long an inactive KidUser is kept; zero
	// keeps it.
	userAfterInactivity time.Duration
}

func retentionOf(p *kidv1.KidProduct) retention {
	r := retention{
		maxAge:    DefaultRetentionMaxAge,
		maxEvents: DefaultRetentionMaxEvents,
		horizon:   p.TimestampTolerance().Duration + RetryWindow,
	}
	if p.Spec.Retention.MaxAge != nil {
		r.maxAge = p.Spec.Retention.MaxAge.Duration
	}
	if p.Spec.Retention.MaxEvents != nil {
		r.maxEvents = int(*p.Spec.Retention.MaxEvents)
	}
	r.maxAge = min(max(r.maxAge, r.horizon), kidv1.MaxRetentionMaxAge)

	// The API server refuses values outside the bounds, but an object
	// stored before they existed may hold one: clamp, as maxAge is.
	users := p.Spec.Retention.Users
	r.userAfterErasure = kidv1.DefaultUserRetentionAfterErasure
	if users.AfterErasure != nil && users.AfterErasure.Duration > 0 {
		r.userAfterErasure = users.AfterErasure.Duration
	}
	r.userAfterErasure = min(max(r.userAfterErasure, kidv1.MinUserRetentionAfterErasure, r.horizon), kidv1.MaxUserRetention)
	if users.AfterInactivity != nil && users.AfterInactivity.Duration > 0 {
		r.userAfterInactivity = min(max(users.AfterInactivity.Duration, kidv1.MinUserRetentionAfterInactivity), kidv1.MaxUserRetention)
	}
	return r
}

// expired picks the events to delete: finished events older than maxAge,
// and the oldest finished events beyond maxEvents, never one younger than the
// horizon. It returns them with the reason of each, and when the next event
// will expire by age (zero if none will).
func (r retention) expired(events []*kidv1.KidEvent, now time.Time) (byAge, byCount []*kidv1.KidEvent, next time.Duration) {
	finished := make([]*kidv1.KidEvent, 0, len(events))
	for _, e := range events {
		if e.Status.Finished() && e.DeletionTimestamp == nil {
			finished = append(finished, e)
		}
	}
	// Newest first, by the time the receiver stored them.
	slices.SortFunc(finished, func(a, b *kidv1.KidEvent) int {
		return b.Spec.ReceivedAt.Compare(a.Spec.ReceivedAt.Time)
	})
	for i, e := range finished {
		age := now.Sub(e.Spec.ReceivedAt.Time)
		switch {
		case age < r.horizon:
			// Too young for either rule.
			if i >= r.maxEvents {
				next = minPositive(next, r.horizon-age)
			}
		case age >= r.maxAge:
			byAge = append(byAge, e)
		case i >= r.maxEvents:
			byCount = append(byCount, e)
		default:
			next = minPositive(next, r.maxAge-age)
		}
	}
	return byAge, byCount, next
}

func minPositive(a, b time.Duration) time.Duration {
	if a <= 0 || b < a {
		return b
	}
	return a
}
