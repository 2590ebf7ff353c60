package controllers

import (
	"context"
	"errors"
	"time"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidapi"
)

// Revocations (design.md §3, "Recovery"). A Verification.Revoke whose
// webhook was lost would never be recovered by polling what is pending: a
// verification is polled until its decision, and a revocation comes after
// the decision. So each passed verification is read again from
// /age-verification/get-status once per resync interval
// (kiduser_resync.go), unless spec.api.recovery.recheckVerifications is
// false. k-ID does not document how get-status answers a revoked
// verification (spec §4.4, §6.14): an answer that says so in any of the
// shapes kidapi reads (a status REVOKED, a revoked flag) is stored as the
// Verification.Revoke the webhook would have been (source poll). An answer
// that does not say so recovers nothing; nor does a verification k-ID no
// longer knows: k-ID deletes only verifications left PENDING for two
// weeks, so a passed one answering "not found" is not a revocation.

// recheckAt is when the user's passed verification rec is due its read
// again: an interval after the last read, this controller's, or else the
// decision's.
func (r *KidUserReconciler) recheckAt(user *kidv1.KidUser, rec *kidv1.VerificationRecord, interval time.Duration) time.Time {
	last := r.polls.rechecked(user, rec.ID)
	if last.IsZero() && rec.Time != nil {
		last = rec.Time.Time
	}
	return last.Add(interval)
}

// recheckVerified reads the user's passed verifications again when due,
// one call each, and returns when the next is due.
func (r *KidUserReconciler) recheckVerified(ctx context.Context, c *APIClient, product *kidv1.KidProduct, user *kidv1.KidUser, p *apiPass) (time.Duration, error) {
	if !product.Spec.API.Recovery.RechecksVerifications() {
		return 0, nil
	}
	interval := r.resyncInterval(product, user)
	var next time.Duration
	for _, rec := range user.Status.Verification.Records {
		if rec.State != kidv1.VerificationVerified {
			continue
		}
		if due := r.recheckAt(user, &rec, interval); !p.force && p.now.Before(due) {
			next = minPositive(next, due.Sub(p.now))
			continue
		}
		if d := r.takeSlot(c, user, p, kidapi.Resync); d > 0 {
			return d, nil
		}
		if err := r.recheckVerification(ctx, c, product, rec.ID); err != nil {
			if wait := r.apiFailed(ctx, c, product, user, p, "verification", err); wait > 0 {
				return wait, nil
			}
		}
		r.polls.update(user, func(s *pollState) {
			if s.rechecked == nil {
				s.rechecked = map[string]time.Time{}
			}
			s.rechecked[rec.ID] = p.now
		})
		next = minPositive(next, interval)
	}
	return next, nil
}

// recheckVerification asks k-ID for a passed verification's status and
// stores its revocation, if the answer says it was revoked.
func (r *KidUserReconciler) recheckVerification(ctx context.Context, c *APIClient, product *kidv1.KidProduct, id string) error {
	got, err := c.WithReservation().VerificationStatus(ctx, id)
	if err != nil {
		var apiErr *kidapi.Error
		if errors.As(err, &apiErr) && apiErr.HTTPStatus == 400 {
			// Not found: not a revocation (k-ID deletes only pending
			// verifications, after two weeks).
			recoveryPollsTotal.WithLabelValues(productLabel(product), "revocation", "not-found").Inc()
			return nil
		}
		return err
	}
	if !got.Revoked {
		recoveryPollsTotal.WithLabelValues(productLabel(product), "revocation", "unchanged").Inc()
		return nil
	}
	recoveryPollsTotal.WithLabelValues(productLabel(product), "revocation", "changed").Inc()
	revoked := map[string]any{"id": id, "reason": got.RevokedReason}
	_, err = r.storePolled(ctx, product, kid.VerificationRevoke, map[string]any{"verifications": []any{revoked}})
	return err
}
