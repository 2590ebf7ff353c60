package actions

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// costlyFilter compiles (its estimate is under FilterEstimateLimit) and
// runs to about three quarters of FilterCostLimit before it answers false,
// without an error: the most a filter may cost and still be accepted, and
// silent.
const costlyFilter = `[0,1,2,3,4,5,6,7,8,9,10].all(a, [0,1,2,3,4,5,6,7,8,9,10].all(b, [0,1,2,3,4,5,6,7,8,9,10].all(c,` +
	` [0,1,2,3,4,5,6,7,8,9,10].all(d, [0,1,2,3,4,5,6,7,8,9,10].all(e, true))))) && event.type == "nope"`

// namespaceActions are n actions of one namespace with filter, in a
// shuffled order (a List's order is not the evaluation order).
func namespaceActions(n int, filter string) []kidv1.KidAction {
	list := make([]kidv1.KidAction, n)
	for i := range list {
		list[i] = kidv1.KidAction{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("a-%03d", i), Namespace: "games", UID: types.UID(fmt.Sprintf("uid-%d", i)), Generation: 1},
			Spec:       kidv1.KidActionSpec{Filter: filter, HTTP: &kidv1.HTTPAction{URL: "http://x"}},
		}
	}
	rand.Shuffle(n, func(i, j int) { list[i], list[j] = list[j], list[i] })
	return list
}

func TestTheCostlyFilterIsAcceptedAndSilent(t *testing.T) {
	g := NewWithT(t)
	in, err := NewInput(event(), nil)
	g.Expect(err).NotTo(HaveOccurred())
	f := NewFilters()
	a := action(costlyFilter)
	_, err = f.Compile(a)
	g.Expect(err).NotTo(HaveOccurred(), "accepted: not InvalidFilter")
	ok, err := f.Matches(context.Background(), a, event(), in)
	g.Expect(err).NotTo(HaveOccurred(), "within its cost limit")
	g.Expect(ok).To(BeFalse())
}

func TestOneEventsFiltersShareABudget(t *testing.T) {
	g := NewWithT(t)
	in, err := NewInput(event(), nil)
	g.Expect(err).NotTo(HaveOccurred())
	f := NewFilters()
	list := namespaceActions(300, costlyFilter)
	for i := range list {
		_, err := f.Compile(&list[i])
		g.Expect(err).NotTo(HaveOccurred())
	}
	// 300 filters of about 70 ms each would hold the worker for 20 s and
	// more; the event stops at its budget, within one interrupt check.
	start := time.Now()
	m := f.MatchAll(context.Background(), list, event(), in, MatchLimits{MaxActions: 300})
	took := time.Since(start)
	t.Logf("evaluated %d, not %d, in %s", len(m.Results), len(m.OutOfBudget), took)
	g.Expect(took).To(BeNumerically("<", DefaultFilterBudget+FilterTimeout))
	g.Expect(m.OutOfBudget).NotTo(BeEmpty())
	g.Expect(len(m.Results) + len(m.OutOfBudget)).To(Equal(300))
	for i, r := range m.Results {
		g.Expect(r.Err).NotTo(HaveOccurred(), "no filter is failed for the budget")
		g.Expect(r.Action.Name).To(Equal(fmt.Sprintf("a-%03d", i)), "evaluated in name order")
	}
	g.Expect(m.OutOfBudget[0]).To(Equal(fmt.Sprintf("a-%03d", len(m.Results))))
}

func TestOneEventEvaluatesAtMostMaxActionsInNameOrder(t *testing.T) {
	g := NewWithT(t)
	in, err := NewInput(event(), nil)
	g.Expect(err).NotTo(HaveOccurred())
	f := NewFilters()
	list := namespaceActions(DefaultMaxActions+5, "true")
	m := f.MatchAll(context.Background(), list, event(), in, MatchLimits{})
	g.Expect(m.Results).To(HaveLen(DefaultMaxActions))
	g.Expect(m.OverLimit).To(Equal([]string{"a-100", "a-101", "a-102", "a-103", "a-104"}))
	g.Expect(m.OutOfBudget).To(BeEmpty())
	for i, r := range m.Results {
		g.Expect(r.Matched).To(BeTrue())
		g.Expect(r.Action.Name).To(Equal(fmt.Sprintf("a-%03d", i)))
	}
	g.Expect(ActionPosition(list, "a-100")).To(Equal(DefaultMaxActions), "the KidAction controller finds the same ones")
}
