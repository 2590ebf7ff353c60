package inbox

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// A digest over what k-ID sent gives back what the privacy settings removed:
// the bodies are regular (encoding/json's form of a map, for the poller and
// k-ID's webhooks alike), so a reader of the event who sees the rest of its
// data tries every date of birth of the last hundred years, one hash each.
// Each case builds an event whose date of birth the product does not keep,
// then rebuilds every candidate body and checks that no string of the event
// holds its digest, and that its name is not the name a candidate body
// would have.

// candidateDays are the dates of birth of the last hundred years.
func candidateDays() []string {
	var out []string
	for day := time.Date(1926, 1, 1, 0, 0, 0, 0, time.UTC); day.Year() < 2027; day = day.AddDate(0, 0, 1) {
		out = append(out, day.Format(time.DateOnly))
	}
	return out
}

// marshal is the poller's construction (controllers' storePolled), and
// kidsim's of k-ID's webhooks.
func marshal(t *testing.T, eventType string, data map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"eventType": eventType, "data": data})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// eventStrings are every string of e, keys and values.
func eventStrings(t *testing.T, e *kidv1.KidEvent) []string {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, inner := range t {
				out = append(out, k)
				walk(inner)
			}
		case []any:
			for _, inner := range t {
				walk(inner)
			}
		case string:
			out = append(out, t)
		}
	}
	walk(v)
	return out
}

func TestDigestsGiveBackNothingRemoved(t *testing.T) {
	const dob = "2012-03-04"
	product := browserProduct(false) // keeps no date of birth
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	build := func(t *testing.T, body []byte, source kidv1.EventSource) *kidv1.KidEvent {
		t.Helper()
		env, err := kid.ParseEnvelope(body)
		if err != nil {
			t.Fatal(err)
		}
		e, err := Build(product, env, body, now, now, source)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	// nameOf is the name the old digest of a candidate body gave an
	// event whose identity is its body's digest.
	webhookName := func(body []byte) string {
		env, err := kid.ParseEnvelope(body)
		if err != nil {
			t.Fatal(err)
		}
		return kid.EventName(product.Name, env.EventType, env.Identity(body, now))
	}
	verification := kidv1.EventSubject{VerificationIDs: []string{"v-1"}}
	browserName := func(body []byte) string {
		sum := sha256.Sum256(body)
		identity := strings.Join([]string{"browser", DOMVerificationResult, "", "", "v-1", "", hex.EncodeToString(sum[:])}, "\x00")
		return kid.EventName(product.Name, DOMVerificationResult, identity)
	}

	cases := []struct {
		name string
		// body is the body carrying a date of birth.
		body func(dob string) []byte
		// event builds the event of body.
		event  func(t *testing.T, body []byte) *kidv1.KidEvent
		nameOf func([]byte) string
	}{
		{
			name: "a polled challenge PASS",
			body: func(dob string) []byte {
				return marshal(t, kid.ChallengeStateChange, map[string]any{"id": "c-1", "status": "PASS", "sessionId": "s-1", "kuid": "k-1", "dob": dob})
			},
			event: func(t *testing.T, b []byte) *kidv1.KidEvent { return build(t, b, kidv1.SourcePoll) },
		},
		{
			name: "a polled verification PASS",
			body: func(dob string) []byte {
				return marshal(t, kid.VerificationResult, map[string]any{"id": "v-1", "status": "PASS", "method": "id-document", "ageCategory": "adult", "age": map[string]int32{"low": 43, "high": 43}, "dob": dob})
			},
			event: func(t *testing.T, b []byte) *kidv1.KidEvent { return build(t, b, kidv1.SourcePoll) },
		},
		{
			name: "a webhook of a type this version does not know, named by its body",
			body: func(dob string) []byte {
				return marshal(t, "Future.Thing", map[string]any{"id": "f-1", "dob": dob})
			},
			event:  func(t *testing.T, b []byte) *kidv1.KidEvent { return build(t, b, kidv1.SourceWebhook) },
			nameOf: webhookName,
		},
		{
			name: "a relayed browser event, named by its body",
			body: func(dob string) []byte {
				return []byte(`{"eventType":"Verification.Result","data":{"verificationId":"v-1","status":"PASS","method":"id-document","dob":"` + dob + `"}}`)
			},
			event:  func(t *testing.T, b []byte) *kidv1.KidEvent { return mustBuild(t, product, string(b), verification) },
			nameOf: browserName,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name+" holds no digest of a body with any date of birth", func(t *testing.T) {
			g := NewWithT(t)
			e := tc.event(t, tc.body(dob))
			g.Expect(string(e.Spec.Data.Raw)).NotTo(ContainSubstring(dob))
			g.Expect(e.Spec.BodySHA256).To(HaveLen(64))
			strs := eventStrings(t, e)
			for _, day := range candidateDays() {
				body := tc.body(day)
				sum := sha256.Sum256(body)
				digest := hex.EncodeToString(sum[:])
				for _, s := range strs {
					if strings.Contains(s, digest[:16]) {
						t.Fatalf("%q holds the digest of the body with %s", s, day)
					}
				}
				if tc.nameOf != nil && e.Name == tc.nameOf(body) {
					t.Fatalf("the event has the name of the body with %s", day)
				}
			}
		})
	}

	t.Run("the digest is of what is stored, and a retry of the same body has the same event", func(t *testing.T) {
		g := NewWithT(t)
		body := cases[0].body(dob)
		e := build(t, body, kidv1.SourcePoll)
		sum := sha256.Sum256([]byte(`{"data":` + string(e.Spec.Data.Raw) + `,"eventType":"Challenge.StateChange"}`))
		g.Expect(e.Spec.BodySHA256).To(Equal(hex.EncodeToString(sum[:])))
		again := build(t, body, kidv1.SourceWebhook)
		g.Expect(again.Name).To(Equal(e.Name))
		g.Expect(again.Spec.BodySHA256).To(Equal(e.Spec.BodySHA256))
		other := build(t, cases[0].body("2013-03-04"), kidv1.SourcePoll)
		g.Expect(other.Spec.BodySHA256).To(Equal(e.Spec.BodySHA256), "the date of birth removed, the two are the same as stored")
	})

	t.Run("a body the privacy settings took nothing from keeps the digest of the body as delivered", func(t *testing.T) {
		g := NewWithT(t)
		body := marshal(t, kid.ChallengeStateChange, map[string]any{"id": "c-1", "status": "PASS", "sessionId": "s-1"})
		sum := sha256.Sum256(body)
		g.Expect(build(t, body, kidv1.SourceWebhook).Spec.BodySHA256).To(Equal(hex.EncodeToString(sum[:])))
		kept := browserProduct(true)
		withDOB := cases[0].body(dob)
		env, err := kid.ParseEnvelope(withDOB)
		g.Expect(err).NotTo(HaveOccurred())
		e, err := Build(kept, env, withDOB, now, now, kidv1.SourcePoll)
		g.Expect(err).NotTo(HaveOccurred())
		sum = sha256.Sum256(withDOB)
		g.Expect(e.Spec.BodySHA256).To(Equal(hex.EncodeToString(sum[:])), "the product keeps the date of birth: nothing to hide")
	})
}
