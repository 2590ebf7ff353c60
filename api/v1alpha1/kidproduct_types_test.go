package v1alpha1_test

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

func TestTimestampToleranceIsClampedToItsBounds(t *testing.T) {
	cases := []struct {
		name string
		spec *metav1.Duration
		want time.Duration
	}{
		{name: "unset is the default", spec: nil, want: kidv1.DefaultTimestampTolerance},
		{name: "zero is the default", spec: &metav1.Duration{}, want: kidv1.DefaultTimestampTolerance},
		{name: "negative is the default", spec: &metav1.Duration{Duration: -time.Minute}, want: kidv1.DefaultTimestampTolerance},
		{name: "inside the bounds is kept", spec: &metav1.Duration{Duration: 90 * time.Second}, want: 90 * time.Second},
		{name: "a week is an hour", spec: &metav1.Duration{Duration: 7 * 24 * time.Hour}, want: time.Hour},
		{name: "a millisecond is a second", spec: &metav1.Duration{Duration: time.Millisecond}, want: time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &kidv1.KidProduct{}
			p.Spec.Webhook.TimestampTolerance = tc.spec
			NewWithT(t).Expect(p.TimestampTolerance().Duration).To(Equal(tc.want))
		})
	}
}

// The path is pasted into Compliance Studio: a change here breaks every
// configured product, so the test pins the literal rather than rebuilding it.
func TestWebhookPathIsTheDocumentedShape(t *testing.T) {
	NewWithT(t).Expect(kidv1.WebhookPath("games", "my-game")).To(Equal("/webhooks/games/my-game"))
}
