package controllers_test

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

var _ = Describe("k-ID API failures", func() {
	It("pause a product whose baseURL lacks /api/v1 within a minute, cost at most 10 calls the next, and resume when it is fixed", func() {
		// The mistake spec §4.1 warns about: the base URL without /api/v1.
		// The fake answers such paths as a web server does, 404 without
		// k-ID's body, and counts every call.
		p, fake := apiProduct(func(p *kidv1.KidProduct) {
			p.Spec.API.BaseURL = strings.TrimSuffix(p.Spec.API.BaseURL, "/api/v1")
			// 50 players polled every 10 s at most ask 5 calls a second,
			// within the test rate: every player's turn comes.
			p.Spec.API.Recovery.MaxInterval = &metav1.Duration{Duration: 10 * time.Second}
		})
		fake.SetDeliveryFault(kidsim.FaultDrop)
		start := time.Now()
		DeferCleanup(func() {
			GinkgoWriter.Printf("the fake saw %d calls in %s\n", len(fake.Requests()), time.Since(start).Round(time.Second))
		})
		// 50 players wait on a challenge the game started and registered.
		const players = 50
		for range players {
			register(p, kidv1.IdentityChallenge, fake.StartChallenge())
		}

		Eventually(func(g Gomega) {
			c := apiReady(p)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(kidv1.FailingReason))
			g.Expect(c.Message).To(MatchRegexp(`^404 from /[a-z/-]+: does baseURL end in /api/v1\?`))
		}, time.Minute, 100*time.Millisecond).Should(Succeed())
		paused := time.Since(start)
		before := len(fake.Requests())

		time.Sleep(time.Minute)
		calls := len(fake.Requests()) - before
		GinkgoWriter.Printf("APIReady False (Failing) after %s and %d calls; %d calls in the following minute\n", paused.Round(100*time.Millisecond), before, calls)
		AddReportEntry("breaker", map[string]any{"pausedAfter": paused.String(), "callsBefore": before, "callsInTheNextMinute": calls})
		Expect(calls).To(BeNumerically("<=", 10), "a paused product costs a probe now and then, not its rate")
		for _, r := range fake.Requests() {
			Expect(r.Endpoint).To(BeEmpty(), "every call so far missed /api/v1")
		}

		// Fix the base URL: a new client, whose probe succeeds, and the
		// paused players are asked at once.
		got := &kidv1.KidProduct{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(p.KidProduct), got)).To(Succeed())
		patch := client.MergeFrom(got.DeepCopy())
		got.Spec.API.BaseURL = fake.URL
		Expect(h.Client.Patch(ctx, got, patch)).To(Succeed())
		Eventually(func(g Gomega) {
			c := apiReady(p)
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Reason).To(Equal(kidv1.APIReadyReason))
		}, 30*time.Second).Should(Succeed())
		Eventually(func() int {
			seen := map[string]bool{}
			for _, r := range requests(fake, kidsim.EndpointChallengeGetStatus) {
				seen[r.Query.Get("challengeId")] = true
			}
			return len(seen)
		}, 30*time.Second, 250*time.Millisecond).Should(Equal(players), "every player's challenge is read again")
	})
})
