package controllers

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// A replay is a fold into a user that holds the event from a fold another
// process made: this process's own repeats, refolds and first folds are not.
func TestFoldReplaysCountsOnlyFoldsAnotherProcessMade(t *testing.T) {
	e := &kidv1.KidEvent{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "ev"}}
	fresh := &kidv1.KidUserStatus{}
	holding := &kidv1.KidUserStatus{InFlightEvents: []string{"other", "ev"}}
	steps := []struct {
		what       string
		do         func(f *foldReplays)
		wantCounts float64
	}{
		{"a first fold", func(f *foldReplays) { f.fold(e, fresh, false) }, 0},
		{"this process folding it again (its phase write failed)", func(f *foldReplays) { f.fold(e, holding, false) }, 0},
		{"a refold, uncounted", func(f *foldReplays) { (&foldReplays{}).fold(e, holding, true) }, 0},
		{"a new process finding it held (the last stopped between the writes)", func(f *foldReplays) { (&foldReplays{}).fold(e, holding, false) }, 1},
		{"a fold after the phase was written (forgotten) that finds the event held", func(f *foldReplays) {
			f.forget(types.NamespacedName{Namespace: "ns", Name: "ev"})
			f.fold(e, holding, false)
		}, 1},
	}
	f := &foldReplays{}
	before := testutil.ToFloat64(foldReplaysTotal)
	var want float64
	for _, s := range steps {
		s.do(f)
		want += s.wantCounts
		if got := testutil.ToFloat64(foldReplaysTotal) - before; got != want {
			t.Fatalf("after %s: %v replays counted, want %v", s.what, got, want)
		}
	}
}
