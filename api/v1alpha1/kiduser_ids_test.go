package v1alpha1_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// An id label is a valid label key for any id k-ID may send (a digest: an id
// need not be valid in a label), one per id whatever its kind, and the
// labels written carry exactly the ids a user holds.
func TestIDLabelsAreOnePerIDTheUserHolds(t *testing.T) {
	for _, id := range []string{"s-1", strings.Repeat("x", 253), "ünïcode/with spaces", "UPPER_case.id"} {
		if errs := validation.IsQualifiedName(kidv1.IDLabel(id)); len(errs) > 0 {
			t.Errorf("IDLabel(%q) = %s is no label key: %v", id, kidv1.IDLabel(id), errs)
		}
	}
	if kidv1.IDLabel("a") == kidv1.IDLabel("b") {
		t.Error("two ids share a label")
	}

	u := &kidv1.KidUser{}
	u.Spec.Identity = kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: "s-1"}
	// A session's player holds its id twice (identity and session), and
	// its consent's challenge among challengeIds too.
	u.Status.SessionID, u.Status.KUID = "s-1", "k-1"
	u.Status.ChallengeIDs = []string{"c-1", "c-2"}
	u.Status.Verification.Records = []kidv1.VerificationRecord{{ID: "v-1"}}
	u.Labels = map[string]string{kidv1.ProductLabel: "demo", kidv1.IDLabel("c-gone"): ""}

	if kidv1.IDLabelsCover(u.Labels, u.HeldIDs()) {
		t.Error("labels without the user's ids cover them")
	}
	before := maps.Clone(u.Labels)
	labels := kidv1.WithIDLabels(u.Labels, u.HeldIDs())
	if !maps.Equal(u.Labels, before) {
		t.Error("WithIDLabels changed the labels it was given")
	}
	want := []string{kidv1.ProductLabel}
	for _, id := range []string{"s-1", "k-1", "c-1", "c-2", "v-1"} {
		want = append(want, kidv1.IDLabel(id))
	}
	if got := slices.Sorted(maps.Keys(labels)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("labels %v, want %v", got, want)
	}
	if !kidv1.IDLabelsCover(labels, u.HeldIDs()) {
		t.Error("the labels WithIDLabels made do not cover the ids")
	}
	// A label of an id the user does not hold yet (a create, before its
	// first status) asks for no write; a held id without one does.
	u.Status.KUID = ""
	if !kidv1.IDLabelsCover(labels, u.HeldIDs()) {
		t.Error("labels naming a kuid the user does not hold do not cover its ids")
	}
	u.Status.ChallengeIDs = append(u.Status.ChallengeIDs, "c-3")
	if kidv1.IDLabelsCover(labels, u.HeldIDs()) {
		t.Error("labels without the challenge c-3 cover a user holding it")
	}
}
