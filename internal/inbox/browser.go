package inbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// The DOM event types of k-ID's widgets (events spec §3.3): what a game's
// page may relay. A DOM event is a hint from the player's browser, never a
// fact (§5.9): it is stored with source browser and is never folded.
const (
	DOMVerificationError          = "Verification.Error"
	DOMVerificationResult         = "Verification.Result"
	DOMAgeGateChallenge           = "Widget.AgeGate.Challenge"
	DOMAgeGateResult              = "Widget.AgeGate.Result"
	DOMDataNoticesConsentApproved = "Widget.DataNotices.ConsentApproved"
	DOMExitReview                 = "Widget.ExitReview"
)

// domTypes are the DOM event types, each saying whether its fields must sit
// in a data object. Verification.Error is flat (eventType, method and
// status at the top level); Widget.ExitReview has no documented payload.
var domTypes = map[string]bool{
	DOMVerificationError:          false,
	DOMVerificationResult:         true,
	DOMAgeGateChallenge:           true,
	DOMAgeGateResult:              true,
	DOMDataNoticesConsentApproved: true,
	DOMExitReview:                 false,
}

// IsDOMEventType reports whether t is one of k-ID's DOM event types.
func IsDOMEventType(t string) bool {
	_, ok := domTypes[t]
	return ok
}

// ErrNotDOMEvent wraps every reason a relayed body is not a k-ID DOM event.
var ErrNotDOMEvent = errors.New("not a k-ID DOM event")

// BrowserMessage is a parsed DOM event as a game's page relayed it.
type BrowserMessage struct {
	// EventType is one of the DOM event types.
	EventType string
	// Data is the event's data object: the message's data, or, for a
	// message without one (the flat Verification.Error, a bare
	// Widget.ExitReview), the message's other members.
	Data json.RawMessage
	// ChallengeID, SessionID and VerificationID are the ids data names
	// (data.challengeId, data.sessionId, data.verificationId), if any.
	ChallengeID, SessionID, VerificationID string
	// Body is the message exactly as relayed.
	Body []byte
}

// NamesIDs reports whether the message names any k-ID id.
func (m *BrowserMessage) NamesIDs() bool {
	return m.ChallengeID != "" || m.SessionID != "" || m.VerificationID != ""
}

// ParseBrowser parses a relayed DOM event: a JSON object whose eventType is a
// DOM event type, in the {eventType, data} envelope (required for the types
// whose fields sit in data) or flat. Anything else wraps ErrNotDOMEvent; the
// error names what is wrong, never a value.
func ParseBrowser(body []byte) (*BrowserMessage, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil || members == nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrNotDOMEvent)
	}
	var eventType string
	if err := json.Unmarshal(members["eventType"], &eventType); err != nil || eventType == "" {
		return nil, fmt.Errorf("%w: eventType is missing or not a string", ErrNotDOMEvent)
	}
	enveloped, ok := domTypes[eventType]
	if !ok {
		return nil, fmt.Errorf("%w: eventType is not one of %s", ErrNotDOMEvent, strings.Join(DOMEventTypes(), ", "))
	}
	m := &BrowserMessage{EventType: eventType, Body: body}
	data, hasData := members["data"]
	switch {
	case hasData && !isObject(data):
		return nil, fmt.Errorf("%w: data is not an object", ErrNotDOMEvent)
	case hasData:
		m.Data = data
	case enveloped:
		return nil, fmt.Errorf("%w: %s carries its fields in a data object", ErrNotDOMEvent, eventType)
	default:
		delete(members, "eventType")
		flat, err := json.Marshal(members)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNotDOMEvent, err)
		}
		m.Data = flat
	}
	var ids struct {
		ChallengeID    *string `json:"challengeId"`
		SessionID      *string `json:"sessionId"`
		VerificationID *string `json:"verificationId"`
	}
	if err := json.Unmarshal(m.Data, &ids); err != nil {
		return nil, fmt.Errorf("%w: challengeId, sessionId and verificationId must be strings", ErrNotDOMEvent)
	}
	for _, id := range []*string{ids.ChallengeID, ids.SessionID, ids.VerificationID} {
		if id != nil && len(*id) > kid.MaxIDLen {
			return nil, fmt.Errorf("%w: an id is longer than %d bytes", ErrNotDOMEvent, kid.MaxIDLen)
		}
	}
	m.ChallengeID, m.SessionID, m.VerificationID = deref(ids.ChallengeID), deref(ids.SessionID), deref(ids.VerificationID)
	return m, nil
}

// DOMEventTypes returns the DOM event types, in the order of k-ID's docs.
func DOMEventTypes() []string {
	return []string{DOMVerificationError, DOMVerificationResult, DOMAgeGateChallenge, DOMAgeGateResult, DOMDataNoticesConsentApproved, DOMExitReview}
}

// BuildBrowser returns the KidEvent of a relayed DOM event about subject (the
// one id the page's relay token names; never the ids the message claims).
// Its name is <product>-<type slug>-<digest>, the digest covering
// "browser", the event type, the subject and bodySHA256 (of the raw body,
// or of what is stored when the privacy settings removed something: see
// storedBody): the same message relayed twice for one subject is one event,
// and no browser event takes the name of a webhook's or a poll's (whose
// identity starts with the event type). Labels, the subject annotation, the owner and the redaction of
// data are those of every other event; signedAt is unset, since k-ID signed
// nothing.
func BuildBrowser(product *kidv1.KidProduct, msg *BrowserMessage, subject kidv1.EventSubject, now time.Time) (*kidv1.KidEvent, error) {
	data, personal, err := kid.Redact(msg.Data, PrivacyOf(product))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotDOMEvent, err)
	}
	stored, err := storedBody(msg.Body, msg.EventType, msg.Data, data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotDOMEvent, err)
	}
	bodyHex := sha256Hex(stored)
	identity := strings.Join([]string{
		string(kidv1.SourceBrowser), msg.EventType,
		subject.SessionID, subject.ChallengeID, strings.Join(subject.VerificationIDs, ","), subject.KUID,
		bodyHex,
	}, "\x00")
	event := newEvent(product, kid.EventName(product.Name, msg.EventType, identity), msg.EventType, subject)
	event.Spec.Data = &apiextensionsv1.JSON{Raw: data}
	event.Spec.PersonalData = personal
	event.Spec.ReceivedAt = metav1.NewTime(now)
	event.Spec.BodySHA256 = bodyHex
	event.Spec.Source = kidv1.SourceBrowser
	return event, nil
}

func isObject(raw json.RawMessage) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && raw[0] == '{'
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
