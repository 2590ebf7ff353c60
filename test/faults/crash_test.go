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

const kills = 50

var _ = Describe("Fault 4: crash between writes", func() {
	It("folds every event exactly once and has each action's effect once through 50 SIGKILLs at random moments", func() {
		logsOnFailure()
		seed := crashSeed()
		rng := rand.New(rand.NewPCG(seed, seed))
		report("seed", "%d (run again with KID_FAULT_SEED=%d)", seed, seed)

		// The receiving tier stays up; the controllers' process is killed.
		receiver := newReplica("receiver", true, "--receiver-only")
		manager := newReplica("controllers", false)
		Expect(receiver.start()).To(Succeed())
		Expect(manager.start()).To(Succeed())
		DeferCleanup(func() { receiver.kill(); manager.kill() })
		Expect(receiver.waitReady(time.Minute)).To(Succeed())
		target := newCountingTarget()
		ns, p := newProduct("http://"+receiver.webhookAddr, receiver)
		notifyAction(ns, target.URL)

		players, order := journeys(ns, 150)
		tr := newTraffic(p)
		stop, done := tr.start(10, 0, func(i int) []byte {
			if i >= len(order) {
				return nil
			}
			return order[i]
		})

		// Kill the controllers at random moments from their start: while
		// they sync, fold the backlog, and run actions.
		var lived []time.Duration
		for range kills {
			if !manager.running() {
				Expect(manager.start()).To(Succeed())
			}
			life := time.Duration(200+rng.IntN(1800)) * time.Millisecond
			time.Sleep(life)
			manager.kill()
			lived = append(lived, life)
		}
		Expect(manager.start()).To(Succeed())
		<-done
		stop()
		c := tr.wait()
		report("injected", "%d SIGKILLs of the controllers' process, each after a random %s to %s of life, under %d deliveries at 10/s", kills, slices.Min(lived), slices.Max(lived), len(order))

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
		report("counted", "%s; every KidUser equals the fold of its events with observedEvents exact; each action's effect once at the target (%d repeated deliveries of a webhook-id it had taken, answered as repeats)", c, repeats)
		Expect(c.lost).To(BeZero())
	})
})

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
