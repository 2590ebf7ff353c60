package controllers

import (
	"context"
	"time"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// A Challenge.StateChange that names no session (k-ID's IN_PROGRESS, sent
// before a session exists) and that no user or stored event links to one
// yet would be folded into a new stand-in, known by the challenge. When its
// PASS follows close behind, as it does when the controllers keep up with a
// player's events sent back to back, the stand-in is created, written, then
// merged into the session's user and deleted: four writes for nothing
// (docs/benchmarks.md, "Journeys"). So such an event waits, Pending, until
// StandInDelay after it was received before its stand-in is made: a PASS
// stored meanwhile links the challenge (linkedSession, or the session's
// user holding it once folded), and the event folds straight into the
// player. The wait is bounded from the event's receipt, not from each
// pass, so an event received long ago (a restart, a backlog) folds at once.

// DefaultStandInDelay is the manager's StandInDelay. Two seconds covers a
// PASS sent right after its IN_PROGRESS (an automated flow, the session
// sync of a consent given at once, a retried delivery) and keeps the
// challenge's Applied, and any action it matches, at most two seconds
// late. It is fixed rather than a flag: the wait changes no outcome, only
// the writes an unlinked challenge costs, and a PASS that comes later (a
// parent's consent takes minutes) is not waited for at any setting worth
// having.
const DefaultStandInDelay = 2 * time.Second

// reconcileStandInDelay ends the pass of a Pending Challenge.StateChange of
// k-ID that names no session, while it is younger than StandInDelay and
// nothing links its challenge yet (no user holds it, no stored event of
// k-ID names it with a session), and asks for it again when the delay is
// over. It runs before the event's live read, so a delayed pass costs the
// API server nothing.
func (r *KidEventReconciler) reconcileStandInDelay(ctx context.Context, p *eventPass) (stepOutcome, error) {
	e := p.event
	s := e.Spec.Subject
	if r.StandInDelay <= 0 || !p.pending() || e.Spec.Source == kidv1.SourceBrowser ||
		e.Spec.EventType != kid.ChallengeStateChange || s.ChallengeID == "" || s.SessionID != "" {
		return carryOn, nil
	}
	wait := e.Spec.ReceivedAt.Add(r.StandInDelay).Sub(r.Clock.Now())
	if wait <= 0 {
		return carryOn, nil
	}
	holders, err := r.holders(ctx, e.Namespace, kidv1.UserIDKey(e.Spec.ProductRef.Name, kidv1.IdentityChallenge, s.ChallengeID), nil)
	if err != nil || len(holders) > 0 {
		return carryOn, err
	}
	session, err := r.linkedSession(ctx, e, s.ChallengeID)
	if err != nil || session != "" {
		return carryOn, err
	}
	standInDelaysTotal.Inc()
	return comeBackAfter(wait), nil
}
