package main

import (
	"context"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

func TestScheduleSendsEachPlayersEventsInOrderOneAtATime(t *testing.T) {
	g := NewWithT(t)
	players := make([]*player, 200)
	total := 0
	for i := range players {
		players[i] = journeyOf(i)
		total += len(players[i].events)
	}
	s := newSchedule(players, journeySeed)
	var mu sync.Mutex
	inFlight := map[int]bool{}
	got := map[int][]*journeyEvent{}
	var twice []int
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i, e, ok := s.next()
				if !ok {
					return
				}
				mu.Lock()
				if inFlight[i] {
					twice = append(twice, i)
				}
				inFlight[i] = true
				got[i] = append(got[i], e)
				mu.Unlock()
				time.Sleep(time.Duration(i%3) * time.Microsecond)
				mu.Lock()
				inFlight[i] = false
				mu.Unlock()
				s.done(i)
			}
		})
	}
	wg.Wait()
	g.Expect(twice).To(BeEmpty(), "a player had two deliveries in flight")
	sent := 0
	for i, p := range players {
		g.Expect(got[i]).To(Equal(p.events), "player %d", i)
		sent += len(got[i])
	}
	g.Expect(sent).To(Equal(total))
}

func TestScheduleInterleavesPlayers(t *testing.T) {
	g := NewWithT(t)
	players := []*player{journeyOf(0), journeyOf(1), journeyOf(2), journeyOf(3)}
	s := newSchedule(players, journeySeed)
	// One worker: the order is the seeded one, and not player by player.
	var order []int
	for {
		i, _, ok := s.next()
		if !ok {
			break
		}
		order = append(order, i)
		s.done(i)
	}
	g.Expect(order).To(HaveLen(len(s.order)))
	g.Expect(order).NotTo(BeSorted())
}

func BeSorted() OmegaMatcher {
	return WithTransform(func(xs []int) bool {
		for k := 1; k < len(xs); k++ {
			if xs[k] < xs[k-1] {
				return false
			}
		}
		return true
	}, BeTrue())
}

func TestJourneyMixCountsEveryWriteOfTheTrace(t *testing.T) {
	g := NewWithT(t)
	// 20 players: 60 events, 4 Verification.Results, 1 Session.Delete.
	c := journeyCounts{players: 20, verified: 4, deleted: 1, events: 65}
	mix := journeyMix(c)
	// 13 writes per player (IN_PROGRESS 4, PASS 6, ChangePermissions 3),
	// 4 per verification, 3 per deletion.
	g.Expect(mix.total() * 65).To(BeNumerically("~", 13*20+4*4+3*1, 1e-9))
	verbs := mix.verbs(65)
	g.Expect(verbs).To(HaveLen(3))
	g.Expect(verbs["POST"]).To(BeNumerically("~", 65+2*20+4, 1e-9))
	g.Expect(verbs["PATCH"]).To(BeNumerically("~", 65+4*20+4+1, 1e-9))
	g.Expect(verbs["DELETE"]).To(BeNumerically("~", 20, 1e-9))
}

func TestFoldSavingCountsTheStandInOnlyWithItsPass(t *testing.T) {
	p := journeyOf(0) // IN_PROGRESS, PASS, ChangePermissions
	for _, tc := range []struct {
		name string
		run  []*journeyEvent
		want float64
	}{
		{"one event saves nothing", p.events[:1], 0},
		{"IN_PROGRESS with its PASS saves the stand-in's create, its write, merge and delete", p.events[:2], 4},
		{"the whole journey saves one write more", p.events, 5},
		{"PASS with the permission change saves one write", p.events[1:], 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(foldSaving(tc.run)).To(Equal(tc.want))
		})
	}
}

func TestAnalyseFindsQueuedPairs(t *testing.T) {
	g := NewWithT(t)
	p := journeyOf(0)
	t0 := time.Now()
	in, pass, perm := p.events[0], p.events[1], p.events[2]
	in.acked, pass.acked, perm.acked = t0, t0.Add(time.Second), t0.Add(5*time.Second)
	// The PASS was stored before the IN_PROGRESS was Applied; the
	// permission change after the PASS was.
	applied := map[string]time.Time{in.key: t0.Add(2 * time.Second), pass.key: t0.Add(3 * time.Second), perm.key: t0.Add(6 * time.Second)}
	j := &journeyRun{}
	j.analyse([]*player{p}, applied)
	g.Expect(j.pairs).To(Equal(2))
	g.Expect(j.pairsQueued).To(Equal(1))
	g.Expect(j.passQueued).To(Equal(1))
	g.Expect(j.outOfOrder).To(Equal(0))
	g.Expect(j.foldSaving).To(Equal(4.0))
	g.Expect(j.queued).To(ConsistOf(2*time.Second, 2*time.Second, time.Second))
}

// outcome is the KidUser a player's journey should leave, and the
// verification stand-in when it has one.
func outcome(p *player) []client.Object {
	now := metav1.Now()
	u := &kidv1.KidUser{
		ObjectMeta: metav1.ObjectMeta{Name: kidv1.UserName("bench", kidv1.IdentitySession, p.session), Namespace: journeyNS},
		Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "bench"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: p.session}},
		Status: kidv1.KidUserStatus{
			SessionID: p.session, KUID: p.kuid, ChallengeIDs: []string{p.challenge},
			Consent:        kidv1.ConsentStatus{State: kidv1.ConsentGranted, ChallengeID: p.challenge},
			Session:        kidv1.SessionStatus{State: kidv1.SessionActive, PermissionsChangedAt: &now},
			ObservedEvents: 3,
		},
	}
	if p.deleted {
		u.Status.Session.State, u.Status.ErasedAt, u.Status.ObservedEvents = kidv1.SessionDeleted, &now, 4
	}
	out := []client.Object{u}
	if p.verified {
		out = append(out, &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{Name: kidv1.UserName("bench", kidv1.IdentityVerification, p.verification), Namespace: journeyNS},
			Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "bench"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentityVerification, ID: p.verification}},
			Status: kidv1.KidUserStatus{Verification: kidv1.VerificationStatus{
				State: kidv1.VerificationVerified, Records: []kidv1.VerificationRecord{{ID: p.verification, State: kidv1.VerificationVerified}},
			}},
		})
	}
	return out
}

func TestCheckJourneys(t *testing.T) {
	players := make([]*player, 20) // 4, 9, 14 and 19 verified; 19 deleted
	var good []client.Object
	for i := range players {
		players[i] = journeyOf(i)
		good = append(good, outcome(players[i])...)
	}
	standIn := &kidv1.KidUser{
		ObjectMeta: metav1.ObjectMeta{Name: kidv1.UserName("bench", kidv1.IdentityChallenge, players[3].challenge), Namespace: journeyNS},
		Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "bench"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentityChallenge, ID: players[3].challenge}},
	}
	for _, tc := range []struct {
		name   string
		change func(objs []client.Object) []client.Object
		want   string // in the error; empty: no error
	}{
		{"every player as its journey leaves it passes", func(o []client.Object) []client.Object { return o }, ""},
		{"a stand-in left fails", func(o []client.Object) []client.Object { return append(o, standIn) }, "challenge stand-in left"},
		{"a missing session user fails", func(o []client.Object) []client.Object { return o[1:] }, "no session user"},
		{"consent not granted fails", func(o []client.Object) []client.Object {
			o[0].(*kidv1.KidUser).Status.Consent.State = kidv1.ConsentPending
			return o
		}, "consent not Granted"},
		{"an event counted twice fails", func(o []client.Object) []client.Object {
			o[0].(*kidv1.KidUser).Status.ObservedEvents = 4
			return o
		}, "events not counted once each"},
		{"a deletion not folded fails", func(o []client.Object) []client.Object {
			for _, obj := range o {
				if u := obj.(*kidv1.KidUser); u.Status.ErasedAt != nil {
					u.Status.ErasedAt = nil
				}
			}
			return o
		}, "Session.Delete not folded"},
		{"a verification missing fails", func(o []client.Object) []client.Object {
			var out []client.Object
			for _, obj := range o {
				if obj.(*kidv1.KidUser).Spec.Identity.Kind != kidv1.IdentityVerification {
					out = append(out, obj)
				}
			}
			return out
		}, "verification not recorded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			var objs []client.Object
			for _, o := range good {
				objs = append(objs, o.DeepCopyObject().(client.Object))
			}
			c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(tc.change(objs)...).Build()
			err := checkJourneys(context.Background(), &plane{client: c}, players)
			if tc.want == "" {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(err).To(MatchError(ContainSubstring(tc.want)))
		})
	}
}
