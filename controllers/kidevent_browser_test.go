package controllers_test

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/controllers"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

var _ = Describe("One subject's browser events, relayed in a burst", func() {
	It("ask k-ID once per confirmation window, each is recorded, and none is left unanswered", func() {
		// Recovery's schedule would wait an hour: only confirmations
		// explain the reads within the spec.
		hour := &metav1.Duration{Duration: time.Hour}
		p, fake := apiProduct(func(p *kidv1.KidProduct) {
			p.Spec.API.Recovery = kidv1.RecoverySpec{FirstPoll: hour, MaxInterval: hour}
		})
		fake.SetDeliveryFault(kidsim.FaultDrop)
		challenge := fake.StartChallenge()
		reads := func() []kidsim.APIRequest {
			var out []kidsim.APIRequest
			for _, r := range requests(fake, "challenge/get-status") {
				if r.Query.Get("challengeId") == challenge {
					out = append(out, r)
				}
			}
			return out
		}

		// A page (or a script with its token) relays one message after
		// another about the challenge, as fast as the relay stores them.
		const relayed = 20
		var names []string
		for i := range relayed {
			e := browserEvent(p, fmt.Sprintf("dom-burst-%02d", i), "Widget.AgeGate.Challenge",
				fmt.Sprintf(`{"status":"PENDING","challengeId":%q,"n":%d}`, challenge, i), kidv1.EventSubject{ChallengeID: challenge})
			names = append(names, e.Name)
		}

		By("within the first window, k-ID is read once")
		Eventually(reads).Should(HaveLen(1))
		Consistently(reads, 3*time.Second, 200*time.Millisecond).Should(HaveLen(1))

		By("at the window's end, the relay that waited asks once more; every relay is recorded Ignored")
		standIn := kidv1.UserName(p.Name, kidv1.IdentityChallenge, challenge)
		Eventually(func(g Gomega) {
			byName := map[string]kidv1.KidEvent{}
			for _, e := range events(p.Namespace) {
				byName[e.Name] = e
			}
			for _, name := range names {
				e, ok := byName[name]
				g.Expect(ok).To(BeTrue(), "%s stored", name)
				g.Expect(e.Status.Phase).To(Equal(kidv1.EventIgnored), name)
				// A relay whose read another one makes names the user if
				// one held the challenge when it was recorded (the events
				// are reconciled in parallel: the asker may not have made
				// the stand-in yet).
				if e.Status.UserRef != nil {
					g.Expect(e.Status.UserRef.Name).To(Equal(standIn), name)
				}
			}
		}).WithTimeout(controllers.DefaultConfirmSpacing + 30*time.Second).Should(Succeed())
		Eventually(reads).Should(HaveLen(2))
		Consistently(reads, 2*time.Second, 200*time.Millisecond).Should(HaveLen(2), "no relay asks again")

		got := reads()
		gap := got[1].At.Sub(got[0].At)
		GinkgoWriter.Printf("%d relays of one challenge: %d reads at k-ID, %s apart\n", relayed, len(got), gap.Round(time.Millisecond))
		// The second ask is a window after the first (the controllers'
		// clock, which the fake shares); each read follows its ask by
		// the user's reconcile, a second at most on a loaded machine.
		Expect(gap).To(BeNumerically(">=", controllers.DefaultConfirmSpacing-time.Second))
	})
})
