// Package inbox is the one way into the cluster for k-ID's events: the
// webhook receiver, the k-ID API poller and the browser relay all build and
// store KidEvents here, so that identity, labels and redaction live once and
// every channel dedupes against the others (the same event from two channels
// has the same name).
package inbox

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// Build returns the KidEvent of one k-ID event: its deterministic name (the
// identity rule of design.md §2), labels, subject annotation, owner, and data
// redacted as the product's privacy settings say, and bodySHA256 (of body,
// or of what is stored when the privacy settings removed something:
// storedBody). body is the event as k-ID sent it (a webhook body, or the
// body the poller made of an API answer); signedAt is k-ID's signing time,
// or when the API answered.
func Build(product *kidv1.KidProduct, env *kid.Envelope, body []byte, signedAt, now time.Time, source kidv1.EventSource) (*kidv1.KidEvent, error) {
	data, personal, err := kid.Redact(env.Data, PrivacyOf(product))
	if err != nil {
		return nil, err
	}
	subject := env.Subject()
	stored, err := storedBody(body, env.EventType, env.Data, data)
	if err != nil {
		return nil, err
	}
	signed := metav1.NewTime(signedAt)
	event := newEvent(product, kid.EventName(product.Name, env.EventType, env.Identity(stored, signedAt)), env.EventType, kidv1.EventSubject{
		SessionID:       subject.SessionID,
		ChallengeID:     subject.ChallengeID,
		VerificationIDs: subject.VerificationIDs,
		KUID:            subject.KUID,
	})
	event.Spec.Data = &apiextensionsv1.JSON{Raw: data}
	event.Spec.PersonalData = personal
	event.Spec.ReceivedAt = metav1.NewTime(now)
	event.Spec.SignedAt = &signed
	event.Spec.BodySHA256 = sha256Hex(stored)
	event.Spec.Source = source
	return event, nil
}

// storedBody is what bodySHA256 digests (and, for a type this version does
// not know, what the event's name digests): the body as delivered, unless
// the product's privacy settings removed something from its data; then the
// body as stored, {"data":<the data kept>,"eventType":<the type>} as
// encoding/json writes it (keys sorted at every level, numbers as sent), so
// that anyone can check it against spec.data. A digest of the delivered
// body would give back what was removed to anyone who reads the event: a
// polled body is encoding/json's form of a map, and k-ID's webhooks are as
// regular, so the rest of the event and 36,500 guesses, one hash each, find
// a date of birth.
func storedBody(delivered []byte, eventType string, deliveredData, storedData json.RawMessage) ([]byte, error) {
	if bytes.Equal(deliveredData, storedData) {
		return delivered, nil
	}
	var data any
	dec := json.NewDecoder(bytes.NewReader(storedData))
	dec.UseNumber()
	if err := dec.Decode(&data); err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{"eventType": eventType, "data": data})
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// PrivacyOf is what the product lets events and users keep: the one
// reading of spec.privacy, for the inbox and the folds alike.
func PrivacyOf(product *kidv1.KidProduct) kid.Privacy {
	return kid.Privacy{KeepEmail: product.Spec.Privacy.StoreApproverEmail, KeepDateOfBirth: product.Spec.Privacy.StoreDateOfBirth}
}

// newEvent is what every event has, whatever its channel: its name, the
// product's labels and ownership, the session and verification labels and
// the subject annotation.
func newEvent(product *kidv1.KidProduct, name, eventType string, subject kidv1.EventSubject) *kidv1.KidEvent {
	event := &kidv1.KidEvent{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: product.Namespace,
			Labels: map[string]string{
				kidv1.ProductLabel:   product.Name,
				kidv1.EventTypeLabel: labelValue(eventType),
			},
			OwnerReferences: []metav1.OwnerReference{product.OwnerReference()},
		},
		Spec: kidv1.KidEventSpec{
			ProductRef: kidv1.LocalObjectReference{Name: product.Name},
			EventType:  eventType,
			Subject:    subject,
		},
	}
	if subject.SessionID != "" && len(validation.IsValidLabelValue(subject.SessionID)) == 0 {
		event.Labels[kidv1.SessionLabel] = subject.SessionID
	}
	// A list is no selectable field: a label per verification finds the
	// events naming one (kubectl kid user <verification id>).
	kidv1.SetVerificationLabels(event.Labels, subject.VerificationIDs)
	s := kid.Subject{SessionID: subject.SessionID, ChallengeID: subject.ChallengeID, VerificationIDs: subject.VerificationIDs, KUID: subject.KUID}
	if summary := subjectSummary(s); summary != "" {
		event.Annotations = map[string]string{kidv1.SubjectAnnotation: summary}
	}
	return event
}

// labelValue returns v when it is a valid label value, else its slug.
func labelValue(v string) string {
	if len(validation.IsValidLabelValue(v)) == 0 {
		return v
	}
	return kid.TypeSlug(v)
}

// subjectSummary is the Subject printer column: the strongest id, by kind.
func subjectSummary(s kid.Subject) string {
	switch {
	case s.SessionID != "":
		return "session/" + s.SessionID
	case s.ChallengeID != "":
		return "challenge/" + s.ChallengeID
	case len(s.VerificationIDs) == 1:
		return "verification/" + s.VerificationIDs[0]
	case len(s.VerificationIDs) > 1:
		return "verifications/" + s.VerificationIDs[0] + "+" + strconv.Itoa(len(s.VerificationIDs)-1)
	case s.KUID != "":
		return "kuid/" + s.KUID
	}
	return ""
}
