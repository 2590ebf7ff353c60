// Package inbox is the one way into the cluster for k-ID's events: the
// webhook receiver, the k-ID API poller and the browser relay all build and
// store KidEvents here, so that identity, labels and redaction live once and
// every channel dedupes against the others (the same event from two channels
// has the same name).
package inbox

import (
	"crypto/sha256"
	"encoding/hex"
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
// redacted as the product's privacy settings say. body is the event as k-ID
// sent it (a webhook body, or the body the poller made of an API answer);
// signedAt is k-ID's signing time, or when the API answered.
func Build(product *kidv1.KidProduct, env *kid.Envelope, body []byte, signedAt, now time.Time, source kidv1.EventSource) (*kidv1.KidEvent, error) {
	privacy := kid.Privacy{
		KeepEmail:       product.Spec.Privacy.StoreApproverEmail,
		KeepDateOfBirth: product.Spec.Privacy.StoreDateOfBirth,
	}
	data, personal, err := kid.Redact(env.Data, privacy)
	if err != nil {
		return nil, err
	}
	subject := env.Subject()
	sum := sha256.Sum256(body)
	signed := metav1.NewTime(signedAt)

	event := &kidv1.KidEvent{
		ObjectMeta: metav1.ObjectMeta{
			Name:      kid.EventName(product.Name, env.EventType, env.Identity(body, signedAt)),
			Namespace: product.Namespace,
			Labels: map[string]string{
				kidv1.ProductLabel:   product.Name,
				kidv1.EventTypeLabel: labelValue(env.EventType),
			},
			OwnerReferences: []metav1.OwnerReference{product.OwnerReference()},
		},
		Spec: kidv1.KidEventSpec{
			ProductRef: kidv1.LocalObjectReference{Name: product.Name},
			EventType:  env.EventType,
			Subject: kidv1.EventSubject{
				SessionID:       subject.SessionID,
				ChallengeID:     subject.ChallengeID,
				VerificationIDs: subject.VerificationIDs,
				KUID:            subject.KUID,
			},
			Data:         &apiextensionsv1.JSON{Raw: data},
			PersonalData: personal,
			ReceivedAt:   metav1.NewTime(now),
			SignedAt:     &signed,
			BodySHA256:   hex.EncodeToString(sum[:]),
			Source:       source,
		},
	}
	if subject.SessionID != "" && len(validation.IsValidLabelValue(subject.SessionID)) == 0 {
		event.Labels[kidv1.SessionLabel] = subject.SessionID
	}
	if s := subjectSummary(subject); s != "" {
		event.Annotations = map[string]string{kidv1.SubjectAnnotation: s}
	}
	return event, nil
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
