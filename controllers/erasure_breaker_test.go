package controllers

import (
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

func TestErasureBreakerTrips(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	product := types.NamespacedName{Namespace: "ns", Name: "demo"}
	cases := []struct {
		name     string
		suspects int
		sessions int
		spacing  time.Duration // between suspects
		want     bool
	}{
		{"one player's deletion never trips it", 1, 1, 0, false},
		{"nine of ten sessions are fewer than the count", 9, 10, 0, false},
		{"ten of a hundred are not more than the share", 10, 100, 0, false},
		{"eleven of a hundred trip it", 11, 100, 0, true},
		{"ten of ten trip it", 10, 10, 0, true},
		{"thirty of a hundred trip it", 30, 100, 0, true},
		{"eleven of a hundred spread over more than the window do not", 11, 100, 7 * time.Minute, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			b := newErasureBreakers()
			tripped := false
			for i := range tc.suspects {
				user := types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("u-%d", i)}
				now := t0.Add(time.Duration(i) * tc.spacing)
				got, err := b.suspect(product, user, now, func() (int, error) { return tc.sessions, nil })
				g.Expect(err).NotTo(HaveOccurred())
				tripped = tripped || got
			}
			g.Expect(tripped).To(Equal(tc.want))
			open, _, _ := b.state(product)
			g.Expect(open).To(Equal(tc.want))
		})
	}
}

func TestErasureBreakerCountsEachUserOnceAndOnlyAPersonResumesIt(t *testing.T) {
	g := NewWithT(t)
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	key := types.NamespacedName{Namespace: "ns", Name: "demo"}
	product := &kidv1.KidProduct{}
	product.Namespace, product.Name = key.Namespace, key.Name
	b := newErasureBreakers()
	sessions := func() (int, error) { return 20, nil }
	one := types.NamespacedName{Namespace: "ns", Name: "u-0"}
	for range 20 {
		tripped, _ := b.suspect(key, one, t0, sessions)
		g.Expect(tripped).To(BeFalse(), "one player read twenty times is one player")
	}
	g.Expect(b.hold(product, one)).To(BeFalse())
	for i := 1; i <= 10; i++ {
		_, _ = b.suspect(key, types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("u-%d", i)}, t0, sessions)
	}
	open, count, total := b.state(key)
	g.Expect([]any{open, count, total}).To(Equal([]any{true, 10, 20}), "what tripped it: the tenth of twenty")
	g.Expect(b.hold(product, one)).To(BeTrue())
	g.Expect(b.hold(product, one)).To(BeTrue(), "it does not close by itself, whatever the time")

	b.resume(key, t0.Add(time.Minute))
	g.Expect(b.hold(product, one)).To(BeFalse())
	g.Expect(b.wakeUsers).To(HaveLen(1), "the held player is woken")
	g.Expect(b.resumedSince(key, t0)).To(BeTrue())

	// A cache that still shows the condition set before the resume does not
	// hold; one set after it (a restart, a new trip) does.
	product.Status.Conditions = []metav1.Condition{{Type: kidv1.ErasuresHeldCondition, Status: metav1.ConditionTrue, LastTransitionTime: metav1.NewTime(t0)}}
	g.Expect(b.hold(product, one)).To(BeFalse())
	b.restore(key, t0)
	g.Expect(b.hold(product, one)).To(BeFalse(), "restore does not undo a resume")
	fresh := newErasureBreakers()
	g.Expect(fresh.hold(product, one)).To(BeTrue(), "after a restart the condition holds")
	fresh.restore(key, t0)
	open, _, _ = fresh.state(key)
	g.Expect(open).To(BeTrue())
}
