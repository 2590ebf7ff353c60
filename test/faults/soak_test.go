//go:build faults && linux

package faults

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/fold"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// The soak's settings: $KID_SOAK_DURATION (default 30m) of traffic at
// $KID_SOAK_RATE deliveries a second (default 20), with retention keeping
// soakMaxEvents events. The players ($KID_SOAK_PLAYERS) are as many as
// can fill their challenge lists in soakFillShare of the deliveries, at
// most soakMaxPlayers: the lists are the one per-player state that grows
// (to fold.MaxChallengeIDs), and memory is bounded only once they are full.
const (
	soakMaxPlayers = 1000
	soakFillShare  = 0.4
	soakMaxEvents  = 2000
	sampleEvery    = 10 * time.Second
	soakTolerance  = 45 * time.Second
	// The memory bound once the lists are full: a line fitted through
	// the samples rises at most soakMaxSlope, or over a window too short
	// for that to exceed it, soakNoise (the garbage collector's swings).
	soakMaxSlope = 10.0 // MiB/h
	soakNoise    = 5.0  // MiB
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
	It("keeps stored events bounded, memory and goroutines flat once the players' lists are full, and folds every event once under steady traffic", func() {
		logsOnFailure()
		duration := envDuration("KID_SOAK_DURATION", 30*time.Minute)
		rate := envFloat("KID_SOAK_RATE", 20)
		players := int(envFloat("KID_SOAK_PLAYERS", float64(min(soakMaxPlayers, max(1, int(duration.Seconds()*rate*soakFillShare/fold.MaxChallengeIDs))))))
		fill := players * fold.MaxChallengeIDs

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
		ledger := watchEvents(ns)
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

		// First each player passes fold.MaxChallengeIDs challenges, in turn,
		// which fills its list; then k-ID reports permission changes (70%)
		// and new challenges passed (30%). One delivery in 20 is sent twice,
		// as k-ID does when an answer is lost.
		rng := rand.New(rand.NewPCG(1, 2))
		build := func(eventType string, f kidsim.Fields) []byte {
			f.ProductID = 11472
			body, err := kidsim.Build(eventType, f)
			Expect(err).NotTo(HaveOccurred())
			return body
		}
		session := func(pl int) string { return fmt.Sprintf("s-%s-%d", ns, pl) }
		var (
			last    []byte
			fresh   int
			mu      sync.Mutex
			player  = map[string]string{} // body hash: the player's session
			perHash = func(body []byte, s string) []byte {
				mu.Lock()
				player[hashOf(body)] = s
				mu.Unlock()
				return body
			}
		)
		next := func(int) []byte {
			if last != nil && rng.IntN(20) == 0 {
				return last
			}
			n := fresh
			fresh++
			if n < fill || rng.IntN(10) < 3 {
				s := session(n % players)
				last = perHash(build(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: fmt.Sprintf("c-%d", n), Status: kid.StatusPass, SessionID: s}), s)
			} else {
				s := session(rng.IntN(players))
				last = perHash(build(kid.SessionChangePermissions, kidsim.Fields{SessionID: s}), s)
			}
			return last
		}

		tr := newTraffic(p)
		stop, done := tr.start(rate, duration, next)
		defer stop()

		// Every sample reads the processes and the store; until the
		// players' lists are full, it reads the users' lists too.
		began := time.Now()
		var samples []sample
		filled := -1 // the first sample with every list full
		maxStored := 0
		for ticker := time.NewTicker(sampleEvery); ; {
			s := sample{at: time.Since(began)}
			s.rssMiB, s.receiverRSSMiB = rssMiB(manager), rssMiB(receiver)
			s.goroutines, _ = metric(manager.metricsAddr, "go_goroutines")
			s.receiverGoroutines, _ = metric(receiver.metricsAddr, "go_goroutines")
			var events metav1.PartialObjectMetadataList
			events.SetGroupVersionKind(kidv1.GroupVersion.WithKind("KidEventList"))
			Expect(h.Client.List(ctx, &events, client.InNamespace(ns))).To(Succeed())
			s.storedEvents = len(events.Items)
			if filled < 0 {
				var users kidv1.KidUserList
				Expect(h.Client.List(ctx, &users, client.InNamespace(ns))).To(Succeed())
				s.kidUsers = len(users.Items)
				full := 0
				for _, u := range users.Items {
					if len(u.Status.ChallengeIDs) == fold.MaxChallengeIDs {
						full++
					}
				}
				if full == players {
					filled = len(samples)
				}
			} else {
				var users metav1.PartialObjectMetadataList
				users.SetGroupVersionKind(kidv1.GroupVersion.WithKind("KidUserList"))
				Expect(h.Client.List(ctx, &users, client.InNamespace(ns))).To(Succeed())
				s.kidUsers = len(users.Items)
			}
			maxStored = max(maxStored, s.storedEvents)
			samples = append(samples, s)
			fmt.Fprintf(GinkgoWriter, "soak sample: t=%s rss_mib=%.1f receiver_rss_mib=%.1f goroutines=%.0f receiver_goroutines=%.0f events=%d users=%d lists_full=%t\n",
				s.at.Round(time.Second), s.rssMiB, s.receiverRSSMiB, s.goroutines, s.receiverGoroutines, s.storedEvents, s.kidUsers, filled >= 0)
			select {
			case <-done:
			case <-ticker.C:
				continue
			}
			ticker.Stop()
			break
		}
		c := tr.wait()
		Expect(filled).To(BeNumerically(">=", 0), "the %d players' challenge lists never filled (%d challenges each); a longer KID_SOAK_DURATION or fewer KID_SOAK_PLAYERS", players, fold.MaxChallengeIDs)
		Expect(len(samples)-filled).To(BeNumerically(">=", 6), "under a minute of traffic after the lists filled; a longer KID_SOAK_DURATION or fewer KID_SOAK_PLAYERS")

		// Nothing lost, event by event: every event k-ID saw answered 200
		// was seen Applied (or its runs Succeeded) with its player's user,
		// before retention deleted it; and each player's user counts
		// exactly its distinct events.
		var distinct map[string]string
		Eventually(func(g Gomega) {
			distinct = tr.eventNames(g, p.Name)
			want := map[string]int64{}
			unfolded := 0
			for name, hash := range distinct {
				user := kidv1.UserName(p.Name, kidv1.IdentitySession, player[hash])
				want[user]++
				r, ok := ledger.record(name)
				if !ok || (r.phase != kidv1.EventApplied && r.phase != kidv1.EventSucceeded) || r.userRef != user {
					unfolded++
					if unfolded <= 5 {
						fmt.Fprintf(GinkgoWriter, "event %s: seen %t, phase %q, user %q, want %q\n", name, ok, r.phase, r.userRef, user)
					}
				}
			}
			g.Expect(unfolded).To(BeZero(), "%d of %d distinct events not seen folded into their player's user", unfolded, len(distinct))
			var users kidv1.KidUserList
			g.Expect(h.Client.List(ctx, &users, client.InNamespace(ns))).To(Succeed())
			got := map[string]int64{}
			for _, u := range users.Items {
				got[u.Name] = u.Status.ObservedEvents
			}
			g.Expect(got).To(Equal(want), "each player's observedEvents is its number of distinct events")
		}).Should(Succeed())
		repeats := target.repeatsOnlyAfterStops(Default, ledger, stops(manager))

		// The steady state: from the first sample with every list full.
		steady := samples[filled:]
		window := steady[len(steady)-1].at - steady[0].at
		rssSlope := slopePerHour(steady, func(s sample) float64 { return s.rssMiB })
		goSlope := slopePerHour(steady, func(s sample) float64 { return s.goroutines })
		recvSlope := slopePerHour(steady, func(s sample) float64 { return s.receiverRSSMiB })
		first, final := steady[0], steady[len(steady)-1]
		summary := fmt.Sprintf("soak: duration=%s rate=%.0f/s players=%d lists_full_at=%s deliveries=%d distinct=%d lost=%d repeated_posts=%d events_max=%d users=%d rss_mib=%.1f..%.1f rss_slope_mib_per_h=%.1f receiver_rss_mib=%.1f..%.1f receiver_rss_slope_mib_per_h=%.1f goroutines=%.0f..%.0f goroutine_slope_per_h=%.1f",
			duration, rate, players, first.at.Round(time.Second), c.deliveries, len(distinct), c.lost, repeats, maxStored, final.kidUsers,
			first.rssMiB, final.rssMiB, rssSlope, first.receiverRSSMiB, final.receiverRSSMiB, recvSlope, first.goroutines, final.goroutines, goSlope)
		report("injected", "%s of steady traffic at %.0f deliveries/s from %d players (each first passing %d challenges), one in 20 sent twice; retention keeps %d events", duration, rate, players, fold.MaxChallengeIDs, soakMaxEvents)
		report("counted", "%s; %s", c, summary)
		fmt.Println(summary)

		Expect(c.lost).To(BeZero())
		// Retention deletes the oldest finished events past maxEvents on
		// each pass, but none younger than its horizon; what arrives
		// between passes may sit above it.
		horizon := (soakTolerance + 15*time.Second).Seconds()
		Expect(maxStored).To(BeNumerically("<=", max(soakMaxEvents, int(rate*horizon))+int(rate*30)), "stored events stay bounded")
		Expect(final.kidUsers).To(Equal(players), "one KidUser a player")
		// Flat once the lists are full: each process's memory rises at
		// most soakMaxSlope (or soakNoise over a short window), and
		// goroutines stay within a few of where the steady state began.
		maxRise := max(soakMaxSlope*window.Hours(), soakNoise)
		Expect(rssSlope*window.Hours()).To(BeNumerically("<=", maxRise), "the controllers' memory over the %s after the lists filled; %s", window.Round(time.Second), summary)
		Expect(recvSlope*window.Hours()).To(BeNumerically("<=", maxRise), "the receiver's memory over the %s after the lists filled; %s", window.Round(time.Second), summary)
		Expect(final.goroutines).To(BeNumerically("<=", first.goroutines+20), summary)
	})
})

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
