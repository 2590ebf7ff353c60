package kid

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

func TestSubjectOfEveryExample(t *testing.T) {
	cases := map[string]Subject{
		"challenge-pass":        {ChallengeID: "9d6b056e-7d62-4a9e-907a-3d0f6f1d1b9a", SessionID: "b6d1a7c2-8f34-4c83-bf0b-3a6d4a2f9d31", KUID: "7a1f2c3d-4e5f-6789-abcd-ef0123456789"},
		"challenge-fail":        {ChallengeID: "9d6b056e-7d62-4a9e-907a-3d0f6f1d1b9a"},
		"challenge-in-progress": {ChallengeID: "9d6b056e-7d62-4a9e-907a-3d0f6f1d1b9a"},
		"verification-pass":     {VerificationIDs: []string{"4e57301e-a4d1-498f-ac3f-f3d4de19abf6"}},
		"verification-fail":     {VerificationIDs: []string{"fe10accb-b845-4fc8-ac44-6130b7e0b8bd"}},
		"verification-max":      {VerificationIDs: []string{"123e4567-e89b-12d3-a456-426614174002"}},
		"revoke-one":            {VerificationIDs: []string{"4e57301e-a4d1-498f-ac3f-f3d4de19abf6"}},
		"revoke-two":            {VerificationIDs: []string{"4e57301e-a4d1-498f-ac3f-f3d4de19abf6", "b2c8e91f-7a23-4d5c-8f1e-2a9b3c4d5e6f"}},
		"account-delete":        {KUID: "7a1f2c3d-4e5f-6789-abcd-ef0123456789"},
		"ageassurance-current":  {VerificationIDs: []string{"2f2b1e6d-9e3d-4c96-9c0e-7b9d8a5e5f10"}},
		"ageassurance-legacy":   {VerificationIDs: []string{"5a58e98a-e477-484b-b36a-3857ea9daaba"}},
		"consent-granted":       {ChallengeID: "9d6b056e-7d62-4a9e-907a-3d0f6f1d1b9a"},
		"change-permissions":    {SessionID: "78c299b2-5c33-4bde-84fe-8fc950fc7a96"},
		"session-delete":        {SessionID: "2d064cf7-0726-4193-b19a-8bd387937e60"},
		"test":                  {},
		"adult-verification":    {VerificationIDs: []string{"5a58e98a-e477-484b-b36a-3857ea9daaba"}},
	}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			env, err := ParseEnvelope([]byte(Examples[name]))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(env.Subject()).To(Equal(want))
		})
	}
}

func TestParseEnvelopeRejectsWhatIsNotAnEvent(t *testing.T) {
	cases := map[string]string{
		"empty body":               ``,
		"not JSON":                 `eventType=Test`,
		"a JSON array":             `[{"eventType":"Test","data":{}}]`,
		"no eventType":             `{"data":{"id":"x"}}`,
		"empty eventType":          `{"eventType":"","data":{"id":"x"}}`,
		"numeric eventType":        `{"eventType":7,"data":{"id":"x"}}`,
		"no data":                  `{"eventType":"Test"}`,
		"null data":                `{"eventType":"Test","data":null}`,
		"array data":               `{"eventType":"Test","data":[1]}`,
		"string data":              `{"eventType":"Test","data":"x"}`,
		"numeric id":               `{"eventType":"Test","data":{"id":5}}`,
		"overlong id":              `{"eventType":"Session.Delete","data":{"id":"` + strings.Repeat("a", 129) + `"}}`,
		"overlong eventType":       `{"eventType":"` + strings.Repeat("A", 129) + `","data":{}}`,
		"revocation without an id": `{"eventType":"Verification.Revoke","data":{"verifications":[{"reason":"x"}]}}`,
		"too many revoked":         `{"eventType":"Verification.Revoke","data":{"verifications":[` + strings.Repeat(`{"id":"a"},`, 100) + `{"id":"b"}]}}`,
		"trailing garbage":         `{"eventType":"Test","data":{}} x`,
		"truncated":                `{"eventType":"Test","data":{"id":"1`,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			_, err := ParseEnvelope([]byte(body))
			g.Expect(err).To(MatchError(ErrMalformed))
		})
	}
}

func TestParseEnvelopeIsLenient(t *testing.T) {
	g := NewWithT(t)
	env, err := ParseEnvelope([]byte(`{"eventType":"Verification.Result","extra":1,"data":{"id":"v","status":"PASS","age":{"low":"18","high":20.5},"productId":"42","newField":{"a":[1]}}}`))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(env.Payload.Age.Low.Value).To(BeEquivalentTo(18))
	g.Expect(env.Payload.Age.High.Value).To(BeEquivalentTo(20))
	g.Expect(env.Payload.ProductID.Value).To(BeEquivalentTo(42))

	env, err = ParseEnvelope([]byte(`{"eventType":"Some.FutureEvent","data":{}}`))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(Known(env.EventType)).To(BeFalse())
}

func TestIdentity(t *testing.T) {
	parse := func(body string) *Envelope {
		env, err := ParseEnvelope([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	at := time.Unix(1700000000, 0)
	id := func(name string, signedAt time.Time) string {
		return parse(Examples[name]).Identity([]byte(Examples[name]), signedAt)
	}
	g := NewWithT(t)

	g.Expect(id("challenge-pass", at)).To(Equal(id("challenge-pass", at.Add(15*time.Second))), "a retry with a new timestamp is the same event")
	g.Expect(id("challenge-in-progress", at)).NotTo(Equal(id("challenge-pass", at)), "IN_PROGRESS then PASS are two events")
	g.Expect(id("session-delete", at)).To(Equal(id("session-delete", at.Add(10*time.Second))))

	window := at.Truncate(NotificationWindow)
	g.Expect(id("change-permissions", window)).To(Equal(id("change-permissions", window.Add(NotificationWindow-time.Second))), "one window: one event")
	g.Expect(id("change-permissions", window)).NotTo(Equal(id("change-permissions", window.Add(NotificationWindow))), "a later change is another event")

	// A change the session sync found is named by the session's new etag,
	// whenever it was found.
	found := func(etag string) *Envelope {
		return parse(`{"eventType":"Session.ChangePermissions","data":{"id":"s-1","etag":"` + etag + `"}}`)
	}
	g.Expect(found("e1").Identity(nil, window)).To(Equal(found("e1").Identity(nil, window.Add(time.Hour))), "one change found twice: one event")
	g.Expect(found("e1").Identity(nil, window)).NotTo(Equal(found("e2").Identity(nil, window)), "another etag is another change")

	reordered := `{"eventType":"Verification.Revoke","data":{"verifications":[{"id":"b2c8e91f-7a23-4d5c-8f1e-2a9b3c4d5e6f","reason":"provider-reported-error"},{"id":"4e57301e-a4d1-498f-ac3f-f3d4de19abf6","reason":"fraudulent-activity-detected"}]}}`
	g.Expect(parse(reordered).Identity([]byte(reordered), at)).To(Equal(id("revoke-two", at)))

	unknownA, unknownB := `{"eventType":"New.Thing","data":{"a":1}}`, `{"eventType":"New.Thing","data":{"a":2}}`
	g.Expect(parse(unknownA).Identity([]byte(unknownA), at)).NotTo(Equal(parse(unknownB).Identity([]byte(unknownB), at)))
}

func TestEventName(t *testing.T) {
	g := NewWithT(t)
	name := EventName("demo", "Challenge.StateChange", "x")
	g.Expect(name).To(MatchRegexp(`^demo-challenge-statechange-[0-9a-f]{20}$`))
	g.Expect(TypeSlug("!!Weird Type//v2..")).To(Equal("weird-type-v2"))
	g.Expect(TypeSlug("...")).To(Equal("unknown"))
	g.Expect(len(TypeSlug(strings.Repeat("ab.", 60)))).To(BeNumerically("<=", maxTypeSlugLen))
}

func TestRedact(t *testing.T) {
	data := func(name string) json.RawMessage {
		env, err := ParseEnvelope([]byte(Examples[name]))
		if err != nil {
			t.Fatal(err)
		}
		return env.Data
	}
	cases := []struct {
		name     string
		data     json.RawMessage
		privacy  Privacy
		absent   []string
		present  []string
		wantKept bool
	}{
		{name: "default removes email and dob", data: data("challenge-pass"), absent: []string{"parent@example.com", "2011-07-12", "approverEmail", "dob"}, present: []string{"b6d1a7c2", "PASS"}},
		{name: "email kept when allowed", data: data("challenge-pass"), privacy: Privacy{KeepEmail: true}, absent: []string{"2011-07-12"}, present: []string{"parent@example.com"}, wantKept: true},
		{name: "dob kept when allowed", data: data("verification-pass"), privacy: Privacy{KeepDateOfBirth: true}, present: []string{"1981-06-20"}, wantKept: true},
		{name: "keys in another case are removed too", data: json.RawMessage(`{"DOB":"2001-01-01","ApproverEMAIL":"a@b.c"}`), absent: []string{"2001-01-01", "a@b.c"}},
		{name: "escaped key names are removed too", data: json.RawMessage(`{"d\u006fb":"2001-01-01"}`), absent: []string{"2001-01-01"}},
		{name: "nothing personal is left as it is", data: data("session-delete"), present: []string{`"productId":42`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			out, kept, err := Redact(tc.data, tc.privacy)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(kept).To(Equal(tc.wantKept))
			for _, s := range tc.absent {
				g.Expect(string(out)).NotTo(ContainSubstring(s))
			}
			for _, s := range tc.present {
				g.Expect(string(out)).To(ContainSubstring(s))
			}
		})
	}
}

func FuzzParseEnvelope(f *testing.F) {
	for _, body := range Examples {
		f.Add([]byte(body))
	}
	f.Add([]byte(`{"eventType":"x","data":{"dob":"\u0000"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		env, err := ParseEnvelope(body)
		if err != nil {
			return
		}
		if env.EventType == "" || len(env.Data) == 0 {
			t.Fatal("accepted an event without a type or data")
		}
		_ = env.Subject()
		_ = EventName("p", env.EventType, env.Identity(body, time.Unix(0, 0)))
		out, _, err := Redact(env.Data, Privacy{})
		if err != nil {
			t.Fatalf("redact of accepted data failed: %v", err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("redacted data is not an object: %v", err)
		}
		for k := range m {
			for _, f := range personalFields {
				if strings.EqualFold(k, f.name) {
					t.Fatalf("personal field %q survived redaction", k)
				}
			}
		}
	})
}

func TestTestPayloadIsTheDocsExampleWithTheID(t *testing.T) {
	g := NewWithT(t)
	g.Expect(string(TestPayload("12345678-1234-1234-1234-123456789abc"))).To(Equal(Examples["test"]))
	env, err := ParseEnvelope(TestPayload(`a "quoted" id`))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(env.EventType).To(Equal(TestEvent))
	g.Expect(env.Payload.ID).To(Equal(`a "quoted" id`))
}
