//go:build faults && linux

package faults

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// The soak's settings: $KID_SOAK_DURATION (default 30m) of traffic at
// $KID_SOAK_RATE deliveries a second (default 20) from a pool of
// soakPlayers players, with retention keeping soakMaxEvents events.
const (
	soakPlayers   = 1000
	soakMaxEvents = 2000
	sampleEvery   = 10 * time.Second
	soakTolerance = 45 * time.Second
)

// sample is one reading of the processes and the store.
type sample struct {
	at                     time.Duration
	rssMiB                 float64 // controllers' process
	receiverRSSMiB         float64
	goroutines             float64 // controllers' process
	receiverGoroutines     float64
	storedEvents, kidUsers int
}

var _ = Describe("Fault 6: soak", Label("soak"), func() {
	It("keeps stored events bounded, memory and goroutines flat, and loses nothing under steady traffic", func() {
		logsOnFailure()
		duration := envDuration("KID_SOAK_DURATION", 30*time.Minute)
		rate := envFloat("KID_SOAK_RATE", 20)

		receiver := newReplica("receiver", true, "--receiver-only")
		manager := newReplica("controllers", false)
		for _, r := range []*replica{receiver, manager} {
			Expect(r.start()).To(Succeed())
			DeferCleanup(r.kill)
			Expect(r.waitReady(time.Minute)).To(Succeed())
		}
		target := newCountingTarget()
		ns, err := h.NewNamespace(ctx)
		Expect(err).NotTo(HaveOccurred())
		h.BaseURL = "http://" + receiver.webhookAddr
		p, err := h.NewProduct(ctx, ns, "game", func(p *kidv1.KidProduct) {
			p.Spec.Retention.MaxEvents = ptr.To[int32](soakMaxEvents)
			// Retention keeps every event younger than the tolerance and
			// k-ID's retry window (a retry must find it): at 20/s, 60 s of
			// events, under maxEvents, so maxEvents is the bound that acts.
			p.Spec.Webhook.TimestampTolerance = &metav1.Duration{Duration: soakTolerance}
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(h.WaitReady(ctx, p)).To(Succeed())
		notifyAction(ns, target.URL)

		// Each player passes a challenge once, then k-ID reports permission
		// changes (70%) and new challenges passed (30%); one delivery in 20
		// is sent twice, as k-ID does when an answer is lost.
		rng := rand.New(rand.NewPCG(1, 2))
		build := func(eventType string, f kidsim.Fields) []byte {
			f.ProductID = 11472
			body, err := kidsim.Build(eventType, f)
			Expect(err).NotTo(HaveOccurred())
			return body
		}
		var last []byte
		next := func(i int) []byte {
			if last != nil && rng.IntN(20) == 0 {
				return last
			}
			pl := i % soakPlayers
			session := fmt.Sprintf("s-%s-%d", ns, pl)
			switch {
			case i < soakPlayers || rng.IntN(10) < 3:
				last = build(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: fmt.Sprintf("c-%d", i), Status: kid.StatusPass, SessionID: session})
			default:
				last = build(kid.SessionChangePermissions, kidsim.Fields{SessionID: fmt.Sprintf("s-%s-%d", ns, rng.IntN(soakPlayers))})
			}
			return last
		}

		tr := newTraffic(p)
		stop, done := tr.start(rate, duration, next)
		defer stop()

		began := time.Now()
		var samples []sample
		maxStored := 0
		for ticker := time.NewTicker(sampleEvery); ; {
			s := sample{at: time.Since(began)}
			s.rssMiB, s.receiverRSSMiB = rssMiB(manager), rssMiB(receiver)
			s.goroutines, _ = metric(manager.metricsAddr, "go_goroutines")
			s.receiverGoroutines, _ = metric(receiver.metricsAddr, "go_goroutines")
			var events kidv1.KidEventList
			Expect(h.Client.List(ctx, &events, client.InNamespace(ns))).To(Succeed())
			var users metav1.PartialObjectMetadataList
			users.SetGroupVersionKind(kidv1.GroupVersion.WithKind("KidUserList"))
			Expect(h.Client.List(ctx, &users, client.InNamespace(ns))).To(Succeed())
			s.storedEvents, s.kidUsers = len(events.Items), len(users.Items)
			maxStored = max(maxStored, s.storedEvents)
			samples = append(samples, s)
			fmt.Fprintf(GinkgoWriter, "soak sample: t=%s rss_mib=%.1f receiver_rss_mib=%.1f goroutines=%.0f receiver_goroutines=%.0f events=%d users=%d\n",
				s.at.Round(time.Second), s.rssMiB, s.receiverRSSMiB, s.goroutines, s.receiverGoroutines, s.storedEvents, s.kidUsers)
			select {
			case <-done:
			case <-ticker.C:
				continue
			}
			ticker.Stop()
			break
		}
		c := tr.wait()

		// Nothing lost: every event k-ID saw stored is folded into a player,
		// counted once however often it was sent.
		var distinct map[string]bool
		Eventually(func(g Gomega) {
			distinct = tr.eventNames(g, p.Name)
			var users kidv1.KidUserList
			g.Expect(h.Client.List(ctx, &users, client.InNamespace(ns))).To(Succeed())
			var folded int64
			for _, u := range users.Items {
				folded += u.Status.ObservedEvents
			}
			g.Expect(folded).To(BeEquivalentTo(len(distinct)))
		}).Should(Succeed())

		// The steady state: after the first quarter (the players' first
		// challenges and the store filling up to its retention bound).
		steady := samples[len(samples)/4:]
		rssSlope := slopePerHour(steady, func(s sample) float64 { return s.rssMiB })
		goSlope := slopePerHour(steady, func(s sample) float64 { return s.goroutines })
		recvSlope := slopePerHour(steady, func(s sample) float64 { return s.receiverRSSMiB })
		first, final := steady[0], steady[len(steady)-1]
		summary := fmt.Sprintf("soak: duration=%s rate=%.0f/s deliveries=%d distinct=%d lost=%d events_max=%d users=%d rss_mib=%.1f..%.1f rss_slope_mib_per_h=%.1f receiver_rss_mib=%.1f..%.1f receiver_rss_slope_mib_per_h=%.1f goroutines=%.0f..%.0f goroutine_slope_per_h=%.1f",
			duration, rate, c.deliveries, len(distinct), c.lost, maxStored, final.kidUsers,
			first.rssMiB, final.rssMiB, rssSlope, first.receiverRSSMiB, final.receiverRSSMiB, recvSlope, first.goroutines, final.goroutines, goSlope)
		report("injected", "%s of steady traffic at %.0f deliveries/s from %d players, one in 20 sent twice; retention keeps %d events", duration, rate, soakPlayers, soakMaxEvents)
		report("counted", "%s; %s", c, summary)
		fmt.Println(summary)

		Expect(c.lost).To(BeZero())
		// Retention deletes the oldest finished events past maxEvents on
		// each pass, but none younger than its horizon; what arrives
		// between passes may sit above it.
		horizon := (soakTolerance + 15*time.Second).Seconds()
		Expect(maxStored).To(BeNumerically("<=", max(soakMaxEvents, int(rate*horizon))+int(rate*30)), "stored events stay bounded")
		Expect(final.kidUsers).To(BeNumerically("<=", soakPlayers), "one KidUser a player")
		// Flat: the last quarter's memory within a fifth of the second's,
		// and goroutines within a few of where the steady state began.
		Expect(mean(samples[3*len(samples)/4:], rssOf)).To(BeNumerically("<=", 1.2*mean(samples[len(samples)/4:len(samples)/2], rssOf)), summary)
		Expect(final.goroutines).To(BeNumerically("<=", first.goroutines+20), summary)
	})
})

func rssOf(s sample) float64 { return s.rssMiB }

func mean(ss []sample, f func(sample) float64) float64 {
	var sum float64
	for _, s := range ss {
		sum += f(s)
	}
	return sum / float64(len(ss))
}

// slopePerHour fits a line through the samples (least squares) and returns
// its slope per hour.
func slopePerHour(ss []sample, f func(sample) float64) float64 {
	n := float64(len(ss))
	var sx, sy, sxx, sxy float64
	for _, s := range ss {
		x, y := s.at.Hours(), f(s)
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	if d := n*sxx - sx*sx; d != 0 {
		return (n*sxy - sx*sy) / d
	}
	return 0
}

// rssMiB is a running replica's resident memory, from /proc.
func rssMiB(r *replica) float64 {
	if !r.running() {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		Expect(err).NotTo(HaveOccurred(), name)
		return d
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if v := os.Getenv(name); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		Expect(err).NotTo(HaveOccurred(), name)
		return f
	}
	return def
}
