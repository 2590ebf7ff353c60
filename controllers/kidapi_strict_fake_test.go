package controllers_test

import (
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// countStatus counts the calls to an endpoint the fake answered with status
// (0: a call it never answered).
func countStatus(fake *fakeKid, endpoint string, status int) int {
	n := 0
	for _, r := range requests(fake, endpoint) {
		if r.Status == status {
			n++
		}
	}
	return n
}

// userWithin is user with a timeout of its own, for a path that waits out
// backoffs.
func userWithin(timeout time.Duration, p *testenv.Product, kind kidv1.IdentityKind, id string, check func(Gomega, *kidv1.KidUser)) {
	GinkgoHelper()
	key := client.ObjectKey{Namespace: p.Namespace, Name: kidv1.UserName(p.Name, kind, id)}
	Eventually(func(g Gomega) {
		u := &kidv1.KidUser{}
		g.Expect(h.Client.Get(ctx, key, u)).To(Succeed())
		check(g, u)
	}, timeout).Should(Succeed())
}

// The fake k-ID does what k-ID may (spec §4), each behind a switch, and the
// operator copes: every spec turns one on, shows that it landed (the fake
// counted it), and that the player still ends up right.
var _ = Describe("k-ID API, as strict as k-ID", func() {
	DescribeTable("syncs a new session through k-ID's propagation delay",
		func(status int) {
			p, fake := apiProduct(nil)
			// Longer than the harness's 1.5 s, so the first read lands
			// inside it however slowly the PASS reaches the cluster.
			fake.SetPropagationDelay(4 * time.Second)
			Expect(fake.SetPropagationStatus(status)).To(Succeed())
			session, err := fake.ApproveChallenge(fake.StartChallenge(), kidsim.Approval{})
			Expect(err).NotTo(HaveOccurred())

			u := user(p, kidv1.IdentitySession, session, func(g Gomega, u *kidv1.KidUser) {
				g.Expect(u.Status.Session.SyncedAt).NotTo(BeNil(), "read once propagated")
			})
			Expect(u.Status.Session.State).To(Equal(kidv1.SessionActive), "not taken for deleted")
			Expect(u.Status.ErasedAt).To(BeNil())
			Expect(u.Status.Session.Permissions).NotTo(BeEmpty())
			reads := sessionReads(fake, "sessionId", session, 0)
			var notFound int
			for i, r := range reads {
				if r.Status == http.StatusOK {
					Expect(i).To(Equal(len(reads)-1), "one read after the delay, the one that synced")
					break
				}
				Expect(r.Status).To(Equal(status), "read %d", i)
				notFound++
			}
			Expect(notFound).To(BeNumerically(">=", 1), "the propagation answers landed")
			GinkgoWriter.Printf("%d reads answered %d while the session propagated, then %d\n", notFound, status, reads[len(reads)-1].Status)
		},
		Entry("as 404, as k-ID's vendor guidance says", http.StatusNotFound),
		Entry("as 400 NOT_FOUND, as its docs answer a deleted session", http.StatusBadRequest),
	)

	It("exercises the propagation path in every spec: the harness's fake answers 404 after each PASS", func() {
		p, fake := apiProduct(nil)
		var sessions []string
		for range 3 {
			s, err := fake.ApproveChallenge(fake.StartChallenge(), kidsim.Approval{})
			Expect(err).NotTo(HaveOccurred())
			sessions = append(sessions, s)
		}
		for _, s := range sessions {
			user(p, kidv1.IdentitySession, s, func(g Gomega, u *kidv1.KidUser) {
				g.Expect(u.Status.Session.SyncedAt).NotTo(BeNil())
			})
		}
		// The reads that came within the harness's 1.5 s got the 404; on
		// a slow machine a PASS may reach the cluster later than that, so
		// at least one of the three shows it.
		Expect(countStatus(fake, kidsim.EndpointSessionGet, http.StatusNotFound)).To(BeNumerically(">=", 1))
	})

	It("recovers a decision through k-ID's 5xx", func() {
		p, fake := apiProduct(nil)
		fake.SetDeliveryFault(kidsim.FaultDrop)
		// Every endpoint answers a gateway's 503 to the next 4 calls: a
		// first call's three attempts, then the next call's first.
		Expect(fake.SetAPIFault(kidsim.AllEndpoints, kidsim.APIFault{Status: http.StatusServiceUnavailable, Calls: 4})).To(Succeed())
		challenge := fake.StartChallenge()
		register(p, kidv1.IdentityChallenge, challenge)
		session, err := fake.ApproveChallenge(challenge, kidsim.Approval{})
		Expect(err).NotTo(HaveOccurred())

		userWithin(30*time.Second, p, kidv1.IdentitySession, session, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentGranted))
			g.Expect(u.Status.Session.SyncedAt).NotTo(BeNil())
		})
		var served int
		for _, r := range fake.Requests() {
			if r.Status == http.StatusServiceUnavailable {
				served++
			}
		}
		Expect(served).To(Equal(4), "the fault landed, all of it")
		Expect(fake.APIFaults()).To(BeEmpty(), "and is spent")
		Expect(apiReady(p).Status).To(Equal(metav1.ConditionTrue), "four failures do not pause the product")
	})

	It("syncs a session that k-ID answers slowly, and past the call's timeout twice", func() {
		p, fake := apiProduct(func(p *kidv1.KidProduct) {
			p.Spec.API.Timeout = &metav1.Duration{Duration: time.Second}
		})
		fake.SetPropagationDelay(0)
		// Every answer takes 300 ms, under the timeout; the first two
		// reads of a session get none at all.
		Expect(fake.SetAPIFault(kidsim.AllEndpoints, kidsim.APIFault{Latency: 300 * time.Millisecond})).To(Succeed())
		Expect(fake.SetAPIFault(kidsim.EndpointSessionGet, kidsim.APIFault{Hang: true, Calls: 2})).To(Succeed())
		session, err := fake.ApproveChallenge(fake.StartChallenge(), kidsim.Approval{})
		Expect(err).NotTo(HaveOccurred())

		userWithin(60*time.Second, p, kidv1.IdentitySession, session, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Session.SyncedAt).NotTo(BeNil())
		})
		reads := sessionReads(fake, "sessionId", session, 0)
		Expect(len(reads)).To(BeNumerically(">=", 3))
		Expect([]int{reads[0].Status, reads[1].Status}).To(Equal([]int{0, 0}), "the first two reads got no answer")
		Expect(reads[len(reads)-1].Status).To(Equal(http.StatusOK), "a slow answer is still an answer")
		Expect(countStatus(fake, kidsim.EndpointSessionGet, 0)).To(Equal(2), "no more went unanswered than the fault held")
	})

	It("shows a challenge k-ID reports PENDING as pending, then its decision", func() {
		p, fake := apiProduct(nil)
		fake.SetDeliveryFault(kidsim.FaultDrop)
		fake.SetChallengesPending(true)
		challenge := fake.StartChallenge()
		register(p, kidv1.IdentityChallenge, challenge)

		// The poll's PENDING is the IN_PROGRESS no webhook brought.
		Eventually(func(g Gomega) {
			u := &kidv1.KidUser{}
			g.Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: "game-challenge-" + challenge}, u)).To(Succeed())
			g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentPending))
		}, 30*time.Second).Should(Succeed())
		// Every answer so far was PENDING: the challenge was open.
		Expect(countStatus(fake, kidsim.EndpointChallengeGetStatus, http.StatusOK)).To(BeNumerically(">=", 1), "PENDING was answered")

		session, err := fake.ApproveChallenge(challenge, kidsim.Approval{})
		Expect(err).NotTo(HaveOccurred())
		userWithin(30*time.Second, p, kidv1.IdentitySession, session, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentGranted))
		})
	})

	It("stays within k-ID's test limit, which the harness's fake enforces", func() {
		p, fake := apiProduct(nil)
		fake.SetDeliveryFault(kidsim.FaultDrop)
		// 40 players polled at once: the product's rate, not the fake's
		// 429, holds the calls back.
		for range 40 {
			register(p, kidv1.IdentityChallenge, fake.StartChallenge())
		}
		Eventually(func() int {
			seen := map[string]bool{}
			for _, r := range requests(fake, kidsim.EndpointChallengeGetStatus) {
				seen[r.Query.Get("challengeId")] = true
			}
			return len(seen)
		}, 60*time.Second).Should(Equal(40))
		Expect(countStatus(fake, kidsim.EndpointChallengeGetStatus, http.StatusTooManyRequests)).To(BeZero(), "k-ID's limit was never reached")
		var times []time.Time
		for _, r := range fake.Requests() {
			times = append(times, r.At)
		}
		Expect(kidsim.MaxInWindow(times, time.Second)).To(BeNumerically("<=", kidsim.TestRateLimit))

		// Above k-ID's limit, the fake answers 429 as k-ID would.
		over := int32(kidsim.TestRateLimit * 3)
		got := &kidv1.KidProduct{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(p.KidProduct), got)).To(Succeed())
		patch := client.MergeFrom(got.DeepCopy())
		got.Spec.API.RequestsPerSecond, got.Spec.API.Burst = &over, &over
		Expect(h.Client.Patch(ctx, got, patch)).To(Succeed())
		for range 60 {
			register(p, kidv1.IdentityChallenge, fake.StartChallenge())
		}
		Eventually(func() int {
			return countStatus(fake, kidsim.EndpointChallengeGetStatus, http.StatusTooManyRequests)
		}, 60*time.Second).Should(BeNumerically(">=", 1), "a product above k-ID's test limit meets its 429")
	})
})
