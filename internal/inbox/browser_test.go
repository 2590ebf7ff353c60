package inbox

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// The DOM examples of k-ID's docs (events spec §3.3).
const (
	domVerificationError  = `{"eventType":"Verification.Error","method":"age-key","status":"ERROR"}`
	domVerificationResult = `{"eventType":"Verification.Result","data":{"verificationId":"4e57301e-a4d1-498f-ac3f-f3d4de19abf6","status":"PASS","method":"id-document","provider":"veratad","age":{"low":43,"high":43},"ageCategory":"adult","dob":"1981-06-20"}}`
	domAgeGateChallenge   = `{"eventType":"Widget.AgeGate.Challenge","data":{"status":"PENDING","challengeId":"a04467a0-83de-40ca-8572-8cc761e896aa"}}`
	domAgeGateResult      = `{"eventType":"Widget.AgeGate.Result","data":{"status":"PASS","sessionId":"f1af4704-74b4-4966-b13a-18eb16bccf9c","challengeId":"a04467a0-83de-40ca-8572-8cc761e896aa"}}`
	domConsentApproved    = `{"eventType":"Widget.DataNotices.ConsentApproved","data":{"jurisdiction":"US"}}`
	domExitReview         = `{"eventType":"Widget.ExitReview"}`
)

func TestParseBrowserAcceptsEveryDOMExample(t *testing.T) {
	cases := []struct {
		body               string
		eventType          string
		data               string
		challenge, session string
		verification       string
	}{
		{body: domVerificationError, eventType: DOMVerificationError, data: `{"method":"age-key","status":"ERROR"}`},
		{body: `{"eventType":"Verification.Error","data":{"method":"age-key","status":"ERROR"}}`, eventType: DOMVerificationError, data: `{"method":"age-key","status":"ERROR"}`},
		{body: domVerificationResult, eventType: DOMVerificationResult, verification: "4e57301e-a4d1-498f-ac3f-f3d4de19abf6"},
		{body: domAgeGateChallenge, eventType: DOMAgeGateChallenge, challenge: "a04467a0-83de-40ca-8572-8cc761e896aa"},
		{body: domAgeGateResult, eventType: DOMAgeGateResult, challenge: "a04467a0-83de-40ca-8572-8cc761e896aa", session: "f1af4704-74b4-4966-b13a-18eb16bccf9c"},
		{body: domConsentApproved, eventType: DOMDataNoticesConsentApproved, data: `{"jurisdiction":"US"}`},
		{body: domExitReview, eventType: DOMExitReview, data: `{}`},
		{body: `{"eventType":"Widget.ExitReview","data":{}}`, eventType: DOMExitReview, data: `{}`},
	}
	for _, tc := range cases {
		t.Run(tc.body, func(t *testing.T) {
			g := NewWithT(t)
			m, err := ParseBrowser([]byte(tc.body))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(m.EventType).To(Equal(tc.eventType))
			g.Expect(m.ChallengeID).To(Equal(tc.challenge))
			g.Expect(m.SessionID).To(Equal(tc.session))
			g.Expect(m.VerificationID).To(Equal(tc.verification))
			g.Expect(m.NamesIDs()).To(Equal(tc.challenge+tc.session+tc.verification != ""))
			if tc.data != "" {
				g.Expect(string(m.Data)).To(MatchJSON(tc.data))
			}
			g.Expect(string(m.Body)).To(Equal(tc.body))
		})
	}
}

func TestParseBrowserRefuses(t *testing.T) {
	cases := map[string]string{
		"an empty body":                  ``,
		"JSON that is not an object":     `["Widget.ExitReview"]`,
		"null":                           `null`,
		"no eventType":                   `{"data":{}}`,
		"a numeric eventType":            `{"eventType":7,"data":{}}`,
		"a webhook event type":           `{"eventType":"Challenge.StateChange","data":{"id":"c","status":"PASS"}}`,
		"an unknown event type":          `{"eventType":"Widget.Other","data":{}}`,
		"an enveloped type without data": `{"eventType":"Widget.AgeGate.Challenge","status":"PENDING","challengeId":"c"}`,
		"data that is a string":          `{"eventType":"Widget.ExitReview","data":"done"}`,
		"data that is null":              `{"eventType":"Verification.Error","data":null}`,
		"a numeric challengeId":          `{"eventType":"Widget.AgeGate.Challenge","data":{"challengeId":7}}`,
		"a sessionId over 128 bytes":     `{"eventType":"Widget.AgeGate.Result","data":{"sessionId":"` + strings.Repeat("s", 129) + `"}}`,
		"trailing garbage":               domExitReview + `x`,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			_, err := ParseBrowser([]byte(body))
			g.Expect(err).To(MatchError(ErrNotDOMEvent))
		})
	}
}

func browserProduct(keepDOB bool) *kidv1.KidProduct {
	return &kidv1.KidProduct{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "games", UID: types.UID("uid-demo")},
		Spec:       kidv1.KidProductSpec{Privacy: kidv1.PrivacySpec{StoreDateOfBirth: keepDOB}},
	}
}

func mustBuild(t *testing.T, p *kidv1.KidProduct, body string, s kidv1.EventSubject) *kidv1.KidEvent {
	t.Helper()
	m, err := ParseBrowser([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	e, err := BuildBrowser(p, m, s, time.Unix(1764000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestBuildBrowser(t *testing.T) {
	g := NewWithT(t)
	verification := kidv1.EventSubject{VerificationIDs: []string{"4e57301e-a4d1-498f-ac3f-f3d4de19abf6"}}
	e := mustBuild(t, browserProduct(false), domVerificationResult, verification)

	g.Expect(e.Name).To(HavePrefix("demo-verification-result-"))
	g.Expect(e.Namespace).To(Equal("games"))
	g.Expect(e.Spec.Source).To(Equal(kidv1.SourceBrowser))
	g.Expect(e.Spec.EventType).To(Equal(DOMVerificationResult))
	g.Expect(e.Spec.Subject).To(Equal(verification))
	g.Expect(e.Spec.SignedAt).To(BeNil(), "k-ID signed nothing")
	g.Expect(e.Spec.ReceivedAt.Time).To(Equal(time.Unix(1764000000, 0)))
	g.Expect(e.Spec.BodySHA256).To(HaveLen(64))
	g.Expect(string(e.Spec.Data.Raw)).NotTo(ContainSubstring("dob"))
	g.Expect(string(e.Spec.Data.Raw)).NotTo(ContainSubstring("1981-06-20"))
	g.Expect(string(e.Spec.Data.Raw)).To(ContainSubstring(`"provider":"veratad"`))
	g.Expect(e.Spec.PersonalData).To(BeFalse())
	// The verification's label: kubectl kid finds the events naming it by
	// it (a list is no selectable field).
	g.Expect(e.Labels).To(Equal(map[string]string{kidv1.ProductLabel: "demo", kidv1.EventTypeLabel: DOMVerificationResult,
		kidv1.VerificationLabel("4e57301e-a4d1-498f-ac3f-f3d4de19abf6"): ""}))
	g.Expect(e.Annotations).To(HaveKeyWithValue(kidv1.SubjectAnnotation, "verification/4e57301e-a4d1-498f-ac3f-f3d4de19abf6"))
	g.Expect(e.OwnerReferences).To(ConsistOf(HaveField("UID", types.UID("uid-demo"))))

	kept := mustBuild(t, browserProduct(true), domVerificationResult, verification)
	g.Expect(string(kept.Spec.Data.Raw)).To(ContainSubstring("1981-06-20"))
	g.Expect(kept.Spec.PersonalData).To(BeTrue())

	session := mustBuild(t, browserProduct(false), domAgeGateResult, kidv1.EventSubject{SessionID: "f1af4704-74b4-4966-b13a-18eb16bccf9c"})
	g.Expect(session.Labels).To(HaveKeyWithValue(kidv1.SessionLabel, "f1af4704-74b4-4966-b13a-18eb16bccf9c"))
	g.Expect(session.Spec.Subject).To(Equal(kidv1.EventSubject{SessionID: "f1af4704-74b4-4966-b13a-18eb16bccf9c"}), "the token's subject alone, not the ids the message claims")

	flat := mustBuild(t, browserProduct(false), domVerificationError, kidv1.EventSubject{ChallengeID: "c-1"})
	var data map[string]any
	g.Expect(json.Unmarshal(flat.Spec.Data.Raw, &data)).To(Succeed())
	g.Expect(data).To(Equal(map[string]any{"method": "age-key", "status": "ERROR"}))
}

func TestBrowserEventNames(t *testing.T) {
	g := NewWithT(t)
	p := browserProduct(false)
	s1 := kidv1.EventSubject{SessionID: "s-1"}
	s2 := kidv1.EventSubject{SessionID: "s-2"}
	c1 := kidv1.EventSubject{ChallengeID: "s-1"}

	g.Expect(mustBuild(t, p, domExitReview, s1).Name).To(Equal(mustBuild(t, p, domExitReview, s1).Name), "the same message for one subject is one event")
	g.Expect(mustBuild(t, p, domExitReview, s1).Name).NotTo(Equal(mustBuild(t, p, domExitReview, s2).Name), "another player's")
	g.Expect(mustBuild(t, p, domExitReview, s1).Name).NotTo(Equal(mustBuild(t, p, domExitReview, c1).Name), "another kind of subject with the same id")
	g.Expect(mustBuild(t, p, domExitReview, s1).Name).NotTo(Equal(mustBuild(t, p, `{"eventType":"Widget.ExitReview","data":{}}`, s1).Name), "another body")

	// A webhook's Verification.Result about the same verification never
	// shares the browser event's name, whatever its body.
	webhook := `{"eventType":"Verification.Result","data":{"id":"4e57301e-a4d1-498f-ac3f-f3d4de19abf6","status":"PASS"}}`
	env, err := kid.ParseEnvelope([]byte(webhook))
	g.Expect(err).NotTo(HaveOccurred())
	w, err := Build(p, env, []byte(webhook), time.Unix(1764000000, 0), time.Unix(1764000000, 0), kidv1.SourceWebhook)
	g.Expect(err).NotTo(HaveOccurred())
	b := mustBuild(t, p, domVerificationResult, kidv1.EventSubject{VerificationIDs: []string{"4e57301e-a4d1-498f-ac3f-f3d4de19abf6"}})
	g.Expect(b.Name).NotTo(Equal(w.Name))
	g.Expect(b.Name).To(HavePrefix("demo-verification-result-"))
}
