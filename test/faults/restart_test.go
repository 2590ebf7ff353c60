//go:build faults && linux

package faults

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
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
	args := append(electionArgs(leaseDuration, renewDeadline, retryPeriod), "--webhook-drain-period="+drainPeriod.String())
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

// electionArgs are the flags of a replica that runs the controllers only
// while it holds the lease.
func electionArgs(lease, renew, retry time.Duration) []string {
	return []string{
		"--leader-elect", "--leader-election-namespace=default",
		"--leader-elect-lease-duration=" + lease.String(),
		"--leader-elect-renew-deadline=" + renew.String(),
		"--leader-elect-retry-period=" + retry.String(),
	}
}

var _ = Describe("Fault 1: rolling restart", func() {
	It("loses no delivery and refuses no connection while each replica is stopped with SIGTERM and started again in turn", func() {
		logsOnFailure()
		a, b := electedReplicas()
		lb := newBalancer(a, b)
		DeferCleanup(lb.Close)
		target := newCountingTarget()
		ns, p := newProduct(lb.URL, a, b)
		ledger := watchEvents(ns)
		notifyAction(ns, target.URL)

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
		var repeats int
		Eventually(func(g Gomega) {
			tr.storedOnce(g, ns)
			allApplied(g, ns)
			repeats = target.effects(g, challengeEvents(g, ns))
		}).Should(Succeed())
		report("injected", "each of 2 replicas stopped with SIGTERM and started again, under 20 deliveries/s")
		report("counted", "%s; connections refused or reset: %d (%d while another replica was ready); no ready replica: %d; each action's effect once at the target, %d repeated POSTs of a webhook-id",
			c, lb.failures.Load(), lb.failuresWhileReady.Load(), lb.noneReady.Load(), repeats)

		Expect(c.lost).To(BeZero())
		Expect(lb.failuresWhileReady.Load()).To(BeZero(), "a connection refused or reset while a ready replica existed")
		Expect(c.answers).To(HaveLen(1), "every attempt answered 200 at once: %v", c.answers)
		target.repeatsOnlyAfterStops(Default, ledger, stops(a, b))
	})
})

var _ = Describe("Fault 2: leader killed", func() {
	It("moves the controllers to the other replica within the lease's bounds, applies every event, and has each action's effect once", func() {
		logsOnFailure()
		a, b := electedReplicas()
		lb := newBalancer(a, b)
		DeferCleanup(lb.Close)
		target := newCountingTarget()
		ns, p := newProduct(lb.URL, a, b)
		ledger := watchEvents(ns)
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
		report("counted", "%s; connections refused or reset: %d; %s took over after %s; every event Applied, each action's effect once at the target (%d repeated POSTs of a webhook-id it had taken, answered as repeats)",
			c, lb.failures.Load(), other.name, takeover.Round(time.Millisecond), repeats)
		Expect(c.lost).To(BeZero())
		target.repeatsOnlyAfterStops(Default, ledger, stops(a, b))
		// A dead leader's lease runs out LeaseDuration after its last
		// renewal; the other replica tries every RetryPeriod (plus
		// client-go's jitter of 1.2).
		Expect(takeover).To(BeNumerically("<=", leaseDuration+2*retryPeriod+time.Second))
	})
})
