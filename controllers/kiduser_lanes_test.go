package controllers_test

import (
	"fmt"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// approvedSessions makes the sessions at the fake, as consents would,
// without a webhook, and returns each one's etag.
func approvedSessions(fake *fakeKid, ids []string) map[string]string {
	GinkgoHelper()
	fake.SetDeliveryFault(kidsim.FaultDrop)
	for _, id := range ids {
		_, err := fake.ApproveChallenge(fake.StartChallenge(), kidsim.Approval{SessionID: id})
		Expect(err).NotTo(HaveOccurred())
	}
	etags := map[string]string{}
	for _, s := range fake.State().Sessions {
		etags[s.Session.SessionID] = s.Session.Etag
	}
	return etags
}

// sessionUsers creates, 16 at a time, the users of sessions k-ID has, as a
// fold and a read leave them: the session confirmed and Active, with k-ID's
// etag (a read is a 304 and writes nothing) and syncedAt. They are deleted
// after the spec.
func sessionUsers(p *testenv.Product, etags map[string]string, ids []string, syncedAt func(id string) time.Time) {
	GinkgoHelper()
	DeferCleanup(func() {
		Expect(h.Client.DeleteAllOf(ctx, &kidv1.KidUser{}, client.InNamespace(p.Namespace))).To(Succeed())
	})
	inParallel(len(ids), func(i int) {
		id := ids[i]
		u := &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{
				Name: kidv1.UserName(p.Name, kidv1.IdentitySession, id), Namespace: p.Namespace,
				Labels:          map[string]string{kidv1.ProductLabel: p.Name},
				OwnerReferences: []metav1.OwnerReference{p.OwnerReference()},
			},
			Spec: kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: p.Name}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: id}},
		}
		Expect(h.Client.Create(ctx, u)).To(Succeed())
		u.Status.SessionID = id
		u.Status.Session = kidv1.SessionStatus{State: kidv1.SessionActive, Status: "ACTIVE", ETag: etags[id], SyncedAt: &metav1.Time{Time: syncedAt(id)}}
		Expect(h.Client.Status().Update(ctx, u)).To(Succeed())
	})
}

// sessionReadsOf lists the fake's reads by sessionId of the sessions in
// ids, made at or after since.
func sessionReadsOf(fake *fakeKid, ids map[string]bool, since time.Time) []kidsim.APIRequest {
	var out []kidsim.APIRequest
	for _, r := range requests(fake, kidsim.EndpointSessionGet) {
		if ids[r.Query.Get("sessionId")] && !r.At.Before(since) {
			out = append(out, r)
		}
	}
	return out
}

// firstReadAfter waits for the fake's first read of a session at or after
// since, and returns how long after since it came.
func firstReadAfter(fake *fakeKid, session string, since time.Time) time.Duration {
	GinkgoHelper()
	var reads []kidsim.APIRequest
	Eventually(func() []kidsim.APIRequest {
		reads = sessionReadsOf(fake, map[string]bool{session: true}, since)
		return reads
	}, 30*time.Second).ShouldNot(BeEmpty(), "session %s read", session)
	first := reads[0].At
	for _, r := range reads {
		if r.At.Before(first) {
			first = r.At
		}
	}
	return first.Sub(since)
}

var _ = Describe("k-ID API: urgent reads and read throughput", func() {
	It("reads for a requested-at and for permission changes within 2 s behind 2,000 due resyncs, and reads at the product's rate, k-ID answering in 100 ms", func() {
		const (
			backlog    = 2000
			rps, burst = 100, 10
			latency    = 100 * time.Millisecond
			urgentMax  = 2 * time.Second
		)
		// The product's API Secret comes last: until it does no user may
		// read, and its arrival (APIReady turns True) wakes every user
		// at once, each backlog session due, as when k-ID comes back
		// after an outage or a fixed key is rolled out.
		// A live product against a fake counting as live k-ID does: the
		// rate is above k-ID's test limit.
		p, fake := apiProduct(func(p *kidv1.KidProduct) {
			r, b := int32(rps), int32(burst)
			p.Spec.Environment = kidv1.EnvironmentLive
			p.Spec.API.SecretRef.Name = "lanes-api"
			p.Spec.API.RequestsPerSecond, p.Spec.API.Burst = &r, &b
			p.Spec.API.SessionResync = &metav1.Duration{Duration: time.Minute}
		})
		Expect(fake.SetWindowLimit(kidsim.LiveRateLimit)).To(Succeed())
		Expect(fake.SetAPIFault(kidsim.AllEndpoints, kidsim.APIFault{Latency: latency})).To(Succeed())

		ids := make([]string, backlog)
		inBacklog := map[string]bool{}
		for i := range ids {
			ids[i] = fmt.Sprintf("s-lane-%04d", i)
			inBacklog[ids[i]] = true
		}
		const requested = "s-lane-requested"
		etags := approvedSessions(fake, append([]string{requested}, ids...))
		// Last read 55 s ago: due within the next 5 to 11 s (the resync
		// interval and its 10 % spread), well after the operator started,
		// so nothing spreads them. The requested user was read just now.
		created := h.Clock.Now()
		sessionUsers(p, etags, append([]string{requested}, ids...), func(id string) time.Time {
			if id == requested {
				return created
			}
			return created.Add(-55 * time.Second)
		})
		time.Sleep(created.Add(12 * time.Second).Sub(h.Clock.Now()))
		Expect(sessionReadsOf(fake, inBacklog, created)).To(BeEmpty(), "no read before the API Secret")

		// The fault: k-ID answers in 100 ms.
		began := time.Now()
		resp, err := http.Get(fake.URL + "/session/get?sessionId=s-lane-timed")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Body.Close()).To(Succeed())
		Expect(time.Since(began)).To(BeNumerically(">=", latency))

		Expect(h.Client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "lanes-api", Namespace: p.Namespace, Labels: kidv1.SecretLabels()},
			StringData: map[string]string{"key": apiKey},
		})).To(Succeed())
		released := h.Clock.Now()
		// The backlog is under way: 300 of its 20 s at the rate.
		Eventually(func() int { return len(sessionReadsOf(fake, inBacklog, released)) }, time.Minute, 100*time.Millisecond).
			Should(BeNumerically(">=", 300))

		// A person (or the browser relay) asks for a read now.
		u := &kidv1.KidUser{}
		Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: kidv1.UserName(p.Name, kidv1.IdentitySession, requested)}, u)).To(Succeed())
		asked := h.Clock.Now()
		patch := client.MergeFrom(u.DeepCopy())
		u.Annotations = map[string]string{kidv1.RequestedAtAnnotation: asked.Format(time.RFC3339Nano)}
		Expect(h.Client.Patch(ctx, u, patch)).To(Succeed())
		waited := firstReadAfter(fake, requested, asked)
		GinkgoWriter.Printf("requested-at: read %s after the annotation\n", waited)
		Expect(waited).To(BeNumerically("<=", urgentMax), "the requested read waited behind the resync backlog")

		// Parents change the permissions of three players whose resync
		// is still waiting in the backlog: each webhook's fold asks for
		// a read, which goes ahead of the resync it had booked.
		// A candidate whose resync read comes after it was picked and
		// before its webhook was sent is no longer waiting, and is read
		// again only 5 s after that read (minReadSpacing, design §3
		// "Session sync"): a CI run failed so. It proves nothing about
		// the lanes, and the next candidate is taken.
		fake.SetDeliveryFault(kidsim.FaultNone)
		tried, urgent := 0, 0
		for i := backlog - 1; urgent < 3; i-- {
			Expect(i).To(BeNumerically(">=", 0), "the resync read every backlog session before three could be changed")
			Expect(tried).To(BeNumerically("<", 10), "candidates read by the resync before their change")
			id := ids[i]
			if len(sessionReadsOf(fake, map[string]bool{id: true}, released)) > 0 {
				continue // read already
			}
			tried++
			sent := h.Clock.Now()
			Expect(fake.SetPermission(id, "text-chat-private", true)).To(Succeed())
			waited := firstReadAfter(fake, id, sent)
			if before := sessionReadsOf(fake, map[string]bool{id: true}, released); len(before) > 0 && before[0].At.Before(sent) {
				GinkgoWriter.Printf("ChangePermissions: %s was read by its resync %s before its webhook was sent; read again %s after it\n", id, sent.Sub(before[0].At), waited)
				continue
			}
			urgent++
			GinkgoWriter.Printf("ChangePermissions: %s read %s after the webhook was sent\n", id, waited)
			Expect(waited).To(BeNumerically("<=", urgentMax), "%s's read waited behind the resync backlog", id)
			user(p, kidv1.IdentitySession, id, func(g Gomega, u *kidv1.KidUser) {
				g.Expect(u.Status.Session.Permissions).To(ContainElement(And(HaveField("Name", "text-chat-private"), HaveField("Enabled", true))), "the read answered the new permissions")
			})
		}

		// Every backlog session is read once, at the product's rate.
		Eventually(func() int {
			seen := map[string]bool{}
			for _, r := range sessionReadsOf(fake, inBacklog, released) {
				seen[r.Query.Get("sessionId")] = true
			}
			return len(seen)
		}, 2*time.Minute, time.Second).Should(Equal(backlog))
		var times []time.Time
		for _, r := range sessionReadsOf(fake, inBacklog, released) {
			times = append(times, r.At)
		}
		inTen, inOne := kidsim.MaxInWindow(times, 10*time.Second), kidsim.MaxInWindow(times, time.Second)
		GinkgoWriter.Printf("%d backlog reads; at most %d in 10 s and %d in 1 s (rate %d, burst %d, k-ID answering in %s)\n", len(times), inTen, inOne, rps, burst, latency)
		Expect(inTen).To(BeNumerically(">=", 8*rps), "reads reached 80 %% of the rate over 10 s")
		// The limiter holds the rate in every second, burst included;
		// rate/10 allows 100 ms of jitter between a call's start and its
		// arrival (a run measured 101).
		Expect(inOne).To(BeNumerically("<=", rps+rps/10), "and never passed it")
	})

	It("after a restart, reads the sessions it finds overdue over one resync interval, not all at once", func() {
		const players = 300
		// The API Secret comes just before the restart, so that the
		// operator running now reads none of them.
		// Live, at a rate that would read them all in 3 s, against a fake
		// counting as live k-ID does (k-ID's test limit would hold the
		// reads back, not the spread).
		p, fake := apiProduct(func(p *kidv1.KidProduct) {
			r := int32(100)
			p.Spec.Environment = kidv1.EnvironmentLive
			p.Spec.API.SecretRef.Name = "restart-api"
			p.Spec.API.RequestsPerSecond = &r
			p.Spec.API.SessionResync = &metav1.Duration{Duration: time.Minute}
		})
		Expect(fake.SetWindowLimit(kidsim.LiveRateLimit)).To(Succeed())
		ids := make([]string, players)
		all := map[string]bool{}
		for i := range ids {
			ids[i] = fmt.Sprintf("s-restart-%03d", i)
			all[ids[i]] = true
		}
		etags := approvedSessions(fake, ids)
		// Read an hour ago, and only 304s since (which write nothing):
		// every session is overdue.
		synced := h.Clock.Now().Add(-time.Hour)
		sessionUsers(p, etags, ids, func(string) time.Time { return synced })

		Expect(h.Client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "restart-api", Namespace: p.Namespace, Labels: kidv1.SecretLabels()},
			StringData: map[string]string{"key": apiKey},
		})).To(Succeed())
		restarted := h.Clock.Now()
		Expect(h.RestartOperator()).To(Succeed())
		readSince := func() int {
			seen := map[string]bool{}
			for _, r := range sessionReadsOf(fake, all, restarted) {
				seen[r.Query.Get("sessionId")] = true
			}
			return len(seen)
		}
		// At the rate alone the 300 reads take 3 s. Spread over the
		// minute from the start, 12 s see about a fifth of them.
		Consistently(readSince, 12*time.Second, 500*time.Millisecond).Should(BeNumerically("<", players/2))
		Eventually(readSince, time.Minute, time.Second).Should(BeNumerically(">=", players/2), "and the resync goes on")
	})
})
