package fold

import (
	"testing"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// BenchmarkFold folds a player's five-event consent-and-session sequence,
// from an empty status.
func BenchmarkFold(b *testing.B) {
	events := sequences(b)["consent then session life"]
	b.ReportAllocs()
	for b.Loop() {
		st := &kidv1.KidUserStatus{}
		for _, e := range events {
			st = Apply(st, e, everything, "uid-1")
		}
	}
}
