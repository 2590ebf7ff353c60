package kidapi

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// Statuses of challenges and verifications, upper case as k-ID sends them.
const (
	StatusPass       = "PASS"
	StatusFail       = "FAIL"
	StatusInProgress = "IN_PROGRESS"
	StatusPending    = "PENDING"
)

// Session is a player's session for the product (spec §4.2). DateOfBirth is
// personal data.
type Session struct {
	SessionID    string
	KUID         string
	AgeStatus    string
	Jurisdiction string
	Status       string
	ETag         string
	DateOfBirth  string
	Permissions  []Permission
}

// Permission is one of a session's permissions.
type Permission struct {
	Name      string
	Enabled   bool
	ManagedBy string
	// VerifiedAgeThreshold is set on permissions that need a verified age.
	VerifiedAgeThreshold *int32
}

// ChallengeStatus is the state of a challenge (spec §4.3). Status is PASS,
// FAIL or IN_PROGRESS: k-ID's PENDING is read as IN_PROGRESS, since the
// webhook's enum, which the controllers share, has no PENDING. ApproverEmail
// and DOB are personal data.
type ChallengeStatus struct {
	ChallengeID   string
	Status        string
	SessionID     string
	KUID          string
	ApproverEmail string
	DOB           string
}

// VerificationStatus is the result of an age verification (spec §4.4).
// Status is PASS, FAIL, PENDING or IN_PROGRESS, upper case, as sent. DOB is
// personal data.
type VerificationStatus struct {
	ID            string
	Status        string
	Method        string
	AgeCategory   string
	FailureReason string
	DOB           string
	AgeLow        *int32
	AgeHigh       *int32
	// Revoked says k-ID revoked the verification. How get-status answers a
	// revoked verification is not documented (spec §4.4, §6.14), so any of
	// these reads as revoked: a status REVOKED (any case), "revoked": true,
	// or a revokedAt. RevokedReason is its reason where the answer gives
	// one (revokedReason, revocationReason or reason).
	Revoked       bool
	RevokedReason string
}

// StatusRevoked is the status a revoked verification may answer.
const StatusRevoked = "REVOKED"

// The get-status schemas are undocumented (spec §6.14), so the answers are
// read leniently: a scalar field may come as a string, a number or a bool,
// a status as "PASS" or {"state":"PASS"}, a number as 13 or "13".

type wireSession struct {
	SessionID    text             `json:"sessionId"`
	KUID         text             `json:"kuid"`
	AgeStatus    text             `json:"ageStatus"`
	Jurisdiction text             `json:"jurisdiction"`
	Status       text             `json:"status"`
	ETag         text             `json:"etag"`
	DateOfBirth  text             `json:"dateOfBirth"`
	Permissions  []wirePermission `json:"permissions"`
}

type wirePermission struct {
	Name                 text   `json:"name"`
	Enabled              flag   `json:"enabled"`
	ManagedBy            text   `json:"managedBy"`
	VerifiedAgeThreshold number `json:"verifiedAgeThreshold"`
}

func decodeSession(body []byte, header http.Header) (*Session, error) {
	var envelope struct {
		Session *wireSession `json:"session"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil {
		return nil, invalidResponse(EndpointSession, 0, "the answer does not parse")
	}
	w := envelope.Session
	if w == nil {
		// Not the documented shape; accept a bare session all the same.
		var bare wireSession
		if err := json.Unmarshal(body, &bare); err != nil || (bare.SessionID == "" && bare.KUID == "") {
			return nil, invalidResponse(EndpointSession, 0, "the answer holds no session")
		}
		w = &bare
	}
	s := &Session{
		SessionID:    string(w.SessionID),
		KUID:         string(w.KUID),
		AgeStatus:    string(w.AgeStatus),
		Jurisdiction: string(w.Jurisdiction),
		Status:       string(w.Status),
		ETag:         string(w.ETag),
		DateOfBirth:  string(w.DateOfBirth),
	}
	if s.ETag == "" {
		s.ETag = strings.Trim(strings.TrimPrefix(header.Get("ETag"), "W/"), `"`)
	}
	if w.Permissions != nil {
		s.Permissions = make([]Permission, 0, len(w.Permissions))
	}
	for _, p := range w.Permissions {
		s.Permissions = append(s.Permissions, Permission{
			Name:                 string(p.Name),
			Enabled:              bool(p.Enabled),
			ManagedBy:            string(p.ManagedBy),
			VerifiedAgeThreshold: p.VerifiedAgeThreshold.ptr(),
		})
	}
	return s, nil
}

type wireChallenge struct {
	ChallengeID   text   `json:"challengeId"`
	ID            text   `json:"id"`
	Status        status `json:"status"`
	SessionID     text   `json:"sessionId"`
	KUID          text   `json:"kuid"`
	ApproverEmail text   `json:"approverEmail"`
	DOB           text   `json:"dob"`
}

func decodeChallengeStatus(body []byte, requested string) (*ChallengeStatus, error) {
	var w wireChallenge
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, invalidResponse(EndpointChallengeStatus, 0, "the answer does not parse")
	}
	if w.Status == "" {
		return nil, invalidResponse(EndpointChallengeStatus, 0, "the answer holds no status")
	}
	st := string(w.Status)
	if st == StatusPending {
		st = StatusInProgress
	}
	return &ChallengeStatus{
		ChallengeID:   firstOf(string(w.ChallengeID), string(w.ID), requested),
		Status:        st,
		SessionID:     string(w.SessionID),
		KUID:          string(w.KUID),
		ApproverEmail: string(w.ApproverEmail),
		DOB:           string(w.DOB),
	}, nil
}

type wireVerification struct {
	ID             text     `json:"id"`
	VerificationID text     `json:"verificationId"`
	Status         status   `json:"status"`
	Method         text     `json:"method"`
	AgeCategory    text     `json:"ageCategory"`
	FailureReason  text     `json:"failureReason"`
	DOB            text     `json:"dob"`
	DateOfBirth    text     `json:"dateOfBirth"`
	Age            ageRange `json:"age"`
	// A revocation, in whichever shape k-ID may send it.
	Revoked          flag `json:"revoked"`
	RevokedAt        text `json:"revokedAt"`
	RevokedReason    text `json:"revokedReason"`
	RevocationReason text `json:"revocationReason"`
	Reason           text `json:"reason"`
}

func decodeVerificationStatus(body []byte, requested string) (*VerificationStatus, error) {
	var w wireVerification
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, invalidResponse(EndpointVerificationStatus, 0, "the answer does not parse")
	}
	if w.Status == "" {
		return nil, invalidResponse(EndpointVerificationStatus, 0, "the answer holds no status")
	}
	v := &VerificationStatus{
		ID:            firstOf(string(w.ID), string(w.VerificationID), requested),
		Status:        string(w.Status),
		Method:        string(w.Method),
		AgeCategory:   string(w.AgeCategory),
		FailureReason: string(w.FailureReason),
		DOB:           firstOf(string(w.DOB), string(w.DateOfBirth)),
		AgeLow:        w.Age.Low.ptr(),
		AgeHigh:       w.Age.High.ptr(),
		Revoked:       string(w.Status) == StatusRevoked || bool(w.Revoked) || w.RevokedAt != "",
	}
	if v.Revoked {
		v.RevokedReason = firstOf(string(w.RevokedReason), string(w.RevocationReason), string(w.Reason))
	}
	return v, nil
}

func firstOf(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// text is a scalar read as its text: a string as it is, a number or a bool
// as its literal. null, an object or an array is "".
type text string

func (t *text) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || b[0] == 'n' || b[0] == '{' || b[0] == '[':
		*t = ""
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*t = text(s)
	default:
		*t = text(b)
	}
	return nil
}

// status is "PASS" or {"state":"PASS"} (one vendor sample reads status.state),
// trimmed and upper case.
type status string

func (s *status) UnmarshalJSON(b []byte) error {
	var t text
	if b = bytes.TrimSpace(b); len(b) > 0 && b[0] == '{' {
		var o struct {
			State  text `json:"state"`
			Status text `json:"status"`
		}
		if err := json.Unmarshal(b, &o); err != nil {
			return err
		}
		t = text(firstOf(string(o.State), string(o.Status)))
	} else if err := t.UnmarshalJSON(b); err != nil {
		return err
	}
	*s = status(strings.ToUpper(strings.TrimSpace(string(t))))
	return nil
}

// flag is a bool, or "true"/"false".
type flag bool

func (f *flag) UnmarshalJSON(b []byte) error {
	var t text
	if err := t.UnmarshalJSON(b); err != nil {
		return err
	}
	v, _ := strconv.ParseBool(strings.TrimSpace(string(t)))
	*f = flag(v)
	return nil
}

// number is an integer sent as a number or a numeric string. Anything else,
// or a value out of range, reads as absent rather than failing the answer.
type number struct {
	set bool
	v   int32
}

func (n *number) UnmarshalJSON(b []byte) error {
	var t text
	if err := t.UnmarshalJSON(b); err != nil {
		return err
	}
	*n = number{}
	f, err := strconv.ParseFloat(strings.TrimSpace(string(t)), 64)
	if err != nil || math.IsNaN(f) || f < math.MinInt32 || f > math.MaxInt32 {
		return nil
	}
	*n = number{set: true, v: int32(f)}
	return nil
}

func (n number) ptr() *int32 {
	if !n.set {
		return nil
	}
	v := n.v
	return &v
}

// ageRange is {"low":13,"high":17}, or one number for an exact age.
type ageRange struct {
	Low, High number
}

func (a *ageRange) UnmarshalJSON(b []byte) error {
	if b = bytes.TrimSpace(b); len(b) > 0 && b[0] == '{' {
		var o struct {
			Low  number `json:"low"`
			High number `json:"high"`
		}
		if err := json.Unmarshal(b, &o); err != nil {
			return err
		}
		a.Low, a.High = o.Low, o.High
		return nil
	}
	var n number
	if err := n.UnmarshalJSON(b); err != nil {
		return err
	}
	a.Low, a.High = n, n
	return nil
}
