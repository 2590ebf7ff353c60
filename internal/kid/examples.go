package kid

import "encoding/json"

// Examples holds each example payload of k-ID's webhook docs (our
// kid-events-spec.md §2), by a short name. The simulator sends them, and the
// tests of every layer use them.
var Examples = map[string]string{ //nolint:gosec // G101: k-ID's published examples hold no credential
	"challenge-pass":        `{"eventType":"Challenge.StateChange","data":{"id":"9d6b056e-7d62-4a9e-907a-3d0f6f1d1b9a","productId":11472,"status":"PASS","dob":"2011-07-12","sessionId":"b6d1a7c2-8f34-4c83-bf0b-3a6d4a2f9d31","approverEmail":"parent@example.com","kuid":"7a1f2c3d-4e5f-6789-abcd-ef0123456789"}}`,
	"challenge-fail":        `{"eventType":"Challenge.StateChange","data":{"id":"9d6b056e-7d62-4a9e-907a-3d0f6f1d1b9a","productId":11472,"status":"FAIL"}}`,
	"challenge-in-progress": `{"eventType":"Challenge.StateChange","data":{"id":"9d6b056e-7d62-4a9e-907a-3d0f6f1d1b9a","productId":11472,"status":"IN_PROGRESS"}}`,
	"verification-pass":     `{"eventType":"Verification.Result","data":{"id":"4e57301e-a4d1-498f-ac3f-f3d4de19abf6","status":"PASS","method":"id-document","age":{"low":43,"high":43},"dob":"1981-06-20"}}`,
	"verification-fail":     `{"eventType":"Verification.Result","data":{"id":"fe10accb-b845-4fc8-ac44-6130b7e0b8bd","status":"FAIL","method":"age-estimation-scan","age":{"low":13,"high":17},"failureReason":"age-criteria-not-met"}}`,
	"verification-max":      `{"eventType":"Verification.Result","data":{"id":"123e4567-e89b-12d3-a456-426614174002","status":"FAIL","failureReason":"max-attempts-exceeded"}}`,
	"revoke-one":            `{"eventType":"Verification.Revoke","data":{"verifications":[{"id":"4e57301e-a4d1-498f-ac3f-f3d4de19abf6","reason":"fraudulent-activity-detected"}]}}`,
	"revoke-two":            `{"eventType":"Verification.Revoke","data":{"verifications":[{"id":"4e57301e-a4d1-498f-ac3f-f3d4de19abf6","reason":"fraudulent-activity-detected"},{"id":"b2c8e91f-7a23-4d5c-8f1e-2a9b3c4d5e6f","reason":"provider-reported-error"}]}}`,
	"account-delete":        `{"eventType":"Account.Delete","data":{"kuid":"7a1f2c3d-4e5f-6789-abcd-ef0123456789","productId":11472}}`,
	"ageassurance-current":  `{"eventType":"AgeAssurance.Result","data":{"id":"2f2b1e6d-9e3d-4c96-9c0e-7b9d8a5e5f10","status":"PASS","ageCategory":"digital-youth","method":"age-estimation","age":{"low":14,"high":16},"dob":"2011-07-12"}}`,
	"ageassurance-legacy":   `{"eventType":"AgeAssurance.Result","data":{"id":"5a58e98a-e477-484b-b36a-3857ea9daaba","status":"PASS","ageRange":{"minAge":18,"maxAge":25,"confidence":0.8}}}`,
	"consent-granted":       `{"eventType":"ParentalConsent.Granted","data":{"challengeId":"9d6b056e-7d62-4a9e-907a-3d0f6f1d1b9a","scenarioId":"7a1f2c3d-4e5f-6789-abcd-ef0123456789"}}`,
	"change-permissions":    `{"eventType":"Session.ChangePermissions","data":{"id":"78c299b2-5c33-4bde-84fe-8fc950fc7a96","productId":42}}`,
	"session-delete":        `{"eventType":"Session.Delete","data":{"id":"2d064cf7-0726-4193-b19a-8bd387937e60","productId":42}}`,
	"test":                  `{"eventType":"Test","data":{"id":"12345678-1234-1234-1234-123456789abc"}}`,
	"adult-verification":    `{"eventType":"AdultVerification.Result","data":{"id":"5a58e98a-e477-484b-b36a-3857ea9daaba","status":"PASS"}}`,
}

// TestPayload is the body of a Test event with the given id, shaped as the
// docs' example ("test" above) and as Compliance Studio's "Test Webhook"
// button sends it. A Test event's identity is its id, so each test delivery
// that is to be stored as an event of its own needs a fresh one.
func TestPayload(id string) []byte {
	type data struct {
		ID string `json:"id"`
	}
	// Field order is k-ID's; json.Marshal escapes whatever the id holds.
	b, err := json.Marshal(struct {
		EventType string `json:"eventType"`
		Data      data   `json:"data"`
	}{TestEvent, data{ID: id}})
	if err != nil {
		panic("kid: marshalling a Test payload: " + err.Error()) // two strings always marshal
	}
	return b
}
