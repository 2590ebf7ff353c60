package controllers_test

import (
	"encoding/json"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// productSeries sums the series of a metric of the product ns/demo that
// carry the given labels (metricSum).
func productSeries(name, ns string, labels map[string]string) (value float64, count uint64) {
	GinkgoHelper()
	want := map[string]string{"product": ns + "/demo"}
	for k, v := range labels {
		want[k] = v
	}
	value, count, _ = metricSum(name, want)
	return value, count
}

// pollsOf counts the fake's challenge/get-status calls about one challenge
// made after t (on the harness's clock).
func pollsOf(f *fakeKid, challenge string, after time.Time) int {
	n := 0
	for _, r := range requests(f, kidsim.EndpointChallengeGetStatus) {
		if r.Query.Get("challengeId") == challenge && r.At.After(after) {
			n++
		}
	}
	return n
}

var _ = Describe("k-ID API: what a product shows", func() {
	It("exports each product's backlog and how long its reads waited for a slot, and labels every poll with the product", func() {
		one := int32(1)
		p, fake := apiProduct(func(p *kidv1.KidProduct) {
			// One call a second against eight players who each want one
			// every second or two: most wait for a slot.
			p.Spec.API.RequestsPerSecond, p.Spec.API.Burst = &one, &one
		})
		fake.SetDeliveryFault(kidsim.FaultDrop)
		const players = 8
		var challenges []string
		for range players {
			c := fake.StartChallenge()
			challenges = append(challenges, c)
			register(p, kidv1.IdentityChallenge, c)
		}
		backlog := func() float64 {
			v, _ := productSeries("kid_api_backlog", p.Namespace, nil)
			return v
		}
		Eventually(backlog, time.Minute, 20*time.Millisecond).Should(BeNumerically(">=", 2), "players wait for their booked slots")

		// k-ID decides every challenge: the polls bring each decision in,
		// then stop, and the backlog drains.
		for _, c := range challenges {
			Expect(fake.DenyChallenge(c)).To(Succeed())
		}
		Eventually(func(g Gomega) {
			for _, u := range users(p.Namespace) {
				g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentDenied), u.Name)
			}
		}, time.Minute).Should(Succeed())
		Eventually(backlog, 30*time.Second).Should(BeZero())

		// Item by item: every call the fake received took one slot, which
		// the histogram counted, and one poll result of this product.
		same := func(g Gomega) {
			polls := len(requests(fake, kidsim.EndpointChallengeGetStatus))
			_, slots := productSeries("kid_api_slot_wait_seconds", p.Namespace, nil)
			answered, _ := productSeries("kid_recovery_polls_total", p.Namespace, map[string]string{"kind": "challenge"})
			g.Expect(slots).To(BeEquivalentTo(polls), "one slot per call")
			g.Expect(answered).To(BeEquivalentTo(polls), "one counted result per call")
		}
		Eventually(same, 10*time.Second).Should(Succeed())
		Consistently(same, 2*time.Second).Should(Succeed())
		waited, _ := productSeries("kid_api_slot_wait_seconds", p.Namespace, nil)
		Expect(waited).To(BeNumerically(">", 1), "calls waited for their slots, seconds in all")
		changed, _ := productSeries("kid_recovery_polls_total", p.Namespace, map[string]string{"kind": "challenge", "result": "changed"})
		Expect(changed).To(BeNumerically(">=", players), "each decision came from a poll of this product")

		// A product with rate to spare: its reads go at once, each counted
		// with no wait.
		q, quick := apiProduct(nil)
		quick.SetDeliveryFault(kidsim.FaultDrop)
		register(q, kidv1.IdentityChallenge, quick.StartChallenge())
		Eventually(func(g Gomega) {
			polls := len(requests(quick, kidsim.EndpointChallengeGetStatus))
			g.Expect(polls).To(BeNumerically(">=", 2))
			waited, slots := productSeries("kid_api_slot_wait_seconds", q.Namespace, nil)
			g.Expect(slots).To(BeEquivalentTo(polls))
			g.Expect(waited).To(BeZero())
		}, 30*time.Second).Should(Succeed())
	})

	It("counts an event as recovered only when the poll's copy was stored, not when the webhook's came first", func() {
		p, fake := apiProduct(nil)
		// k-ID's own deliveries are lost; the test delivers the webhook
		// copies it wants, when it wants them.
		fake.SetDeliveryFault(kidsim.FaultDrop)
		lost, webhookFirst, pollFirst := fake.StartChallenge(), fake.StartChallenge(), fake.StartChallenge()
		for _, c := range []string{lost, webhookFirst, pollFirst} {
			register(p, kidv1.IdentityChallenge, c)
		}
		// A PASS folds into its session's KidUser, which a quota refusing
		// KidUsers keeps from being made: the webhook's PASS stays
		// Pending, its player's challenge stays pending, and the poll
		// asks k-ID about it after the webhook's copy is stored.
		quota := blockUserCreates(p.Namespace)
		DeferCleanup(func() { Expect(h.Client.Delete(ctx, quota)).To(Succeed()) })
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: webhookFirst, Status: kid.StatusPass, SessionID: "s-webhook-first", KUID: "k-webhook-first", ProductID: 11472})
		approvedAt := h.Clock.Now()
		_, err := fake.ApproveChallenge(webhookFirst, kidsim.Approval{SessionID: "s-webhook-first", KUID: "k-webhook-first"})
		Expect(err).NotTo(HaveOccurred())
		_, err = fake.ApproveChallenge(lost, kidsim.Approval{})
		Expect(err).NotTo(HaveOccurred())
		_, err = fake.ApproveChallenge(pollFirst, kidsim.Approval{SessionID: "s-poll-first", KUID: "k-poll-first"})
		Expect(err).NotTo(HaveOccurred())

		passOf := func(g Gomega, challenge string) *kidv1.KidEvent {
			for _, e := range eventsAbout(p.Namespace, kid.ChallengeStateChange, challenge) {
				var data map[string]any
				g.Expect(json.Unmarshal(e.Spec.Data.Raw, &data)).To(Succeed())
				if data["status"] == kid.StatusPass {
					return &e
				}
			}
			return nil
		}
		// The polls store the PASS of the two challenges whose webhook was
		// lost, and poll the third, whose webhook came first, again and
		// again (its PASS cannot fold): the fault landed.
		Eventually(func(g Gomega) {
			g.Expect(passOf(g, lost)).NotTo(BeNil())
			g.Expect(passOf(g, pollFirst)).NotTo(BeNil())
			g.Expect(pollsOf(fake, webhookFirst, approvedAt)).To(BeNumerically(">=", 2), "k-ID was asked about the challenge whose PASS the webhook had stored")
		}, 30*time.Second).Should(Succeed())
		// Then the webhook's copy of a PASS the poll stored first: a
		// duplicate, answered 200.
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: pollFirst, Status: kid.StatusPass, SessionID: "s-poll-first", KUID: "k-poll-first", ProductID: 11472})

		// Item by item: the stored PASS of each challenge, and whose copy
		// it is.
		sources := map[string]kidv1.EventSource{}
		for _, c := range []string{lost, webhookFirst, pollFirst} {
			sources[c] = passOf(Default, c).Spec.Source
		}
		Expect(sources).To(Equal(map[string]kidv1.EventSource{lost: kidv1.SourcePoll, webhookFirst: kidv1.SourceWebhook, pollFirst: kidv1.SourcePoll}))
		// The counter counts exactly the events whose stored copy is the
		// poll's (any IN_PROGRESS the polls found first among them), never
		// the webhook's PASS, however often it was polled after.
		fromPolls := func() int {
			n := 0
			for _, e := range events(p.Namespace) {
				if e.Spec.EventType == kid.ChallengeStateChange && e.Spec.Source == kidv1.SourcePoll {
					n++
				}
			}
			return n
		}
		recovered := func() float64 {
			v, _ := productSeries("kid_polled_events_total", p.Namespace, map[string]string{"type": kid.ChallengeStateChange})
			return v
		}
		Eventually(recovered).Should(BeEquivalentTo(fromPolls()))
		Consistently(func(g Gomega) { g.Expect(recovered()).To(BeEquivalentTo(fromPolls())) }, 3*time.Second).Should(Succeed())
		changed, _ := productSeries("kid_recovery_polls_total", p.Namespace, map[string]string{"kind": "challenge", "result": "changed"})
		Expect(changed).To(BeNumerically(">", recovered()), "polls that found a PASS already stored were made, and not counted as recovered")

	})

	It("rotates the API key: a 401 to the current key tries the next, which is kept, and APIReady names it", func() {
		ns, err := h.NewNamespace(ctx)
		Expect(err).NotTo(HaveOccurred())
		fake := newFakeKid(ns)
		const oldKey, newKey = apiKey, "the-next-api-key"
		// k-ID was switched to the next key already.
		fake.SetAPIKey(newKey)
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "demo-api", Namespace: ns, Labels: kidv1.SecretLabels()},
			StringData: map[string]string{"key": oldKey, "key" + kidv1.NextAPIKeySuffix: newKey},
		}
		Expect(h.Client.Create(ctx, secret)).To(Succeed())
		rps := int32(testRate)
		p, err := h.NewProduct(ctx, ns, "demo", func(p *kidv1.KidProduct) {
			p.Spec.API = &kidv1.APISpec{
				SecretRef: kidv1.SecretKeySelector{Name: "demo-api", Key: "key"}, BaseURL: fake.URL, RequestsPerSecond: &rps,
				Recovery: kidv1.RecoverySpec{FirstPoll: &metav1.Duration{Duration: time.Second}, MaxInterval: &metav1.Duration{Duration: time.Second}},
			}
		})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			c := apiReady(p)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Message).To(ContainSubstring(`API key "key-next" of Secret "demo-api"`))
			g.Expect(c.Message).NotTo(ContainSubstring(newKey), "the key's name, never the key")
		}, 30*time.Second).Should(Succeed())
		// A player's pending challenge keeps calls going.
		register(p, kidv1.IdentityChallenge, fake.StartChallenge())
		Eventually(func() int { return len(requests(fake, kidsim.EndpointChallengeGetStatus)) }, 30*time.Second).Should(BeNumerically(">=", 5))

		// Every request the fake received, by key and answer: the old key
		// once, refused; the same request again with the next key,
		// answered; the next key for every other, never refused.
		oldID, newID := kidsim.KeyID(oldKey), kidsim.KeyID(newKey)
		reqs := fake.Requests()
		Expect(reqs[0].KeyID).To(Equal(oldID))
		Expect(reqs[0].Status).To(Equal(401))
		Expect(reqs[1].KeyID).To(Equal(newID))
		Expect(reqs[1].Status).NotTo(Equal(401))
		Expect(reqs[1].Endpoint).To(Equal(reqs[0].Endpoint))
		Expect(reqs[1].Query).To(Equal(reqs[0].Query))
		for _, r := range reqs[1:] {
			Expect(r.KeyID).To(Equal(newID))
			Expect(r.Status).NotTo(Equal(401))
		}

		// The rotation ends: the next key moves into "key", and "key-next"
		// goes. A new client sends it as its current key, and nothing is
		// refused.
		before := len(fake.Requests())
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(secret), secret)).To(Succeed())
		secret.Data = map[string][]byte{"key": []byte(newKey)}
		Expect(h.Client.Update(ctx, secret)).To(Succeed())
		Eventually(func(g Gomega) {
			c := apiReady(p)
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Message).To(ContainSubstring(`API key "key" of Secret "demo-api"`))
		}, 30*time.Second).Should(Succeed())
		Eventually(func() int { return len(fake.Requests()) - before }, 30*time.Second).Should(BeNumerically(">=", 5))
		for _, r := range fake.Requests()[before:] {
			Expect(r.KeyID).To(Equal(newID))
			Expect(r.Status).NotTo(Equal(401))
		}
	})

	It("shows a product's last and next resync and how many pending challenges recovery gave up on", func() {
		p, fake := apiProduct(func(p *kidv1.KidProduct) {
			p.Spec.API.SessionResync = &metav1.Duration{Duration: time.Minute}
			p.Spec.API.Recovery.Horizon = &metav1.Duration{Duration: time.Minute}
		})
		// A player with a session, read from k-ID.
		challenge := fake.StartChallenge()
		session, err := fake.ApproveChallenge(challenge, kidsim.Approval{})
		Expect(err).NotTo(HaveOccurred())
		u := user(p, kidv1.IdentitySession, session, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Session.SyncedAt).NotTo(BeNil())
		})
		apiStatus := func(g Gomega) *kidv1.APIStatus {
			got := &kidv1.KidProduct{}
			g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(p.KidProduct), got)).To(Succeed())
			g.Expect(got.Status.API).NotTo(BeNil())
			return got.Status.API
		}
		Eventually(func(g Gomega) {
			st := apiStatus(g)
			g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(u), u)).To(Succeed())
			read, now := u.Status.Session.SyncedAt.Time, h.Clock.Now()
			g.Expect(st.LastResyncTime).NotTo(BeNil())
			g.Expect(st.LastResyncTime.Time).To(BeTemporally("<=", now))
			g.Expect(st.LastResyncTime.Time).To(BeTemporally(">", read.Add(-time.Minute)), "to the minute")
			g.Expect(st.NextResyncTime).NotTo(BeNil())
			// Due a minute (and up to 10 %) after the last read, rounded
			// up to the minute.
			g.Expect(st.NextResyncTime.Time).To(BeTemporally(">=", read.Add(time.Minute)))
			g.Expect(st.NextResyncTime.Time).To(BeTemporally("<", now.Add(time.Minute+6*time.Second+time.Minute)))
			g.Expect(st.RecoveriesGivenUp).To(BeZero())
		}).Should(Succeed())

		// A challenge the game registered, that nobody decides, past its
		// one-minute horizon.
		undecided := fake.StartChallenge()
		register(p, kidv1.IdentityChallenge, undecided)
		Eventually(func() int { return len(requests(fake, kidsim.EndpointChallengeGetStatus)) }, 30*time.Second).Should(BeNumerically(">=", 1))
		h.Clock.Advance(2 * time.Minute)
		DeferCleanup(func() { h.Clock.Advance(-2 * time.Minute) })
		Eventually(func(g Gomega) {
			st := apiStatus(g)
			g.Expect(st.RecoveriesGivenUp).To(BeEquivalentTo(1))
			// The session was due again, and read again.
			g.Expect(st.LastResyncTime.Time).To(BeTemporally(">", h.Clock.Now().Add(-time.Minute-10*time.Second)))
			g.Expect(st.NextResyncTime.Time).To(BeTemporally(">", st.LastResyncTime.Time))
		}, 30*time.Second).Should(Succeed())
		polled := len(requests(fake, kidsim.EndpointChallengeGetStatus))
		Consistently(func() int { return len(requests(fake, kidsim.EndpointChallengeGetStatus)) }, 3*time.Second).Should(Equal(polled), "nothing polls a challenge past its horizon")

		// k-ID decides it after all (its webhook arrives): nothing is given
		// up any more.
		Expect(fake.DenyChallenge(undecided)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(apiStatus(g).RecoveriesGivenUp).To(BeZero())
		}, 30*time.Second).Should(Succeed())
	})
})
