package inbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// Enrichment is what a later copy of a stored event adds to it (design.md
// §2, "The richer copy wins").
type Enrichment struct {
	// Event is the stored event with the additions, or nil when the later
	// copy adds nothing.
	Event *kidv1.KidEvent
	// Added names the fields added (subject.sessionId, data.dob, ...):
	// names only, never values.
	Added []string
	// Conflicts names the fields both copies hold with different values;
	// the stored value is kept.
	Conflicts []string
}

// Enrich adds to the stored copy of an event what a later copy of the same
// identity carries and the stored copy lacks: the subject's ids it does not
// name, and the data's top-level keys it does not hold (after the product's
// privacy settings, applied here again, dropped what may not be kept). A
// field both copies hold is never changed: a different value is a conflict,
// reported and left as stored. A browser copy never enriches anything (it is
// a page's claim, not k-ID's word), and a stored browser copy is never
// enriched (it is a hint, never folded). personalData becomes true when an
// added key is personal data the product keeps; the session label and the
// subject annotation follow the subject. stored is not modified.
func Enrich(stored, later *kidv1.KidEvent, privacy kid.Privacy) (Enrichment, error) {
	var out Enrichment
	if stored.Spec.Source == kidv1.SourceBrowser || later.Spec.Source == kidv1.SourceBrowser ||
		stored.Spec.EventType != later.Spec.EventType {
		return out, nil
	}
	merged := stored.DeepCopy()

	s, l := &merged.Spec.Subject, later.Spec.Subject
	for _, f := range []struct {
		name   string
		stored *string
		later  string
	}{
		{"subject.sessionId", &s.SessionID, l.SessionID},
		{"subject.challengeId", &s.ChallengeID, l.ChallengeID},
		{"subject.kuid", &s.KUID, l.KUID},
	} {
		switch {
		case f.later == "" || f.later == *f.stored:
		case *f.stored == "":
			*f.stored = f.later
			out.Added = append(out.Added, f.name)
		default:
			out.Conflicts = append(out.Conflicts, f.name)
		}
	}
	switch {
	case len(l.VerificationIDs) == 0 || sameSet(l.VerificationIDs, s.VerificationIDs):
	case len(s.VerificationIDs) == 0:
		s.VerificationIDs = slices.Clone(l.VerificationIDs)
		out.Added = append(out.Added, "subject.verificationIds")
	default:
		out.Conflicts = append(out.Conflicts, "subject.verificationIds")
	}

	added, conflicts, personal, err := enrichData(merged, later, privacy)
	if err != nil {
		return Enrichment{}, err
	}
	out.Added = append(out.Added, added...)
	out.Conflicts = append(out.Conflicts, conflicts...)
	if len(out.Added) == 0 {
		return out, nil
	}
	merged.Spec.PersonalData = merged.Spec.PersonalData || personal
	if s.SessionID != "" && len(validation.IsValidLabelValue(s.SessionID)) == 0 {
		if merged.Labels == nil {
			merged.Labels = map[string]string{}
		}
		merged.Labels[kidv1.SessionLabel] = s.SessionID
	}
	if len(s.VerificationIDs) > 0 {
		if merged.Labels == nil {
			merged.Labels = map[string]string{}
		}
		kidv1.SetVerificationLabels(merged.Labels, s.VerificationIDs)
	}
	if summary := subjectSummary(kid.Subject{SessionID: s.SessionID, ChallengeID: s.ChallengeID, VerificationIDs: s.VerificationIDs, KUID: s.KUID}); summary != "" {
		if merged.Annotations == nil {
			merged.Annotations = map[string]string{}
		}
		merged.Annotations[kidv1.SubjectAnnotation] = summary
	}
	out.Event = merged
	return out, nil
}

// enrichData adds to merged's data the top-level keys of later's data that
// it lacks, once the privacy settings dropped what may not be kept. It
// returns the keys added and in conflict (as data.<key>), and whether an
// added key is personal data.
func enrichData(merged, later *kidv1.KidEvent, privacy kid.Privacy) (added, conflicts []string, personal bool, err error) {
	if later.Spec.Data == nil || len(later.Spec.Data.Raw) == 0 {
		return nil, nil, false, nil
	}
	raw, _, err := kid.Redact(later.Spec.Data.Raw, privacy)
	if err != nil {
		return nil, nil, false, fmt.Errorf("the later copy's data: %w", err)
	}
	var from map[string]json.RawMessage
	if err := json.Unmarshal(raw, &from); err != nil {
		return nil, nil, false, fmt.Errorf("the later copy's data: %w", err)
	}
	into := map[string]json.RawMessage{}
	if merged.Spec.Data != nil && len(merged.Spec.Data.Raw) > 0 {
		if err := json.Unmarshal(merged.Spec.Data.Raw, &into); err != nil {
			return nil, nil, false, fmt.Errorf("the stored copy's data: %w", err)
		}
	}
	keys := make([]string, 0, len(from))
	for k := range from {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	onlyAdded := map[string]json.RawMessage{}
	for _, k := range keys {
		v := from[k]
		old, ok := into[k]
		switch {
		case !ok && !isNull(v):
			into[k] = v
			onlyAdded[k] = v
			added = append(added, "data."+k)
		case ok && !sameJSON(old, v):
			conflicts = append(conflicts, "data."+k)
		}
	}
	if len(added) == 0 {
		return nil, conflicts, false, nil
	}
	out, err := json.Marshal(into)
	if err != nil {
		return nil, nil, false, err
	}
	merged.Spec.Data = &apiextensionsv1.JSON{Raw: out}
	onlyRaw, err := json.Marshal(onlyAdded)
	if err != nil {
		return nil, nil, false, err
	}
	if _, personal, err = kid.Redact(onlyRaw, privacy); err != nil {
		return nil, nil, false, err
	}
	return added, conflicts, personal, nil
}

func isNull(v json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(v), []byte("null")) }

// sameJSON compares two JSON values by meaning (key order and spacing
// aside).
func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(x, y)
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}
