package kidsim

import (
	"encoding/json"
	"fmt"

	"github.com/google/uuid"

	"github.com/kid-operator/kid-operator/internal/kid"
)

// Fields are the values of an event to build. Empty fields are left out of
// the payload, except ids the event type requires, which are generated.
type Fields struct {
	ID              string
	Status          string
	ProductID       int64
	SessionID       string
	KUID            string
	ChallengeID     string
	ScenarioID      string
	VerificationIDs []string
	Reason          string // revocation reason
	Method          string
	AgeLow, AgeHigh int
	AgeCategory     string
	FailureReason   string
	DOB             string
	ApproverEmail   string
}

// Build returns a payload shaped like k-ID's for the event type, with the
// fields of kid-events-spec.md §2 for that type.
func Build(eventType string, f Fields) ([]byte, error) {
	data := map[string]any{}
	put := func(key, value string) {
		if value != "" {
			data[key] = value
		}
	}
	id := func() string {
		if f.ID != "" {
			return f.ID
		}
		return uuid.NewString()
	}
	product := func() {
		if f.ProductID != 0 {
			data["productId"] = f.ProductID
		}
	}
	age := func() {
		if f.AgeLow != 0 || f.AgeHigh != 0 {
			data["age"] = map[string]int{"low": f.AgeLow, "high": f.AgeHigh}
		}
	}
	switch eventType {
	case kid.ChallengeStateChange:
		data["id"] = orDefault(f.ChallengeID, id())
		product()
		data["status"] = orDefault(f.Status, kid.StatusPass)
		put("sessionId", f.SessionID)
		put("kuid", f.KUID)
		put("dob", f.DOB)
		put("approverEmail", f.ApproverEmail)
	case kid.VerificationResult, kid.AgeAssuranceResult, kid.AdultVerificationResult:
		if len(f.VerificationIDs) > 0 {
			f.ID = f.VerificationIDs[0]
		}
		data["id"] = id()
		data["status"] = orDefault(f.Status, kid.StatusPass)
		put("method", f.Method)
		put("ageCategory", f.AgeCategory)
		put("failureReason", f.FailureReason)
		age()
		put("dob", f.DOB)
	case kid.VerificationRevoke:
		ids := f.VerificationIDs
		if len(ids) == 0 {
			ids = []string{id()}
		}
		var list []map[string]string
		for _, v := range ids {
			list = append(list, map[string]string{"id": v, "reason": orDefault(f.Reason, "fraudulent-activity-detected")})
		}
		data["verifications"] = list
	case kid.AccountDelete:
		data["kuid"] = orDefault(f.KUID, uuid.NewString())
		product()
	case kid.ParentalConsentGranted:
		data["challengeId"] = orDefault(f.ChallengeID, uuid.NewString())
		data["scenarioId"] = orDefault(f.ScenarioID, uuid.NewString())
	case kid.SessionChangePermissions, kid.SessionDelete:
		data["id"] = orDefault(f.SessionID, id())
		product()
	case kid.TestEvent:
		data["id"] = id()
	default:
		return nil, fmt.Errorf("unknown event type %q: use --file to send an arbitrary payload", eventType)
	}
	return json.Marshal(map[string]any{"eventType": eventType, "data": data})
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
