package kid

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Event types k-ID sends by webhook.
const (
	ChallengeStateChange     = "Challenge.StateChange"
	VerificationResult       = "Verification.Result"
	VerificationRevoke       = "Verification.Revoke"
	AccountDelete            = "Account.Delete"
	AgeAssuranceResult       = "AgeAssurance.Result" // deprecated, both shapes
	AdultVerificationResult  = "AdultVerification.Result"
	ParentalConsentGranted   = "ParentalConsent.Granted"
	SessionChangePermissions = "Session.ChangePermissions"
	SessionDelete            = "Session.Delete"
	TestEvent                = "Test"
)

// Statuses carried in data.status.
const (
	StatusPass         = "PASS"
	StatusFail         = "FAIL"
	StatusInProgress   = "IN_PROGRESS"
	StatusPending      = "PENDING"
	StatusInconclusive = "INCONCLUSIVE"
)

// Limits on what a stored event may name. They match the KidEvent CRD's
// validation, so that a delivery the API server would refuse is answered 400
// (k-ID must not retry it) rather than 503.
const (
	MaxEventTypeLen = 128
	MaxIDLen        = 128
	MaxIDs          = 100
)

// ErrMalformed wraps every reason a validly signed body is not a k-ID event.
var ErrMalformed = errors.New("malformed event")

// Envelope is a parsed k-ID event: its type, its raw data, and the fields of
// every known event type (a union, decoded once; a field the type does not
// carry stays empty).
type Envelope struct {
	EventType string
	// Data is the raw data object, exactly as delivered.
	Data json.RawMessage
	// Payload holds the decoded fields.
	Payload Payload
}

// Payload is the union of the data fields of every webhook event type. Unknown
// fields are ignored, and the numbers k-ID documents are read leniently
// (number or numeric string), since its docs disagree on details.
type Payload struct {
	ID            string       `json:"id"`
	Status        string       `json:"status"`
	SessionID     string       `json:"sessionId"`
	KUID          string       `json:"kuid"`
	ChallengeID   string       `json:"challengeId"`
	ScenarioID    string       `json:"scenarioId"`
	Method        string       `json:"method"`
	AgeCategory   string       `json:"ageCategory"`
	FailureReason string       `json:"failureReason"`
	DOB           string       `json:"dob"`
	ApproverEmail string       `json:"approverEmail"`
	Age           *Age         `json:"age"`
	AgeRange      *LegacyAge   `json:"ageRange"`
	Verifications []Revocation `json:"verifications"`
	ProductID     LenientInt   `json:"productId"`
	// ETag is never in k-ID's payloads: the operator's own
	// Session.ChangePermissions, stored when a resync finds a change no
	// notice announced, carries the session's new etag (its identity).
	ETag string `json:"etag"`
}

// Age is Verification.Result's data.age.
type Age struct {
	Low  *LenientInt `json:"low"`
	High *LenientInt `json:"high"`
}

// LegacyAge is the legacy AgeAssurance.Result's data.ageRange.
type LegacyAge struct {
	MinAge     *LenientInt `json:"minAge"`
	MaxAge     *LenientInt `json:"maxAge"`
	Confidence *float64    `json:"confidence"`
}

// Revocation is one entry of Verification.Revoke's data.verifications.
type Revocation struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// LenientInt reads a JSON number or a string holding one; fractions are
// truncated; anything else reads as unset (zero) rather than failing the
// whole event.
type LenientInt struct {
	Value int64
	Set   bool
}

// UnmarshalJSON implements json.Unmarshaler.
func (n *LenientInt) UnmarshalJSON(b []byte) error {
	s := string(bytes.Trim(b, `"`))
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		*n = LenientInt{Value: v, Set: true}
	} else if f, err := strconv.ParseFloat(s, 64); err == nil && f > -1e15 && f < 1e15 {
		*n = LenientInt{Value: int64(f), Set: true}
	}
	return nil
}

// MarshalJSON implements json.Marshaler.
func (n LenientInt) MarshalJSON() ([]byte, error) {
	if !n.Set {
		return []byte("null"), nil
	}
	return strconv.AppendInt(nil, n.Value, 10), nil
}

// ParseEnvelope parses a webhook body. The body must be a JSON object with a
// non-empty string eventType and an object data; anything else is
// ErrMalformed. Unknown event types parse fine: the caller decides what to
// do with them.
func ParseEnvelope(body []byte) (*Envelope, error) {
	var raw struct {
		EventType *string         `json:"eventType"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object: %v", ErrMalformed, err)
	}
	switch {
	case raw.EventType == nil || *raw.EventType == "":
		return nil, fmt.Errorf("%w: eventType is missing", ErrMalformed)
	case len(*raw.EventType) > MaxEventTypeLen:
		return nil, fmt.Errorf("%w: eventType is longer than %d bytes", ErrMalformed, MaxEventTypeLen)
	case len(raw.Data) == 0 || raw.Data[0] != '{':
		return nil, fmt.Errorf("%w: data is missing or not an object", ErrMalformed)
	}
	env := &Envelope{EventType: *raw.EventType, Data: raw.Data}
	if err := json.Unmarshal(raw.Data, &env.Payload); err != nil {
		// A known field of an unexpected JSON type (say, a numeric id).
		return nil, fmt.Errorf("%w: data: %v", ErrMalformed, err)
	}
	if err := env.checkIDs(); err != nil {
		return nil, err
	}
	return env, nil
}

func (e *Envelope) checkIDs() error {
	p := &e.Payload
	for _, id := range []string{p.ID, p.SessionID, p.KUID, p.ChallengeID} {
		if len(id) > MaxIDLen {
			return fmt.Errorf("%w: an id is longer than %d bytes", ErrMalformed, MaxIDLen)
		}
	}
	if len(p.Verifications) > MaxIDs {
		return fmt.Errorf("%w: more than %d verifications", ErrMalformed, MaxIDs)
	}
	for _, v := range p.Verifications {
		if v.ID == "" || len(v.ID) > MaxIDLen {
			return fmt.Errorf("%w: a revoked verification has no id or one longer than %d bytes", ErrMalformed, MaxIDLen)
		}
	}
	return nil
}

// Known reports whether this version understands the event type. Unknown
// types are stored and ignored, for forward compatibility.
func Known(eventType string) bool {
	switch eventType {
	case ChallengeStateChange, VerificationResult, VerificationRevoke, AccountDelete,
		AgeAssuranceResult, ParentalConsentGranted, SessionChangePermissions, SessionDelete:
		return true
	}
	return false
}

// Subject is the set of k-ID identifiers an event names.
type Subject struct {
	SessionID       string
	ChallengeID     string
	VerificationIDs []string
	KUID            string
}

// Subject returns the identifiers the event names, by its type.
func (e *Envelope) Subject() Subject {
	p := &e.Payload
	switch e.EventType {
	case ChallengeStateChange:
		return Subject{ChallengeID: p.ID, SessionID: p.SessionID, KUID: p.KUID}
	case VerificationResult, AgeAssuranceResult, AdultVerificationResult:
		if p.ID == "" {
			return Subject{}
		}
		return Subject{VerificationIDs: []string{p.ID}}
	case VerificationRevoke:
		ids := make([]string, 0, len(p.Verifications))
		seen := make(map[string]bool, len(p.Verifications))
		for _, v := range p.Verifications {
			if !seen[v.ID] {
				seen[v.ID] = true
				ids = append(ids, v.ID)
			}
		}
		return Subject{VerificationIDs: ids}
	case AccountDelete:
		return Subject{KUID: p.KUID}
	case ParentalConsentGranted:
		return Subject{ChallengeID: p.ChallengeID}
	case SessionChangePermissions, SessionDelete:
		return Subject{SessionID: p.ID}
	}
	return Subject{}
}
