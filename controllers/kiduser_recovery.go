package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidapi"
)

// Recovery (design.md §3, "Recovery"): a pending challenge or verification
// is polled on a backoff from when it was first seen (pollPoint), until its
// horizon. The schedule is computed from the pending item's time, not
// stored; only the last poll is kept, in memory (pollMemory), so a restart
// polls each pending player once at its next point. A changed status is
// stored as an event with source poll through the same inbox as a webhook
// (storePolled), named by the same identity rule, so whichever of webhook
// and poll arrives second is a duplicate.

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

// recoveryDue says whether a pending challenge or verification, pending
// since since and last polled at polledAt (zero: not by this process), is
// due a poll at now; if not, the wait until its next point. givenUp is set
// past the recovery horizon, where nothing polls it any more.
func recoveryDue(product *kidv1.KidProduct, since, polledAt, now time.Time) (givenUp, due bool, next time.Duration) {
	first, maxInterval, horizon := product.Spec.API.Recovery.Backoff()
	elapsed := now.Sub(since)
	point, next := pollPoint(elapsed, first, maxInterval)
	return elapsed > horizon, point >= 0 && polledAt.Before(since.Add(point)), next
}

// recover polls the user's pending challenge or verification when due.
func (r *KidUserReconciler) recover(ctx context.Context, c *APIClient, product *kidv1.KidProduct, user *kidv1.KidUser, p *apiPass) (time.Duration, error) {
	now := p.now
	kind, id, since := pending(user)
	if kind == "" {
		return 0, nil
	}
	givenUp, due, next := recoveryDue(product, since, r.polls.get(user).polledAt, now)
	// Past the horizon nothing polls it any more: the product's
	// status.api counts it, until a decision or the user goes.
	p.givenUp = givenUp
	if p.givenUp && !p.force {
		return 0, nil
	}
	if !p.force && !due {
		return next, nil
	}
	// Polls on the backoff are the resync lane's; a forced one (a browser
	// event's confirmation, a person's request) is urgent.
	lane := kidapi.Resync
	if p.force {
		lane = kidapi.Urgent
	}
	if d := r.takeSlot(c, user, p, lane); d > 0 {
		return d, nil
	}
	var err error
	if kind == kidv1.IdentityChallenge {
		err = r.pollChallenge(ctx, c, product, user, id)
	} else {
		err = r.pollVerification(ctx, c, product, id)
	}
	if err != nil {
		if wait := r.apiFailed(ctx, c, product, user, p, string(kind), err); wait > 0 {
			return wait, nil
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
			recoveryPollsTotal.WithLabelValues(productLabel(product), "challenge", "not-found").Inc()
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
			recoveryPollsTotal.WithLabelValues(productLabel(product), "challenge", "unchanged").Inc()
			return nil
		}
	default:
		recoveryPollsTotal.WithLabelValues(productLabel(product), "challenge", "unchanged").Inc()
		return nil
	}
	recoveryPollsTotal.WithLabelValues(productLabel(product), "challenge", "changed").Inc()
	_, err = r.storePolled(ctx, product, kid.ChallengeStateChange, data)
	return err
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
			recoveryPollsTotal.WithLabelValues(productLabel(product), "verification", "not-found").Inc()
			return nil
		}
		return err
	}
	if got.Status != kid.StatusPass && got.Status != kid.StatusFail {
		recoveryPollsTotal.WithLabelValues(productLabel(product), "verification", "unchanged").Inc()
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
	recoveryPollsTotal.WithLabelValues(productLabel(product), "verification", "changed").Inc()
	_, err = r.storePolled(ctx, product, kid.VerificationResult, data)
	return err
}

// storePolled stores what k-ID's API answered as an event with source poll,
// through the same inbox as the webhooks: same name, labels and redaction,
// so a webhook of the same change is a duplicate, whichever comes first,
// and whichever comes second adds what the first lacked. stored is false
// when the event was there already.
func (r *KidUserReconciler) storePolled(ctx context.Context, product *kidv1.KidProduct, eventType string, data map[string]any) (stored bool, err error) {
	body, err := json.Marshal(map[string]any{"eventType": eventType, "data": data})
	if err != nil {
		return false, err
	}
	env, err := kid.ParseEnvelope(body)
	if err != nil {
		return false, fmt.Errorf("k-ID's answer makes no event: %w", err)
	}
	now := r.Clock.Now()
	event, err := inbox.Build(product, env, body, now, now, kidv1.SourcePoll)
	if err != nil {
		return false, err
	}
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	// A duplicate gains what this answer carries and the stored copy
	// lacks (inbox.Enrich): a poll may come second to a webhook that the
	// answer would complete, as well as first.
	switch err := inbox.ClientStore(r.Client, reader)(ctx, product, event); {
	case err == nil:
		// The poll's copy is the stored one: the cluster learned this
		// from the API first.
		recoveredEventsTotal.WithLabelValues(productLabel(product), typeLabel(eventType)).Inc()
		return true, nil
	case apierrors.IsAlreadyExists(err):
		// The webhook's copy (or an earlier poll's) was stored first:
		// nothing was recovered.
		return false, nil
	default:
		return false, fmt.Errorf("storing polled event: %w", err)
	}
}
