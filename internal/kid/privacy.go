package kid

import (
	"bytes"
	"encoding/json"
	"strings"
)

// Privacy says which personal data may be kept.
type Privacy struct {
	KeepEmail       bool
	KeepDateOfBirth bool
}

// personalFields are the data fields that hold personal data. k-ID sends
// approverEmail and dob; email and dateOfBirth appear in its API and are
// treated the same, in case a future event carries them. Keys match without
// regard to case, as encoding/json matches them.
var personalFields = []struct {
	name  string
	email bool // kept by KeepEmail; otherwise by KeepDateOfBirth
}{
	{"approverEmail", true},
	{"email", true},
	{"dob", false},
	{"dateOfBirth", false},
}

// Redact returns data without the personal data that privacy does not allow,
// and whether what it returns still holds personal data. data must be a JSON
// object. When data names no personal field, it is returned as it is, so the
// common case allocates nothing.
func Redact(data json.RawMessage, privacy Privacy) (json.RawMessage, bool, error) {
	if !mayHoldPersonalData(data) {
		return data, false, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, false, err
	}
	dropped, kept := false, false
	for key := range fields {
		for _, f := range personalFields {
			if !strings.EqualFold(key, f.name) {
				continue
			}
			if (f.email && privacy.KeepEmail) || (!f.email && privacy.KeepDateOfBirth) {
				kept = true
			} else {
				delete(fields, key)
				dropped = true
			}
		}
	}
	if !dropped {
		return data, kept, nil
	}
	out, err := json.Marshal(fields)
	return out, kept, err
}

// mayHoldPersonalData is a cheap pre-check: an object can only hold a
// personal field if the field's quoted name appears in it (in any case), or
// if it uses escapes, which could spell the name otherwise.
func mayHoldPersonalData(data []byte) bool {
	if bytes.IndexByte(data, '\\') >= 0 {
		return true
	}
	for i := 0; i < len(data); i++ {
		if data[i] != '"' {
			continue
		}
		rest := data[i+1:]
		for _, f := range personalFields {
			n := len(f.name)
			if len(rest) > n && rest[n] == '"' && strings.EqualFold(string(rest[:n]), f.name) {
				return true
			}
		}
	}
	return false
}
