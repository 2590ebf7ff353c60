//go:build faults && linux

package faults

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// Election timings of the two-replica specs: short, so that a takeover is
// seconds, and in the same ratios as the defaults (15 s, 10 s, 2 s).
const (
	leaseDuration = 3 * time.Second
	renewDeadline = 2 * time.Second
	retryPeriod   = 500 * time.Millisecond
	drainPeriod   = 2 * time.Second
)

// electedReplicas are two replicas of the Deployment: each receives
// webhooks, and the elected one runs the controllers.
func electedReplicas() (a, b *replica) {
	args := []string{
		"--leader-elect", "--leader-election-namespace=default",
		"--leader-elect-lease-duration=" + leaseDuration.String(),
		"--leader-elect-renew-deadline=" + renewDeadline.String(),
		"--leader-elect-retry-period=" + retryPeriod.String(),
		"--webhook-drain-period=" + drainPeriod.String(),
	}
	a, b = newReplica("replica-a", true, args...), newReplica("replica-b", true, args...)
	for _, r := range []*replica{a, b} {
		Expect(r.start()).To(Succeed())
		DeferCleanup(func() { r.kill() })
	}
	for _, r := range []*replica{a, b} {
		Expect(r.waitReady(time.Minute)).To(Succeed())
	}
	return a, b
}

var _ = Describe("Fault 1: rolling restart", func() {
	It("loses no delivery and refuses no connection while each replica is stopped with SIGTERM and started again in turn", func() {
		logsOnFailure()
		a, b := electedReplicas()
		lb := newBalancer(a, b)
		DeferCleanup(lb.Close)
		ns, p := newProduct(lb.URL, a, b)

		tr := newTraffic(p)
		stop, _ := tr.start(20, 0, passWithSession)
		time.Sleep(3 * time.Second)
		for _, r := range []*replica{a, b} {
			began := time.Now()
			Expect(r.term(time.Minute)).To(Succeed())
			stopped := time.Since(began)
			Expect(r.start()).To(Succeed())
			Expect(r.waitReady(time.Minute)).To(Succeed())
			report("restart", "%s: SIGTERM to exit %s (drain %s), started again and ready after %s in all",
				r.name, stopped.Round(time.Millisecond), drainPeriod, time.Since(began).Round(time.Millisecond))
			time.Sleep(3 * time.Second)
		}
		stop()
		c := tr.wait()
		report("injected", "each of 2 replicas stopped with SIGTERM and started again, under 20 deliveries/s")
		report("counted", "%s; connections refused or reset: %d (%d while another replica was ready); no ready replica: %d",
			c, lb.failures.Load(), lb.failuresWhileReady.Load(), lb.noneReady.Load())

		Expect(c.lost).To(BeZero())
		Expect(lb.failuresWhileReady.Load()).To(BeZero(), "a connection refused or reset while a ready replica existed")
		Expect(c.answers).To(HaveLen(1), "every attempt answered 200 at once: %v", c.answers)
		Eventually(func(g Gomega) {
			tr.storedOnce(g, ns)
			allApplied(g, ns)
		}).Should(Succeed())
	})
})

// countingTarget is a kidsim target that takes each webhook-id once, and
// records which KidEvent each webhook-id delivered.
type countingTarget struct {
	*httptest.Server
	target *kidsim.Target
	mu     sync.Mutex
	// events maps each webhook-id to the KidEvent named in its body.
	events map[string]string
}

func newCountingTarget() *countingTarget {
	t := &countingTarget{target: &kidsim.Target{Dedupe: true}, events: map[string]string{}}
	t.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var in struct {
			Event struct {
				Name string `json:"name"`
			} `json:"event"`
		}
		_ = json.Unmarshal(body, &in)
		t.mu.Lock()
		t.events[r.Header.Get("webhook-id")] = in.Event.Name
		t.mu.Unlock()
		r.Body = io.NopCloser(bytesReader(body))
		t.target.ServeHTTP(w, r)
	}))
	DeferCleanup(t.Close)
	return t
}

// effects checks that each of the events had its effect exactly once (one
// webhook-id taken per event) and returns how many deliveries were repeats
// of a webhook-id already taken.
func (t *countingTarget) effects(g Gomega, events []string) (repeats int) {
	taken := t.target.Taken()
	t.mu.Lock()
	defer t.mu.Unlock()
	perEvent := map[string]int{}
	for id, n := range taken {
		perEvent[t.events[id]]++
		repeats += n - 1
	}
	for _, e := range events {
		g.Expect(perEvent[e]).To(Equal(1), "effects of event %s", e)
	}
	g.Expect(perEvent).To(HaveLen(len(events)), "effects of events that should have none")
	return repeats
}

// notifyAction is a KidAction that posts each Challenge.StateChange to url.
func notifyAction(ns, url string) {
	Expect(h.Client.Create(ctx, &kidv1.KidAction{
		ObjectMeta: metav1.ObjectMeta{Name: "notify", Namespace: ns},
		Spec: kidv1.KidActionSpec{
			EventTypes: []string{kid.ChallengeStateChange},
			HTTP:       &kidv1.HTTPAction{URL: url, MaxAttempts: 10},
		},
	})).To(Succeed())
}

// challengeEvents names the Challenge.StateChange events in ns.
func challengeEvents(g Gomega, ns string) []string {
	var list kidv1.KidEventList
	g.Expect(h.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.Spec.EventType == kid.ChallengeStateChange {
			out = append(out, e.Name)
		}
	}
	return out
}

var _ = Describe("Fault 2: leader killed", func() {
	It("moves the controllers to the other replica within the lease's bounds, applies every event, and has each action's effect once", func() {
		logsOnFailure()
		a, b := electedReplicas()
		lb := newBalancer(a, b)
		DeferCleanup(lb.Close)
		target := newCountingTarget()
		ns, p := newProduct(lb.URL, a, b)
		notifyAction(ns, target.URL)

		var leader, other *replica
		Eventually(func() bool {
			switch {
			case a.leader():
				leader, other = a, b
			case b.leader():
				leader, other = b, a
			}
			return leader != nil
		}).Should(BeTrue(), "a replica leads")

		tr := newTraffic(p)
		stop, _ := tr.start(20, 0, passWithSession)
		time.Sleep(4 * time.Second)
		killed := time.Now()
		leader.kill()
		Eventually(other.leader).WithPolling(50 * time.Millisecond).Should(BeTrue())
		takeover := time.Since(killed)
		Expect(leader.start()).To(Succeed())
		Expect(leader.waitReady(time.Minute)).To(Succeed())
		time.Sleep(4 * time.Second)
		stop()
		c := tr.wait()

		var repeats int
		Eventually(func(g Gomega) {
			tr.storedOnce(g, ns)
			allApplied(g, ns)
			repeats = target.effects(g, challengeEvents(g, ns))
		}).Should(Succeed())
		report("injected", "SIGKILL to the leader %s under 20 deliveries/s; lease %s, renew deadline %s, retry period %s", leader.name, leaseDuration, renewDeadline, retryPeriod)
		report("counted", "%s; connections refused or reset: %d; %s took over after %s; every event Applied, each action's effect once at the target (%d repeated deliveries of a webhook-id it had taken, answered as repeats)",
			c, lb.failures.Load(), other.name, takeover.Round(time.Millisecond), repeats)
		Expect(c.lost).To(BeZero())
		// A dead leader's lease runs out LeaseDuration after its last
		// renewal; the other replica tries every RetryPeriod (plus
		// client-go's jitter of 1.2).
		Expect(takeover).To(BeNumerically("<=", leaseDuration+2*retryPeriod+time.Second))
	})
})
