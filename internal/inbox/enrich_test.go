package inbox

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

// challengePass builds a Challenge.StateChange PASS as the inbox would from
// a channel: data is what that channel carried.
func challengePass(t *testing.T, product *kidv1.KidProduct, source kidv1.EventSource, data map[string]any) *kidv1.KidEvent {
	t.Helper()
	body, err := json.Marshal(map[string]any{"eventType": kid.ChallengeStateChange, "data": data})
	if err != nil {
		t.Fatal(err)
	}
	env, err := kid.ParseEnvelope(body)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e, err := Build(product, env, body, now, now, source)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func dataOf(g Gomega, e *kidv1.KidEvent) map[string]any {
	var m map[string]any
	g.Expect(json.Unmarshal(e.Spec.Data.Raw, &m)).To(Succeed())
	return m
}

func TestEnrichAddsOnlyWhatTheStoredCopyLacks(t *testing.T) {
	keepDOB := manualProduct()
	keepDOB.Spec.Privacy.StoreDateOfBirth = true
	polled := map[string]any{"id": "c-1", "status": "PASS", "kuid": "k-1"}
	webhook := map[string]any{"id": "c-1", "status": "PASS", "kuid": "k-1", "sessionId": "s-1", "dob": "2013-04-01", "approverEmail": "parent@example.com"}

	cases := []struct {
		name          string
		product       *kidv1.KidProduct
		stored, later map[string]any
		storedSource  kidv1.EventSource
		laterSource   kidv1.EventSource
		// wantAdded nil: nothing is added, and Event is nil.
		wantAdded     []string
		wantConflicts []string
		wantData      map[string]any
		wantSubject   kidv1.EventSubject
		wantPersonal  bool
	}{
		{
			name:    "a webhook after a poll without the session adds the session and the dob the product keeps, never the email",
			product: keepDOB, stored: polled, later: webhook, storedSource: kidv1.SourcePoll, laterSource: kidv1.SourceWebhook,
			wantAdded:   []string{"subject.sessionId", "data.dob", "data.sessionId"},
			wantData:    map[string]any{"id": "c-1", "status": "PASS", "kuid": "k-1", "sessionId": "s-1", "dob": "2013-04-01"},
			wantSubject: kidv1.EventSubject{SessionID: "s-1", ChallengeID: "c-1", KUID: "k-1"}, wantPersonal: true,
		},
		{
			name:    "with privacy keeping nothing, only the ids are added and the event holds no personal data",
			product: manualProduct(), stored: polled, later: webhook, storedSource: kidv1.SourcePoll, laterSource: kidv1.SourceWebhook,
			wantAdded:   []string{"subject.sessionId", "data.sessionId"},
			wantData:    map[string]any{"id": "c-1", "status": "PASS", "kuid": "k-1", "sessionId": "s-1"},
			wantSubject: kidv1.EventSubject{SessionID: "s-1", ChallengeID: "c-1", KUID: "k-1"},
		},
		{
			name:    "a poorer copy adds nothing",
			product: keepDOB, stored: webhook, later: polled, storedSource: kidv1.SourceWebhook, laterSource: kidv1.SourcePoll,
		},
		{
			name:    "a conflicting value never overwrites, and is reported by name while the missing keys are still added",
			product: keepDOB, stored: map[string]any{"id": "c-1", "status": "PASS", "kuid": "k-1"},
			later:        map[string]any{"id": "c-1", "status": "PASS", "kuid": "k-2", "sessionId": "s-1"},
			storedSource: kidv1.SourcePoll, laterSource: kidv1.SourceWebhook,
			wantAdded: []string{"subject.sessionId", "data.sessionId"}, wantConflicts: []string{"subject.kuid", "data.kuid"},
			wantData:    map[string]any{"id": "c-1", "status": "PASS", "kuid": "k-1", "sessionId": "s-1"},
			wantSubject: kidv1.EventSubject{SessionID: "s-1", ChallengeID: "c-1", KUID: "k-1"},
		},
		{
			name:    "a browser copy never enriches a poll's",
			product: keepDOB, stored: polled, later: webhook, storedSource: kidv1.SourcePoll, laterSource: kidv1.SourceBrowser,
		},
		{
			name:    "a stored browser copy is never enriched",
			product: keepDOB, stored: polled, later: webhook, storedSource: kidv1.SourceBrowser, laterSource: kidv1.SourceWebhook,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			stored := challengePass(t, tc.product, tc.storedSource, tc.stored)
			later := challengePass(t, tc.product, tc.laterSource, tc.later)
			before := stored.DeepCopy()
			got, err := Enrich(stored, later, PrivacyOf(tc.product))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(stored).To(Equal(before), "the stored copy is not modified")
			g.Expect(got.Conflicts).To(ConsistOf(tc.wantConflicts))
			if tc.wantAdded == nil {
				g.Expect(got.Event).To(BeNil())
				g.Expect(got.Added).To(BeEmpty())
				return
			}
			g.Expect(got.Added).To(ConsistOf(tc.wantAdded))
			e := got.Event
			g.Expect(dataOf(g, e)).To(Equal(tc.wantData))
			g.Expect(e.Spec.Subject).To(Equal(tc.wantSubject))
			g.Expect(e.Spec.PersonalData).To(Equal(tc.wantPersonal))
			g.Expect(e.Labels).To(HaveKeyWithValue(kidv1.SessionLabel, "s-1"))
			g.Expect(e.Annotations).To(HaveKeyWithValue(kidv1.SubjectAnnotation, "session/s-1"))
			// What identifies and dates the stored copy is kept.
			g.Expect(e.Name).To(Equal(before.Name))
			g.Expect(e.Spec.Source).To(Equal(before.Spec.Source))
			g.Expect(e.Spec.BodySHA256).To(Equal(before.Spec.BodySHA256))
			g.Expect(e.Spec.ReceivedAt).To(Equal(before.Spec.ReceivedAt))
		})
	}
}

func TestEnrichRedactsWhatTheLaterCopyCarriesAgain(t *testing.T) {
	// A later copy built under looser settings (or by hand) still adds
	// only what the product keeps.
	g := NewWithT(t)
	product := manualProduct()
	stored := challengePass(t, product, kidv1.SourcePoll, map[string]any{"id": "c-1", "status": "PASS"})
	later := stored.DeepCopy()
	later.Spec.Source = kidv1.SourceWebhook
	later.Spec.Data = &apiextensionsv1.JSON{Raw: []byte(`{"id":"c-1","status":"PASS","approverEmail":"parent@example.com","dob":"2013-04-01","sessionId":"s-1"}`)}
	got, err := Enrich(stored, later, PrivacyOf(product))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got.Added).To(ConsistOf("data.sessionId"))
	g.Expect(dataOf(g, got.Event)).To(Equal(map[string]any{"id": "c-1", "status": "PASS", "sessionId": "s-1"}))
	g.Expect(got.Event.Spec.PersonalData).To(BeFalse())
}

func TestStoreAddsALaterCopysFieldsAndStillAnswersAlreadyExists(t *testing.T) {
	keepDOB := manualProduct()
	keepDOB.Spec.Privacy.StoreDateOfBirth = true
	polled := map[string]any{"id": "c-1", "status": "PASS"}
	webhook := map[string]any{"id": "c-1", "status": "PASS", "sessionId": "s-1", "dob": "2013-04-01"}
	cases := []struct {
		name        string
		laterSource kidv1.EventSource
		wantSession string
	}{
		{name: "a webhook copy enriches the polled one", laterSource: kidv1.SourceWebhook, wantSession: "s-1"},
		{name: "a browser copy leaves it as stored", laterSource: kidv1.SourceBrowser, wantSession: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ctx := context.Background()
			c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
			store := ClientStore(c, c)
			g.Expect(store(ctx, keepDOB, challengePass(t, keepDOB, kidv1.SourcePoll, polled))).To(Succeed())
			later := challengePass(t, keepDOB, tc.laterSource, webhook)
			err := store(ctx, keepDOB, later)
			g.Expect(apierrors.IsAlreadyExists(err)).To(BeTrue(), "a duplicate, as before: %v", err)

			got := &kidv1.KidEvent{}
			g.Expect(c.Get(ctx, client.ObjectKeyFromObject(later), got)).To(Succeed())
			g.Expect(got.Spec.Source).To(Equal(kidv1.SourcePoll))
			g.Expect(got.Spec.Subject.SessionID).To(Equal(tc.wantSession))
			g.Expect(got.Spec.PersonalData).To(Equal(tc.wantSession != ""))
		})
	}
}
