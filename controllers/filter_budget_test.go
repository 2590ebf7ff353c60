package controllers_test

import (
	"fmt"
	"regexp"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// These specs are issue #22's attack on the shared KidEvent workers: a tenant
// with hundreds of costly filters, sending its own signed webhooks. Each
// filter is within its own bounds (accepted, under its cost limit); only
// their sum is the attack.

// costlyFilter compiles and runs to about three quarters of the cost limit
// (some 70 ms on an idle core) before it answers false, without an error
// (internal/actions TestTheCostlyFilterIsAcceptedAndSilent).
const costlyFilter = `[0,1,2,3,4,5,6,7,8,9,10].all(a, [0,1,2,3,4,5,6,7,8,9,10].all(b, [0,1,2,3,4,5,6,7,8,9,10].all(c,` +
	` [0,1,2,3,4,5,6,7,8,9,10].all(d, [0,1,2,3,4,5,6,7,8,9,10].all(e, true))))) && event.type == "nope"`

// manyActions creates n dry-run actions for Challenge.StateChange named
// prefix-000 and on, 16 at a time, and waits until the KidAction
// controller (so the cache the KidEvent controller lists) has seen each.
func manyActions(p *testenv.Product, prefix string, n int, filter string) {
	GinkgoHelper()
	inParallel(n, func(i int) {
		Expect(h.Client.Create(ctx, &kidv1.KidAction{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%03d", prefix, i), Namespace: p.Namespace},
			Spec: kidv1.KidActionSpec{
				EventTypes: []string{kid.ChallengeStateChange}, Filter: filter, DryRun: true,
				HTTP: &kidv1.HTTPAction{URL: "http://127.0.0.1:1/", MaxAttempts: 1},
			},
		})).To(Succeed())
	})
	Eventually(func(g Gomega) {
		var list kidv1.KidActionList
		g.Expect(h.Client.List(ctx, &list, client.InNamespace(p.Namespace))).To(Succeed())
		g.Expect(list.Items).To(HaveLen(n))
		for _, a := range list.Items {
			g.Expect(a.Status.ObservedGeneration).To(Equal(a.Generation), a.Name)
		}
	}, 120*time.Second, 250*time.Millisecond).Should(Succeed())
}

// appliedEvent waits until the namespace's event about challenge is
// Applied (or finished) and returns it.
func appliedEvent(ns, challenge string, timeout time.Duration) kidv1.KidEvent {
	GinkgoHelper()
	var got kidv1.KidEvent
	Eventually(func(g Gomega) {
		found := false
		for _, e := range events(ns) {
			if e.Spec.Subject.ChallengeID == challenge {
				found = true
				g.Expect(e.Status.AppliedAt).NotTo(BeNil(), "%s is %q", e.Name, e.Status.Phase)
				got = e
			}
		}
		g.Expect(found).To(BeTrue(), "no event about %s stored", challenge)
	}, timeout, 50*time.Millisecond).Should(Succeed())
	return got
}

// counterOf is the value of a counter of the operator's metrics with the
// given namespace label.
func counterOf(name, namespace string) float64 {
	GinkgoHelper()
	v, _, _ := metricSum(name, map[string]string{"namespace": namespace})
	return v
}

var evaluatedAfter = regexp.MustCompile(`budget \(1s\) after (\d+) actions; not evaluated: `)

var _ = Describe("One event's filter matching has a budget (issue #22)", Ordered, func() {
	// A is the tenant with 300 costly filters.
	var a *testenv.Product

	BeforeAll(func() {
		a = newProduct(nil)
		manyActions(a, "costly", 300, costlyFilter)
		DeferCleanup(func() {
			// Its events left in flight then match nothing and end at
			// once, instead of holding lanes through the next specs.
			Expect(h.Client.DeleteAllOf(ctx, &kidv1.KidAction{}, client.InNamespace(a.Namespace))).To(Succeed())
		})
	})

	It("stops an event's filters at the event's budget, and the event names the actions it did not evaluate", func() {
		before := counterOf("kid_action_filter_budget_exceeded_total", a.Namespace)
		send(a, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-budget", Status: kid.StatusInProgress})
		e := appliedEvent(a.Namespace, "c-budget", 60*time.Second)

		c := meta.FindStatusCondition(e.Status.Conditions, kidv1.FiltersEvaluatedCondition)
		Expect(c).NotTo(BeNil(), "the event says it did not evaluate every action")
		Expect(c.Status).To(Equal(metav1.ConditionFalse))
		Expect(c.Reason).To(Equal(kidv1.FilterBudgetExceededReason), c.Message)
		// Without the budget the first 100 (the limit) would all run,
		// 100 x 70 ms and more.
		got := evaluatedAfter.FindStringSubmatch(c.Message)
		Expect(got).NotTo(BeNil(), c.Message)
		n, err := strconv.Atoi(got[1])
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(BeNumerically("<", actions.DefaultMaxActions), c.Message)
		Expect(c.Message).To(ContainSubstring(fmt.Sprintf("not evaluated: costly-%03d, ", n)), "the rest in name order, the first named")
		Expect(c.Message).To(ContainSubstring("past the limit in name order: costly-100, "), "300 actions are more than an event evaluates")
		Expect(e.Status.Actions).To(BeEmpty(), "none matched, and none failed for the budget")
		Expect(counterOf("kid_action_filter_budget_exceeded_total", a.Namespace)).To(Equal(before + 1))
		// The pass held its worker for the budget and the fold's round
		// trips (the timestamps are whole seconds, on the harness clock).
		Expect(e.Status.AppliedAt.Sub(e.Spec.ReceivedAt.Time)).To(BeNumerically("<=", 5*time.Second))
	})

	It("folds a delivery to another namespace within 5 s of it being stored, while a burst of the tenant's events is in flight", func() {
		b := newProduct(nil)
		cheap := httpAction(b, "cheap", "http://127.0.0.1:1/", func(x *kidv1.KidAction) {
			x.Spec.Filter = `event.type == "Challenge.StateChange"`
			x.Spec.DryRun = true
		})
		// Ten times the workers: each event of A takes the budget (1 s),
		// so with every worker on them, B's delivery would wait 10 s in
		// the queue behind them.
		const burst = 160
		waitsBefore := counterOf("kid_action_filter_lane_waits_total", a.Namespace)
		inParallel(burst, func(i int) {
			send(a, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: fmt.Sprintf("c-burst-%03d", i), Status: kid.StatusInProgress})
		})

		send(b, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-b", Status: kid.StatusInProgress})
		e := appliedEvent(b.Namespace, "c-b", 60*time.Second)
		// The attack landed: most of A's burst was still to be applied
		// when B's delivery was stored.
		pendingA := 0
		for _, ae := range events(a.Namespace) {
			if ae.Status.AppliedAt == nil || ae.Status.AppliedAt.After(e.Spec.ReceivedAt.Time) {
				pendingA++
			}
		}
		GinkgoWriter.Printf("B's event was stored at %s and applied at %s; %d of A's %d events were applied after it was stored\n",
			e.Spec.ReceivedAt.Format(time.RFC3339), e.Status.AppliedAt.Format(time.RFC3339), pendingA, burst)
		Expect(pendingA).To(BeNumerically(">", burst/2))

		// The bound: folded (and matched) within 5 s of being stored, on
		// the one clock of the receiver and the controllers.
		Expect(e.Status.AppliedAt.Sub(e.Spec.ReceivedAt.Time)).To(BeNumerically("<=", 5*time.Second))
		Expect(counterOf("kid_action_filter_lane_waits_total", a.Namespace)).To(BeNumerically(">", waitsBefore), "A's events waited for its lanes")
		u := user(b, kidv1.IdentityChallenge, "c-b", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.LastEventRef).NotTo(BeNil())
		})
		Expect(u.Status.LastEventRef.Name).To(Equal(e.Name), "the fold is B's event's")
		Expect(meta.FindStatusCondition(e.Status.Conditions, kidv1.FiltersEvaluatedCondition)).To(BeNil(), "B's filters all ran")
		Expect(e.Status.Actions).To(ConsistOf(HaveField("Name", cheap.Name)))
	})
})

var _ = Describe("An event evaluates a bounded number of a namespace's KidActions (issue #22)", func() {
	It("evaluates the first 100 in name order, and the event and the actions past the limit say so", func() {
		p := newProduct(nil)
		manyActions(p, "many", 103, "true") // the default limit is 100
		before := counterOf("kid_action_limit_exceeded_total", p.Namespace)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-many", Status: kid.StatusInProgress})
		e := appliedEvent(p.Namespace, "c-many", 60*time.Second)

		c := meta.FindStatusCondition(e.Status.Conditions, kidv1.FiltersEvaluatedCondition)
		Expect(c).NotTo(BeNil(), "the event says it did not evaluate every action")
		Expect(c.Reason).To(Equal(kidv1.ActionLimitExceededReason), c.Message)
		Expect(c.Message).To(HaveSuffix("past the limit in name order: many-100, many-101, many-102"))
		Expect(e.Status.Actions).NotTo(ContainElement(HaveField("Name", MatchRegexp(`^many-10[0-2]$`))))
		Expect(counterOf("kid_action_limit_exceeded_total", p.Namespace)).To(Equal(before + 1))

		// Each action past the limit says it never runs, the others are
		// Ready: the same actions for every event.
		Eventually(func(g Gomega) {
			var list kidv1.KidActionList
			g.Expect(h.Client.List(ctx, &list, client.InNamespace(p.Namespace))).To(Succeed())
			for _, x := range list.Items {
				ready := meta.FindStatusCondition(x.Status.Conditions, kidv1.ReadyCondition)
				g.Expect(ready).NotTo(BeNil(), x.Name)
				if x.Name >= "many-100" {
					g.Expect(ready.Reason).To(Equal(kidv1.ActionLimitExceededReason), x.Name)
					g.Expect(ready.Message).To(ContainSubstring("an event evaluates the first 100 in name order"))
					g.Expect(meta.IsStatusConditionTrue(x.Status.Conditions, kidv1.StalledCondition)).To(BeTrue(), x.Name)
				} else {
					g.Expect(ready.Status).To(Equal(metav1.ConditionTrue), x.Name)
				}
			}
		}, 90*time.Second, time.Second).Should(Succeed())
	})
})
