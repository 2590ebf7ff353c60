//go:build faults && linux

package faults

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/fold"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// player is one player's k-ID journey: the deliveries k-ID sends about
// them, and the KidUsers they should end in.
type player struct {
	challenge, session, kuid, verification string
	// bodies are the deliveries, in the order k-ID sends them.
	bodies [][]byte
}

// journeys returns n players' journeys, interleaved five players at a time
// as k-ID would deliver them: a challenge IN_PROGRESS (a stand-in user,
// known by the challenge), its PASS with the session (the player's user,
// into which the stand-in is merged), a permission change, and for every
// fifth player a verification of its own (a stand-in no event links).
func journeys(prefix string, n int) ([]*player, [][]byte) {
	build := func(eventType string, f kidsim.Fields) []byte {
		f.ProductID = 11472
		body, err := kidsim.Build(eventType, f)
		Expect(err).NotTo(HaveOccurred())
		return body
	}
	var players []*player
	var order [][]byte
	for w := 0; w < n; w += 5 {
		window := []*player{}
		for i := w; i < min(w+5, n); i++ {
			id := fmt.Sprintf("%s-%d", prefix, i)
			p := &player{challenge: "c-" + id, session: "s-" + id, kuid: "k-" + id}
			p.bodies = [][]byte{
				build(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: p.challenge, Status: kid.StatusInProgress}),
				build(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: p.challenge, Status: kid.StatusPass, SessionID: p.session, KUID: p.kuid}),
				build(kid.SessionChangePermissions, kidsim.Fields{SessionID: p.session}),
			}
			if i%5 == 0 {
				p.verification = "v-" + id
				p.bodies = append(p.bodies, build(kid.VerificationResult, kidsim.Fields{ID: p.verification, Status: kid.StatusPass, Method: "id-document", AgeLow: 18, AgeHigh: 99}))
			}
			window = append(window, p)
		}
		for step := 0; step < 4; step++ {
			for _, p := range window {
				if step < len(p.bodies) {
					order = append(order, p.bodies[step])
				}
			}
		}
		players = append(players, window...)
	}
	return players, order
}

// foldOf is what the fold of a set of stored events gives, from an empty
// status, as the controllers would compute it had nothing crashed.
func foldOf(events []*kidv1.KidEvent) *kidv1.KidUserStatus {
	st := &kidv1.KidUserStatus{}
	for _, e := range events {
		fe := &fold.Event{Name: e.Name, Type: e.Spec.EventType, Subject: e.Spec.Subject, SignedAt: e.Spec.ReceivedAt.Time}
		if e.Spec.SignedAt != nil {
			fe.SignedAt = e.Spec.SignedAt.Time
		}
		Expect(json.Unmarshal(e.Spec.Data.Raw, &fe.Payload)).To(Succeed())
		st = fold.Apply(st, fe, kid.Privacy{}, "expected")
	}
	return st
}

// folded is the part of a status that the fold decides: without the
// conditions (derived), the per-object counts (their sum stays, as
// observedEvents) and the events in flight.
func folded(st kidv1.KidUserStatus) kidv1.KidUserStatus {
	out := *st.DeepCopy()
	out.Conditions, out.EventCounts, out.InFlightEvents = nil, nil, nil
	return out
}

// crashSeed is the seed of the kill moments: $KID_FAULT_SEED, or the time.
func crashSeed() uint64 {
	if s := os.Getenv("KID_FAULT_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		Expect(err).NotTo(HaveOccurred(), "KID_FAULT_SEED")
		return n
	}
	return uint64(time.Now().UnixNano())
}

// Fault 4's settings: kills SIGKILLs, each of the leading replica, a random
// moment within maxLife of its taking the lease; the election's timings are
// short, so that a takeover is about two seconds, and whole seconds for the
// lease (the Lease object stores whole seconds).
const (
	kills      = 30
	maxLife    = 1200 * time.Millisecond
	crashLease = 2 * time.Second
	crashRenew = 1500 * time.Millisecond
	crashRetry = 250 * time.Millisecond
	crashRate  = 6 // deliveries a second: the traffic lasts about as long as the kills
)

var _ = Describe("Fault 4: crash between writes", func() {
	It("folds every event exactly once and has each action's effect once through 30 SIGKILLs of the leader, at random moments after it took the lease", func() {
		logsOnFailure()
		seed := crashSeed()
		rng := rand.New(rand.NewPCG(seed, seed))
		report("seed", "%d (run again with KID_FAULT_SEED=%d)", seed, seed)

		// The receiving tier stays up; the controllers run in two elected
		// replicas, and the leader is killed.
		receiver := newReplica("receiver", true, "--receiver-only")
		args := electionArgs(crashLease, crashRenew, crashRetry)
		controllers := []*replica{newReplica("controllers-a", false, args...), newReplica("controllers-b", false, args...)}
		for _, r := range append([]*replica{receiver}, controllers...) {
			Expect(r.start()).To(Succeed())
			DeferCleanup(r.kill)
		}
		Expect(receiver.waitReady(time.Minute)).To(Succeed())
		target := newCountingTarget()
		ns, p := newProduct("http://"+receiver.webhookAddr, receiver)
		ledger := watchEvents(ns)
		notifyAction(ns, target.URL)

		players, order := journeys(ns, 150)
		tr := newTraffic(p)
		stop, done := tr.start(crashRate, 0, func(i int) []byte {
			if i >= len(order) {
				return nil
			}
			return order[i]
		})

		// Kill the leader at a random moment after it took the lease:
		// from then on it folds the backlog the takeover left, runs the
		// actions, and folds what comes in. The replica killed starts again
		// at once, so the next takeover races a warm standby against a
		// process still syncing its caches. A fold's replays, counted by
		// each leader until it is killed, show kills landed between a
		// fold's two writes.
		var lived []time.Duration
		var replays float64
		for range kills {
			leader := waitLeader(controllers)
			life := time.Duration(rng.Int64N(int64(maxLife)))
			time.Sleep(life)
			replays += foldReplays(leader)
			leader.kill()
			lived = append(lived, life)
		}
		leader := waitLeader(controllers)
		<-done
		stop()
		c := tr.wait()
		stopped := stops(controllers...)
		report("injected", "%d SIGKILLs of the leading controllers' replica, each a random %s to %s after it took the lease (%d exits in all, %d on their own), under %d deliveries at %d/s",
			kills, slices.Min(lived).Round(time.Millisecond), slices.Max(lived).Round(time.Millisecond), len(stopped), len(stopped)-kills, len(order), crashRate)

		Eventually(func(g Gomega) {
			byHash := tr.storedOnce(g, ns)
			allApplied(g, ns)
			var users kidv1.KidUserList
			g.Expect(h.Client.List(ctx, &users, client.InNamespace(ns))).To(Succeed())
			want := 0
			for _, pl := range players {
				want++
				if pl.verification != "" {
					want++
				}
			}
			g.Expect(users.Items).To(HaveLen(want), "every stand-in merged into its player's user")
			for _, pl := range players {
				var events []*kidv1.KidEvent
				for _, b := range pl.bodies {
					events = append(events, byHash[hashOf(b)])
				}
				checkUser(g, p.Name, ns, kidv1.IdentitySession, pl.session, events[:3])
				if pl.verification != "" {
					checkUser(g, p.Name, ns, kidv1.IdentityVerification, pl.verification, events[3:])
				}
			}
		}).Should(Succeed())
		var repeats int
		Eventually(func(g Gomega) { repeats = target.effects(g, challengeEvents(g, ns)) }).Should(Succeed())
		replays += foldReplays(leader)
		report("counted", "%s; %.0f folds replayed after a kill between a fold's writes; every KidUser equals the fold of its events with observedEvents exact; each action's effect once at the target (%d repeated POSTs of a webhook-id it had taken, answered as repeats)", c, replays, repeats)
		Expect(c.lost).To(BeZero())
		target.repeatsOnlyAfterStops(Default, ledger, stops(controllers...))
		Expect(replays).To(BeNumerically(">", 0), "no kill landed between a fold's writes (kid_fold_replays_total of every leader)")
	})
})

// waitLeader starts the replicas that are not running and returns the one
// that leads, once one does.
func waitLeader(replicas []*replica) *replica {
	for _, r := range replicas {
		if !r.running() {
			Expect(r.start()).To(Succeed())
		}
	}
	var leader *replica
	Eventually(func() bool {
		for _, r := range replicas {
			if r.running() && r.leader() {
				leader = r
				return true
			}
		}
		return false
	}).WithPolling(20*time.Millisecond).Should(BeTrue(), "a replica leads")
	return leader
}

// foldReplays is the replica's kid_fold_replays_total: each leader's own,
// from its start.
func foldReplays(r *replica) float64 {
	v, _ := metric(r.metricsAddr, "kid_fold_replays_total")
	return v
}

// checkUser checks that the user known by (kind, id) is the fold of events,
// and counts exactly them.
func checkUser(g Gomega, product, ns string, kind kidv1.IdentityKind, id string, events []*kidv1.KidEvent) {
	u := &kidv1.KidUser{}
	g.Expect(h.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: kidv1.UserName(product, kind, id)}, u)).To(Succeed())
	want := foldOf(events)
	g.Expect(u.Status.ObservedEvents).To(BeEquivalentTo(len(events)), "observedEvents of %s", u.Name)
	got, exp := folded(u.Status), folded(*want)
	g.Expect(apiequality.Semantic.DeepEqual(got, exp)).To(BeTrue(), "user %s:\n%s\nwant the fold of its events:\n%s", u.Name, dump(got), dump(exp))
}

func dump(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}
