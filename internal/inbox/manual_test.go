package inbox

import (
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

func manualProduct() *kidv1.KidProduct {
	return &kidv1.KidProduct{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "games", UID: "uid-1"},
		Spec:       kidv1.KidProductSpec{ProductID: 11472},
	}
}

func TestBuildErasureIsNamedAsKidsOwnEventSoEitherIsADuplicate(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name      string
		req       Erasure
		eventType string
		fields    kidsim.Fields
		subject   kidv1.EventSubject
	}{
		{name: "a session becomes Session.Delete", req: Erasure{SessionID: "s-1"}, eventType: kid.SessionDelete,
			fields: kidsim.Fields{SessionID: "s-1", ProductID: 11472}, subject: kidv1.EventSubject{SessionID: "s-1"}},
		{name: "a kuid becomes Account.Delete", req: Erasure{KUID: "k-1"}, eventType: kid.AccountDelete,
			fields: kidsim.Fields{KUID: "k-1", ProductID: 11472}, subject: kidv1.EventSubject{KUID: "k-1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := BuildErasure(manualProduct(), tc.req, now)
			g.Expect(err).NotTo(HaveOccurred())

			// What k-ID itself would have sent, through the webhook path.
			body, err := kidsim.Build(tc.eventType, tc.fields)
			g.Expect(err).NotTo(HaveOccurred())
			env, err := kid.ParseEnvelope(body)
			g.Expect(err).NotTo(HaveOccurred())
			webhook, err := Build(manualProduct(), env, body, now.Add(time.Hour), now.Add(time.Hour), kidv1.SourceWebhook)
			g.Expect(err).NotTo(HaveOccurred())

			g.Expect(got.Name).To(Equal(webhook.Name))
			g.Expect(got.Labels).To(Equal(webhook.Labels))
			g.Expect(got.Annotations).To(Equal(webhook.Annotations))
			g.Expect(got.OwnerReferences).To(Equal(webhook.OwnerReferences))
			g.Expect(got.Spec.EventType).To(Equal(tc.eventType))
			g.Expect(got.Spec.Subject).To(Equal(tc.subject))
			g.Expect(got.Spec.Source).To(Equal(kidv1.SourceManual))
			g.Expect(got.Spec.SignedAt).To(BeNil(), "k-ID signed nothing")
			g.Expect(got.Spec.ReceivedAt.Time).To(Equal(now))
			g.Expect(string(got.Spec.Data.Raw)).To(MatchJSON(string(webhook.Spec.Data.Raw)))
		})
	}
}

func TestBuildErasureRefusesWhatIsNotOneBoundedID(t *testing.T) {
	cases := map[string]Erasure{
		"no id":          {},
		"both ids":       {SessionID: "s-1", KUID: "k-1"},
		"an id too long": {SessionID: strings.Repeat("s", kid.MaxIDLen+1)},
	}
	for name, req := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := BuildErasure(manualProduct(), req, time.Now())
			NewWithT(t).Expect(err).To(HaveOccurred())
		})
	}
}
