//go:build faults && linux

package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kid-operator/kid-operator/test/testenv"
)

// outage is how long Fault 7 hangs the API server: longer than k-ID's 15 s
// of retries twenty times over, as a managed control plane's upgrade can.
const outage = 5 * time.Minute

// spoolDrainRate slows the drain (the default is 50/s) so that the
// receiver can be killed while it drains.
const spoolDrainRate = 5

// apiServerPid is the kube-apiserver's pid (the launcher execs it and
// writes it beside itself, test/testenv/orphans.go).
func apiServerPid() int {
	raw, err := os.ReadFile(filepath.Join(testenv.RunDir(h.Env), "bin", "kube-apiserver.pid"))
	Expect(err).NotTo(HaveOccurred())
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	Expect(err).NotTo(HaveOccurred())
	return pid
}

// spoolWatch polls a receiver's spool depth and remembers its peak.
type spoolWatch struct {
	mu         sync.Mutex
	peak, last float64
}

func (w *spoolWatch) poll(r *replica, stop <-chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if v, ok := metric(r.metricsAddr, "kid_webhook_spool_entries"); ok {
			w.mu.Lock()
			w.peak, w.last = max(w.peak, v), v
			w.mu.Unlock()
		}
	}
}

func (w *spoolWatch) get() (peak, last float64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak, w.last
}

var _ = Describe("Fault 7: API server hung for 5 minutes", func() {
	It("answers every delivery 200 from the spool, stores each once after recovery through a receiver killed mid-drain, and folds them all", func() {
		logsOnFailure()
		spoolDir := filepath.Join(suiteDir, "receiver-spool")
		receiver := newReplica("receiver", true, "--receiver-only", "--spool-dir="+spoolDir,
			"--spool-drain-rate="+strconv.Itoa(spoolDrainRate))
		manager := newReplica("controllers", false)
		Expect(receiver.start()).To(Succeed())
		Expect(manager.start()).To(Succeed())
		DeferCleanup(func() { receiver.kill(); manager.kill() })
		Expect(receiver.waitReady(time.Minute)).To(Succeed())
		ns, p := newProduct("http://"+receiver.webhookAddr, receiver)

		watch := &spoolWatch{}
		stopWatch := make(chan struct{})
		go watch.poll(receiver, stopWatch)
		DeferCleanup(func() { close(stopWatch) })

		// A delivery every 2 s, each on k-ID's schedule, through the
		// outage and the drain.
		tr := newTraffic(p)
		stop, _ := tr.start(0.5, 0, passWithSession)
		time.Sleep(10 * time.Second)

		// The API server hangs, as a control plane being upgraded or an
		// etcd without a leader does: connections open, nothing answers.
		pid := apiServerPid()
		stoppedAt := time.Now()
		Expect(syscall.Kill(pid, syscall.SIGSTOP)).To(Succeed())
		resumed := false
		DeferCleanup(func() {
			if !resumed {
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
		})
		time.Sleep(outage)
		Expect(syscall.Kill(pid, syscall.SIGCONT)).To(Succeed())
		resumed = true
		resumedAt := time.Now()
		peakAtResume, _ := watch.get()
		report("injected", "kube-apiserver SIGSTOPped for %s (SIGCONT at %s), deliveries every 2 s throughout; the spool held %.0f entries at its peak",
			resumedAt.Sub(stoppedAt).Round(time.Second), resumedAt.Format(time.TimeOnly), peakAtResume)
		Expect(peakAtResume).To(BeNumerically(">", 100), "the outage's deliveries were spooled")

		// Kill the receiver once its drain is under way, entries left.
		var atKill float64
		Eventually(func() bool {
			peak, last := watch.get()
			atKill = last
			return last > 0 && last < peak-5
		}).WithTimeout(3*time.Minute).WithPolling(50*time.Millisecond).Should(BeTrue(), "the drain began")
		drained, _ := metric(receiver.metricsAddr, `kid_webhook_spool_replays_total{result="stored"}`)
		dupBefore, _ := metric(receiver.metricsAddr, `kid_webhook_spool_replays_total{result="duplicate"}`)
		killedAt := time.Now()
		receiver.kill()
		Expect(receiver.start()).To(Succeed())
		Expect(receiver.waitReady(time.Minute)).To(Succeed())
		readyAt := time.Now()
		restartedWith, _ := metric(receiver.metricsAddr, "kid_webhook_spool_entries")
		report("injected", "receiver SIGKILLed %s after SIGCONT, mid-drain: %.0f entries left (%.0f replayed as stored, %.0f as duplicates by then); ready again after %s with %.0f entries on disk",
			killedAt.Sub(resumedAt).Round(100*time.Millisecond), atKill, drained, dupBefore, readyAt.Sub(killedAt).Round(100*time.Millisecond), restartedWith)
		Expect(atKill).To(BeNumerically(">", 0))

		Eventually(func() float64 {
			v, _ := metric(receiver.metricsAddr, "kid_webhook_spool_entries")
			return v
		}).WithTimeout(3 * time.Minute).Should(BeZero())
		drainedAt := time.Now()
		stored2, _ := metric(receiver.metricsAddr, `kid_webhook_spool_replays_total{result="stored"}`)
		dup2, _ := metric(receiver.metricsAddr, `kid_webhook_spool_replays_total{result="duplicate"}`)
		time.Sleep(10 * time.Second)
		stop()
		c := tr.wait()
		files, _ := filepath.Glob(filepath.Join(spoolDir, "*"))

		// Every attempt's answer: 200 stored or spooled, and transport
		// errors only while the receiver was dead.
		byBody := map[string]int{}
		var unavailable, starting, errorsWhileUp, errorsWhileDown int
		tr.mu.Lock()
		for _, d := range tr.sent {
			for _, a := range d.attempts {
				switch {
				case a.Err != nil:
					ts, _ := strconv.ParseInt(a.Timestamp, 10, 64)
					sent := time.Unix(ts, 0)
					if sent.After(killedAt.Add(-5*time.Second)) && sent.Before(readyAt.Add(time.Second)) {
						errorsWhileDown++
					} else {
						errorsWhileUp++
						fmt.Fprintf(GinkgoWriter, "error while the receiver was up: %s\n", a)
					}
				case a.Status == 503 && strings.Contains(a.Body, "the receiver is starting"):
					// A restarted receiver answers 503 until its
					// caches synced, as every new replica does.
					starting++
				case a.Status == 503:
					unavailable++
					fmt.Fprintf(GinkgoWriter, "503 not of a start: %s\n", a)
				default:
					byBody[fmt.Sprintf("%d %s", a.Status, strings.TrimSpace(a.Body))]++
				}
			}
		}
		tr.mu.Unlock()

		Eventually(func(g Gomega) {
			tr.storedOnce(g, ns)
			stored := allApplied(g, ns)
			names := tr.eventNames(g, p.Name)
			have := map[string]bool{}
			for _, e := range stored {
				have[e.Name] = true
			}
			for n := range names {
				g.Expect(have).To(HaveKey(n), "an event answered 200 is stored")
			}
			g.Expect(stored).To(HaveLen(len(names)), "one KidEvent per distinct delivery")
		}).WithTimeout(3 * time.Minute).Should(Succeed())
		report("counted", "%s; answers by body %v; 503s %d while the restarted receiver's caches synced, %d otherwise; transport errors %d while the receiver was dead, %d otherwise; the restarted receiver replayed %.0f as stored and %.0f as duplicates (a segment cut short is replayed from its start); spool empty %s after SIGCONT, its files removed (%d left); every delivery stored exactly once, every event folded",
			c, byBody, starting, unavailable, errorsWhileDown, errorsWhileUp, stored2, dup2, drainedAt.Sub(resumedAt).Round(time.Second), len(files))

		Expect(c.lost).To(BeZero(), "every delivery answered 200 on some attempt")
		Expect(unavailable).To(BeZero(), "no 503 but a starting receiver's: the spool was never full")
		Expect(errorsWhileUp).To(BeZero(), "no attempt went unanswered while the receiver ran")
		Expect(byBody["200 spooled"]).To(BeNumerically(">=", int(peakAtResume)))
		Expect(stored2+dup2).To(BeNumerically(">=", atKill), "the restarted receiver replayed what its predecessor left")
		Expect(files).To(BeEmpty())
	})
})
