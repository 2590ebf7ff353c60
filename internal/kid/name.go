package kid

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"
	"time"
)

// NotificationWindow is the deduplication window of events whose body says
// only "something changed" (Session.ChangePermissions carries nothing but the
// session id, so two genuine changes have identical bodies). Deliveries of such
// an event signed in the same window are one event; those in different windows
// are two. A retry that crosses a window boundary makes a second event, which
// is harmless: each means "re-read the session".
const NotificationWindow = time.Minute

// Identity returns the string that identifies one logical event: k-ID's
// retries of one delivery (same body, any timestamp) have the same identity,
// and genuinely different events have different ones. See design.md §2.
func (e *Envelope) Identity(body []byte, signedAt time.Time) string {
	p := &e.Payload
	parts := []string{e.EventType}
	switch e.EventType {
	case ChallengeStateChange, VerificationResult, AgeAssuranceResult, AdultVerificationResult:
		// One challenge or verification moves through several statuses.
		parts = append(parts, p.ID, p.Status)
	case VerificationRevoke:
		revoked := make([]string, 0, len(p.Verifications))
		for _, v := range p.Verifications {
			revoked = append(revoked, v.ID+"/"+v.Reason)
		}
		sort.Strings(revoked)
		parts = append(parts, revoked...)
	case AccountDelete:
		parts = append(parts, p.KUID)
	case ParentalConsentGranted:
		parts = append(parts, p.ChallengeID)
	case SessionDelete, TestEvent:
		parts = append(parts, p.ID)
	case SessionChangePermissions:
		if p.ETag != "" {
			// A change the session sync found (no notice announced it):
			// the session's new etag names it, so finding the same change
			// again (a restart before the read was written) is the same
			// event.
			parts = append(parts, p.ID, "etag", p.ETag)
			break
		}
		window := signedAt.Unix() / int64(NotificationWindow/time.Second)
		parts = append(parts, p.ID, strconv.FormatInt(window, 10))
	default:
		// An unknown type: nothing is known of its identity but its bytes.
		sum := sha256.Sum256(body)
		parts = append(parts, hex.EncodeToString(sum[:]))
	}
	return strings.Join(parts, "\x00")
}

// maxTypeSlugLen bounds the event type's share of an object name.
const maxTypeSlugLen = 40

// EventName returns the KidEvent name of an event: the product, the event type
// and a digest of the event's identity. It is a valid DNS subdomain of at most
// 63 + 1 + 40 + 1 + 20 characters for a product name of at most 63.
func EventName(product, eventType, identity string) string {
	sum := sha256.Sum256([]byte(identity))
	return product + "-" + TypeSlug(eventType) + "-" + hex.EncodeToString(sum[:10])
}

// TypeSlug is the event type made safe for object names and label values:
// lower case, with every run of other characters turned into one '-'.
func TypeSlug(eventType string) string {
	var b strings.Builder
	b.Grow(len(eventType))
	dash := false
	for _, r := range strings.ToLower(eventType) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
		if b.Len() >= maxTypeSlugLen {
			break
		}
	}
	s := strings.TrimRight(b.String(), "-")
	if s == "" {
		return "unknown"
	}
	return s
}
