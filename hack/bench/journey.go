package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

// journeyNS holds the journeys' product, players and events, apart from the
// end-to-end run's: the outcomes are checked on exactly the journeys'
// players, and the objects are deleted after the phase, so the scale points
// that follow measure what they always measured.
const journeyNS = "bench-journey"

// maxJourneys bounds -journeys: 20,000 players are 65,000 events, a
// quarter of an hour at this machine's 60 to 90 a second, and well inside
// the 30 minutes after which the API server may close the phase's watches.
const maxJourneys = 20_000

// journeySeed seeds the order of the trace's deliveries, so that every run
// sends the same schedule.
const journeySeed = 15

// Every verifyEvery-th player also sends a Verification.Result, and every
// deleteEvery-th ends with a Session.Delete.
const (
	verifyEvery = 5
	deleteEvery = 20
)

// journeyEvent is one delivery of a player's journey.
type journeyEvent struct {
	kind string // the eventType, and the challenge's status
	body []byte
	// key identifies the stored event on the watch (the event's type and
	// the ids it names).
	key string
	// sessionBound: folded into the player's session user (or the
	// challenge's stand-in); a Verification.Result lives on a stand-in of
	// its own.
	sessionBound bool
	acked        time.Time // when the delivery was answered 200
}

// player is one journey: its ids and its events in the order k-ID sends
// them.
type player struct {
	challenge, session, kuid, verification string
	verified, deleted                      bool
	events                                 []*journeyEvent
	sent                                   int // events handed out so far
}

// inProgress is the kind of a journey's first event.
const inProgress = "Challenge.StateChange IN_PROGRESS"

func journeyOf(i int) *player {
	id := strconv.Itoa(i)
	p := &player{
		challenge: "j-c-" + id, session: "j-s-" + id, kuid: "j-k-" + id, verification: "j-v-" + id,
		verified: i%verifyEvery == verifyEvery-1, deleted: i%deleteEvery == deleteEvery-1,
	}
	add := func(kind, eventType string, sessionBound bool, f kidsim.Fields) {
		f.ProductID = 11472
		body, err := kidsim.Build(eventType, f)
		if err != nil {
			panic(err)
		}
		env, err := kid.ParseEnvelope(body)
		if err != nil {
			panic(err)
		}
		p.events = append(p.events, &journeyEvent{kind: kind, body: body, key: eventKey(eventType, subjectOf(env.Subject())), sessionBound: sessionBound})
	}
	// Before a session exists, k-ID names the challenge only.
	add(inProgress, kid.ChallengeStateChange, true, kidsim.Fields{ChallengeID: p.challenge, Status: kid.StatusInProgress})
	add("Challenge.StateChange PASS", kid.ChallengeStateChange, true, kidsim.Fields{ChallengeID: p.challenge, Status: kid.StatusPass, SessionID: p.session, KUID: p.kuid})
	if p.verified {
		// No webhook names both a verification and a session: it lives on
		// a stand-in known by its id (design.md §2).
		add("Verification.Result PASS", kid.VerificationResult, false, kidsim.Fields{
			ID: p.verification, Status: kid.StatusPass, Method: "age-estimation-scan", AgeCategory: "digital-youth", AgeLow: 13, AgeHigh: 17,
		})
	}
	add("Session.ChangePermissions", kid.SessionChangePermissions, true, kidsim.Fields{SessionID: p.session})
	if p.deleted {
		add("Session.Delete", kid.SessionDelete, true, kidsim.Fields{SessionID: p.session})
	}
	return p
}

func subjectOf(s kid.Subject) kidv1.EventSubject {
	return kidv1.EventSubject{SessionID: s.SessionID, ChallengeID: s.ChallengeID, VerificationIDs: s.VerificationIDs, KUID: s.KUID}
}

// eventKey tells the trace's events apart by what the receiver stores of
// them: no two of its events have the same type and ids.
func eventKey(eventType string, s kidv1.EventSubject) string {
	v := ""
	if len(s.VerificationIDs) > 0 {
		v = s.VerificationIDs[0]
	}
	return eventType + "\x00" + s.ChallengeID + "\x00" + s.SessionID + "\x00" + v
}

// journeySchedule hands out the trace's deliveries. The order is a seeded
// random interleaving of every player's events, each player's in its own
// order: players start and progress at random through the whole run, as
// k-ID's deliveries of many players do. A player's next event is handed out
// only once its previous one was answered (k-ID delivers one player's events
// in sequence); meanwhile the next deliveries of the order go first.
type journeySchedule struct {
	mu      sync.Mutex
	wake    *sync.Cond
	players []*player
	order   []int // a player's index per delivery
	taken   []bool
	busy    []bool // a delivery of the player is in flight
	head    int    // every delivery before it is taken
}

func newSchedule(players []*player, seed uint64) *journeySchedule {
	s := &journeySchedule{players: players, busy: make([]bool, len(players))}
	s.wake = sync.NewCond(&s.mu)
	for i, p := range players {
		for range p.events {
			s.order = append(s.order, i)
		}
	}
	rand.New(rand.NewPCG(seed, seed)).Shuffle(len(s.order), func(a, b int) { s.order[a], s.order[b] = s.order[b], s.order[a] })
	s.taken = make([]bool, len(s.order))
	return s
}

// next returns the next delivery to make and its player, or false once
// every delivery was handed out.
func (s *journeySchedule) next() (int, *journeyEvent, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		for s.head < len(s.order) && s.taken[s.head] {
			s.head++
		}
		if s.head == len(s.order) {
			return 0, nil, false
		}
		// The first delivery of a player with none in flight: the scan
		// passes only deliveries of players in flight, at most a few per
		// worker.
		for k := s.head; k < len(s.order); k++ {
			if i := s.order[k]; !s.taken[k] && !s.busy[i] {
				s.taken[k], s.busy[i] = true, true
				p := s.players[i]
				p.sent++
				return i, p.events[p.sent-1], true
			}
		}
		s.wake.Wait()
	}
}

// done records that a delivery of player i was answered.
func (s *journeySchedule) done(i int) {
	s.mu.Lock()
	s.busy[i] = false
	s.mu.Unlock()
	s.wake.Broadcast()
}

// journeyCounts are the trace's players and events.
type journeyCounts struct {
	players, verified, deleted, events int
}

// journeyMix is the writes design.md's API requires for the trace, per
// event, each event folded when it arrives (the order k-ID sends them), as
// controllers/kidevent_controller.go and kiduser_controller.go make them:
//   - every event: its create (the receiver) and its status (Applied);
//   - IN_PROGRESS, with no session yet: a challenge stand-in, created and
//     its status written;
//   - PASS with the session: the session's user, created and its status
//     written; then the stand-in merged into it (a status write) and
//     deleted;
//   - Session.ChangePermissions and Session.Delete: the session user's
//     status;
//   - Verification.Result: a verification stand-in, created and its status
//     written (nothing links it to the session).
func journeyMix(c journeyCounts) writeMix {
	p, v, d, e := float64(c.players), float64(c.verified), float64(c.deleted), float64(c.events)
	return writeMix{
		eventCreateWrite: 1,
		eventStatusWrite: 1,
		userCreateWrite:  (2*p + v) / e,
		userStatusWrite:  (4*p + v + d) / e,
		userDeleteWrite:  p / e,
	}
}

// journeyRun is what the journey phase saw.
type journeyRun struct {
	journeyCounts
	mix        writeMix
	sentBy     time.Duration // every delivery answered 200
	elapsed    time.Duration // every event Applied and every stand-in merged
	non200     int           // attempts answered otherwise (k-ID retries them)
	ackLatency []time.Duration
	queued     []time.Duration // each event's time from its 200 to Applied
	writes     float64         // the manager's API writes over the phase
	// byVerb: the manager's API requests over the phase by HTTP method,
	// its reads (GET) and those writes; conflicts: writes answered 409
	// (a lost optimistic lock, or a create of a user another worker made);
	// gone: deletes answered 404 (a stand-in deleted already).
	byVerb          map[string]float64
	conflicts, gone float64
	standIns        int // challenge stand-ins the manager made
	// batched: events folded into their player's user in the status
	// write of another of the player's queued events
	// (kid_fold_batched_events_total).
	batched float64
	// labelWrites: writes of a user's id labels, for an id it gained
	// after its create (kid_user_id_label_writes_total); among writes.
	labelWrites float64
	// Consecutive session-bound events of one player: how many pairs, how
	// many of them were both stored and not yet Applied at one moment
	// (the later stored before the earlier was Applied), of which
	// IN_PROGRESS and PASS, and how many were Applied out of order.
	pairs, pairsQueued, passQueued, outOfOrder int
	// foldSaving is what folding the queued events of a player in one
	// user write would have saved at most (see foldSaving).
	foldSaving    float64
	reconcileErrs map[string]float64
	profile       string
	// cpuPerEvent is the manager's CPU time over the phase, in
	// milliseconds per event.
	cpuPerEvent float64
}

func (j *journeyRun) rate() float64 { return float64(j.events) / j.elapsed.Seconds() }

// runJourneys sends the journeys of cfg.journeys players to the full
// manager, c at a time, and waits until every event is Applied and every
// stand-in merged; then it checks every player's KidUser.
func runJourneys(ctx context.Context, cfg config, p *plane, m *manager) (*journeyRun, error) {
	if err := createBenchProduct(ctx, p, journeyNS); err != nil {
		return nil, err
	}
	if err := waitReady(ctx, p, journeyNS); err != nil {
		return nil, err
	}
	players := make([]*player, cfg.journeys)
	j := &journeyRun{reconcileErrs: map[string]float64{}}
	for i := range players {
		players[i] = journeyOf(i)
		j.players++
		j.events += len(players[i].events)
		if players[i].verified {
			j.verified++
		}
		if players[i].deleted {
			j.deleted++
		}
	}
	j.mix = journeyMix(j.journeyCounts)

	w, err := watchJourneys(ctx, p)
	if err != nil {
		return nil, err
	}
	defer w.stop()

	errsBefore := map[string]float64{}
	for _, c := range []string{"kidevent", "kiduser"} {
		errsBefore[c] = m.metric("controller_runtime_reconcile_errors_total", `controller="`+c+`"`)
	}
	applied := m.metric("kid_events_processed_total", `result="applied"`)
	batched, labelWrites := m.metric("kid_fold_batched_events_total"), m.metric("kid_user_id_label_writes_total")
	writes, byVerb, cpu := m.writes(), requestsByVerb(m), m.cpuSeconds()
	conflicts, gone := m.metric("rest_client_requests_total", `code="409"`), m.metric("rest_client_requests_total", `code="404"`, `method="DELETE"`)
	profiled := make(chan struct{})
	go func() {
		defer close(profiled)
		if cfg.journeyProfileSeconds > 0 {
			j.profile, _ = m.profile(cfg.journeyProfileSeconds, filepath.Join(cfg.workDir, "manager-journeys.cpu.pprof"))
		}
	}()

	start := time.Now()
	sent, err := sendJourneys(ctx, m, players, cfg.c, j)
	if err != nil {
		return nil, err
	}
	j.sentBy = time.Since(start)
	done, err := w.waitDone(ctx, p, j.events)
	if err != nil {
		return nil, err
	}
	j.elapsed = done.Sub(start)
	j.writes = m.writes() - writes
	j.cpuPerEvent = (m.cpuSeconds() - cpu) * 1000 / float64(j.events)
	j.byVerb = since(m, byVerb)
	j.batched = m.metric("kid_fold_batched_events_total") - batched
	j.labelWrites = m.metric("kid_user_id_label_writes_total") - labelWrites
	j.conflicts = m.metric("rest_client_requests_total", `code="409"`) - conflicts
	j.gone = m.metric("rest_client_requests_total", `code="404"`, `method="DELETE"`) - gone
	<-profiled
	for _, c := range []string{"kidevent", "kiduser"} {
		j.reconcileErrs[c] = m.metric("controller_runtime_reconcile_errors_total", `controller="`+c+`"`) - errsBefore[c]
	}
	// The metric counts after the write the watch saw; an event applied
	// twice would count twice.
	if err := waitApplied(ctx, m, applied+float64(sent)); err != nil {
		return nil, err
	}
	if got := m.metric("kid_events_processed_total", `result="applied"`) - applied; got != float64(sent) {
		return nil, fmt.Errorf("journeys: the manager applied %.0f events, %d were delivered", got, sent)
	}
	j.standIns = w.standInsMade()
	j.analyse(players, w.appliedAt())
	if err := checkJourneys(ctx, p, players); err != nil {
		return nil, err
	}
	log("journeys: removing their objects")
	for _, del := range []struct {
		obj  client.Object
		list client.ObjectList
	}{{&kidv1.KidEvent{}, &kidv1.KidEventList{}}, {&kidv1.KidUser{}, &kidv1.KidUserList{}}} {
		if err := p.deleteAll(ctx, del.obj, del.list, journeyNS); err != nil {
			return nil, err
		}
	}
	return j, nil
}

// requestsByVerb is the manager's API requests so far, by HTTP method:
// its reads (GET: live reads, and the informers' lists and watches, a few)
// and its writes.
func requestsByVerb(m *manager) map[string]float64 {
	out := map[string]float64{}
	for _, verb := range []string{"GET", "POST", "PATCH", "PUT", "DELETE"} {
		out[verb] = m.metric("rest_client_requests_total", `method="`+verb+`"`)
	}
	return out
}

// since is the requests made since before, by HTTP method.
func since(m *manager, before map[string]float64) map[string]float64 {
	out := requestsByVerb(m)
	for verb := range out {
		out[verb] -= before[verb]
	}
	return out
}

// verbs is the writes of a mix by HTTP method, for n events.
func (w writeMix) verbs(n int) map[string]float64 {
	f := float64(n)
	return map[string]float64{
		"POST":   f * (w[eventCreateWrite] + w[userCreateWrite]),
		"PATCH":  f * (w[eventStatusWrite] + w[userStatusWrite]),
		"DELETE": f * w[userDeleteWrite],
	}
}

// sendJourneys delivers the schedule on c workers, each delivery on k-ID's
// retry schedule, and returns how many were delivered.
func sendJourneys(ctx context.Context, m *manager, players []*player, c int, j *journeyRun) (int, error) {
	url := "http://" + m.webhook + kidv1.WebhookPath(journeyNS, "bench")
	transport := &http.Transport{MaxIdleConns: c, MaxIdleConnsPerHost: c}
	defer transport.CloseIdleConnections()
	s := kidsim.NewSender(url, []byte(secret))
	s.Schedule = kidsim.RetrySchedule
	s.Client = &http.Client{Transport: transport, Timeout: 30 * time.Second}
	sched := newSchedule(players, journeySeed)
	var mu sync.Mutex
	var failed []error
	sent := 0
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for {
				i, e, ok := sched.next()
				if !ok {
					return
				}
				attempts, err := s.Send(ctx, e.body)
				now := time.Now()
				mu.Lock()
				for _, a := range attempts {
					if !a.OK() {
						j.non200++
					}
				}
				if err != nil {
					failed = append(failed, fmt.Errorf("player %d, %s: %w (%v)", i, e.kind, err, attempts[len(attempts)-1]))
				} else {
					sent++
					e.acked = now
					j.ackLatency = append(j.ackLatency, attempts[len(attempts)-1].Duration)
				}
				mu.Unlock()
				sched.done(i)
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		return sent, fmt.Errorf("journeys: %d deliveries never answered 200, the first: %w", len(failed), failed[0])
	}
	return sent, ctx.Err()
}

// journeyWatch follows the journeys' KidEvents (when each became Applied)
// and their challenge stand-ins (made, and merged away).
type journeyWatch struct {
	events, users watch.Interface
	mu            sync.Mutex
	changed       chan struct{}
	applied       map[string]time.Time
	made          int
	live          map[string]bool
	closed        error
}

func watchJourneys(ctx context.Context, p *plane) (*journeyWatch, error) {
	wc, err := client.NewWithWatch(p.cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return nil, err
	}
	w := &journeyWatch{changed: make(chan struct{}, 1), applied: map[string]time.Time{}, live: map[string]bool{}}
	// The namespace is new: the watches start before its first object.
	if w.events, err = wc.Watch(ctx, &kidv1.KidEventList{}, client.InNamespace(journeyNS)); err != nil {
		return nil, err
	}
	if w.users, err = wc.Watch(ctx, &kidv1.KidUserList{}, client.InNamespace(journeyNS)); err != nil {
		w.events.Stop()
		return nil, err
	}
	go w.follow(w.events, func(ev watch.Event) {
		if e, ok := ev.Object.(*kidv1.KidEvent); ok && e.Status.Phase == kidv1.EventApplied {
			if key := eventKey(e.Spec.EventType, e.Spec.Subject); w.applied[key].IsZero() {
				w.applied[key] = time.Now()
			}
		}
	})
	go w.follow(w.users, func(ev watch.Event) {
		u, ok := ev.Object.(*kidv1.KidUser)
		if !ok || u.Spec.Identity.Kind != kidv1.IdentityChallenge {
			return
		}
		switch ev.Type {
		case watch.Added:
			w.made++
			w.live[u.Name] = true
		case watch.Deleted:
			delete(w.live, u.Name)
		}
	})
	return w, nil
}

// follow applies each event of a watch under the lock, and notes a watch
// that ended: the server closes watches after a while, and the phase is
// timed on them.
func (w *journeyWatch) follow(wi watch.Interface, apply func(watch.Event)) {
	for ev := range wi.ResultChan() {
		w.mu.Lock()
		apply(ev)
		w.mu.Unlock()
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
	w.mu.Lock()
	if w.closed == nil {
		w.closed = errors.New("a watch of the journeys ended before they did")
	}
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *journeyWatch) stop() {
	w.events.Stop()
	w.users.Stop()
}

// waitDone waits until the watches have seen all n events Applied and no
// challenge stand-in left, and returns when they first did. The two watches
// are not ordered with each other (a stand-in's create could show after its
// event's Applied), so a list of the users confirms it.
func (w *journeyWatch) waitDone(ctx context.Context, p *plane, n int) (time.Time, error) {
	for {
		w.mu.Lock()
		done, at, closed := len(w.applied) == n && len(w.live) == 0, time.Now(), w.closed
		w.mu.Unlock()
		if closed != nil && !done {
			return time.Time{}, closed
		}
		if done {
			var users kidv1.KidUserList
			if err := p.client.List(ctx, &users, client.InNamespace(journeyNS)); err != nil {
				return time.Time{}, err
			}
			if !slices.ContainsFunc(users.Items, func(u kidv1.KidUser) bool { return u.Spec.Identity.Kind == kidv1.IdentityChallenge }) {
				return at, nil
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("waiting for the journeys: %w", ctx.Err())
		case <-w.changed:
		case <-time.After(time.Second):
		}
	}
}

func (w *journeyWatch) standInsMade() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.made
}

func (w *journeyWatch) appliedAt() map[string]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.applied)
}

// analyse computes, from when each event was stored (answered 200) and
// Applied, how long events waited, and how often two consecutive events of
// one player that fold into the same user waited at one moment: those the
// KidEvent controller could have folded in one write.
func (j *journeyRun) analyse(players []*player, applied map[string]time.Time) {
	for _, p := range players {
		var bound []*journeyEvent
		for _, e := range p.events {
			j.queued = append(j.queued, applied[e.key].Sub(e.acked))
			if e.sessionBound {
				bound = append(bound, e)
			}
		}
		run := 1 // events in the current run of queued-together events
		for k := 1; k < len(bound); k++ {
			prev, next := bound[k-1], bound[k]
			j.pairs++
			if applied[next.key].Before(applied[prev.key]) {
				j.outOfOrder++
			}
			if !next.acked.Before(applied[prev.key]) {
				j.foldSaving += foldSaving(bound[k-run : k])
				run = 1
				continue
			}
			j.pairsQueued++
			run++
			if k == 1 {
				j.passQueued++
			}
		}
		j.foldSaving += foldSaving(bound[len(bound)-run:])
	}
}

// foldSaving is the most writes saved by folding a run of one player's
// queued events in one user status write instead of one each: a write per
// event after the first, and, when the run holds the IN_PROGRESS and the
// PASS, the challenge stand-in's create, its merge and its delete. It is an
// upper bound: an event stored while the one before it was being folded
// counts as queued.
func foldSaving(run []*journeyEvent) float64 {
	if len(run) < 2 {
		return 0
	}
	saved := float64(len(run) - 1)
	if run[0].kind == inProgress {
		saved += 3
	}
	return saved
}

// checkJourneys verifies every player's outcome: one session user with
// consent Granted, its session and kuid, the permission change, every event
// counted, erased after a Session.Delete and active otherwise; the verified
// players' verification on its stand-in; no challenge stand-in left, and no
// other user.
func checkJourneys(ctx context.Context, p *plane, players []*player) error {
	var users kidv1.KidUserList
	if err := p.client.List(ctx, &users, client.InNamespace(journeyNS)); err != nil {
		return err
	}
	byName := map[string]*kidv1.KidUser{}
	for i := range users.Items {
		byName[users.Items[i].Name] = &users.Items[i]
	}
	// Each problem once, with how often it occurs and its first instance.
	var problems []string
	first, counts := map[string]string{}, map[string]int{}
	bad := func(what, instance string) {
		if counts[what] == 0 {
			problems = append(problems, what)
			first[what] = instance
		}
		counts[what]++
	}
	expected := 0
	for i, pl := range players {
		check := func(ok bool, what, format string, args ...any) {
			if !ok {
				bad(what, fmt.Sprintf("player %d: ", i)+fmt.Sprintf(format, args...))
			}
		}
		u := byName[kidv1.UserName("bench", kidv1.IdentitySession, pl.session)]
		if u == nil {
			check(false, "no session user", "session %s", pl.session)
			continue
		}
		expected++
		st := &u.Status
		bound := 0
		for _, e := range pl.events {
			if e.sessionBound {
				bound++
			}
		}
		check(st.Consent.State == kidv1.ConsentGranted && st.Consent.ChallengeID == pl.challenge, "consent not Granted by its challenge", "%s %s", st.Consent.State, st.Consent.ChallengeID)
		check(st.SessionID == pl.session && st.KUID == pl.kuid, "session or kuid missing", "%q %q", st.SessionID, st.KUID)
		check(slices.Contains(st.ChallengeIDs, pl.challenge), "challenge not held", "%v", st.ChallengeIDs)
		check(st.Session.PermissionsChangedAt != nil, "permission change not folded", "%s", u.Name)
		check(st.ObservedEvents == int64(bound), "events not counted once each", "%d observed, %d sent", st.ObservedEvents, bound)
		if pl.deleted {
			check(st.Session.State == kidv1.SessionDeleted && st.ErasedAt != nil, "Session.Delete not folded", "session %s", st.Session.State)
		} else {
			check(st.Session.State == kidv1.SessionActive && st.ErasedAt == nil, "session not Active", "session %s", st.Session.State)
		}
		if pl.verified {
			expected++
			v := byName[kidv1.UserName("bench", kidv1.IdentityVerification, pl.verification)]
			check(v != nil && v.Status.Verification.State == kidv1.VerificationVerified, "verification not recorded", "%s", pl.verification)
		}
	}
	for i := range users.Items {
		if u := &users.Items[i]; u.Spec.Identity.Kind == kidv1.IdentityChallenge {
			bad("challenge stand-in left", u.Name)
		}
	}
	if len(users.Items) != expected {
		bad("users other than the players' and their verifications'", fmt.Sprintf("%d users, %d expected", len(users.Items), expected))
	}
	if len(problems) == 0 {
		return nil
	}
	msg := ""
	for _, what := range problems {
		msg += fmt.Sprintf("\n  %d× %s (the first: %s)", counts[what], what, first[what])
	}
	return fmt.Errorf("journeys: the players' KidUsers do not reflect their events:%s", msg)
}

// printJourney prints the journey block of the results table.
func (r *results) printJourney(w io.Writer, row func(string, float64, string, float64), text func(string, string), latencies func([]time.Duration) string) {
	j, raw := r.journey, r.raw()
	floor := r.floor(j.mix)
	text(fmt.Sprintf("journeys, C=%d: %d players", r.c, j.players), fmt.Sprintf("%d events", j.events))
	text("  of which Verification.Result / Session.Delete", fmt.Sprintf("%d / %d", j.verified, j.deleted))
	text("  every delivery answered 200 after", fmt.Sprintf("%.1f s", j.sentBy.Seconds()))
	text("  ack latency p50 / p99 / p99.9", latencies(j.ackLatency))
	text("  non-200 answers", fmt.Sprint(j.non200))
	row("  end to end (Applied, stand-ins merged)", j.rate(), "/s", j.rate()/raw)
	row("  players fully applied", float64(j.players)/j.elapsed.Seconds(), "/s", 0)
	row(fmt.Sprintf("  floor: this trace's writes (%.2f per event)", j.mix.total()), floor, "/s", floor/raw)
	text("  x the journey floor", fmt.Sprintf("%.2f", j.rate()/floor))
	text("  manager CPU per event (receiver included)", fmt.Sprintf("%.2f ms", j.cpuPerEvent))
	text("  API reads (GET) per event, manager", fmt.Sprintf("%.2f", j.byVerb["GET"]/float64(j.events)))
	// The floor counts each event folded as it arrives. A manager that is
	// behind folds a queued IN_PROGRESS into the session its PASS names
	// and makes fewer writes; the floor of the writes it did make says
	// how close it came to the API server at its own work.
	if own := r.floor(j.madeMix()); own > 0 {
		row(fmt.Sprintf("  floor: the manager's own writes (%.2f per event)", j.madeMix().total()), own, "/s", own/raw)
		text("  x that floor", fmt.Sprintf("%.2f", j.rate()/own))
	}
	text("  API writes per event: manager / floor", fmt.Sprintf("%.2f / %.2f", j.writes/float64(j.events), j.mix.total()))
	want := j.mix.verbs(j.events)
	text("    POST / PATCH / DELETE, manager", fmt.Sprintf("%.0f / %.0f / %.0f", j.byVerb["POST"], j.byVerb["PATCH"], j.byVerb["DELETE"]))
	text("    POST / PATCH / DELETE, floor", fmt.Sprintf("%.0f / %.0f / %.0f", want["POST"], want["PATCH"], want["DELETE"]))
	text("    of the manager's, answered 409 / 404", fmt.Sprintf("%.0f / %.0f", j.conflicts, j.gone))
	if j.byVerb["PUT"] > 0 {
		text("    PUT, manager", fmt.Sprintf("%.0f", j.byVerb["PUT"]))
	}
	text("  challenge stand-ins made (all merged)", fmt.Sprintf("%d of %d", j.standIns, j.players))
	text("  events folded with another of their player's", fmt.Sprintf("%.0f of %d", j.batched, j.events))
	text("  id label writes (an id gained after a create)", fmt.Sprintf("%.0f", j.labelWrites))
	text("  an event's wait, stored to Applied p50 / p99", fmt.Sprintf("%.1f / %.1f s", percentile(j.queued, 0.5).Seconds(), percentile(j.queued, 0.99).Seconds()))
	text("  a player's next event stored before", "")
	text("    the one before it was Applied", fmt.Sprintf("%d of %d pairs", j.pairsQueued, j.pairs))
	text("    of which PASS after IN_PROGRESS", fmt.Sprintf("%d of %d", j.passQueued, j.players))
	text("  Applied before the one before it", fmt.Sprint(j.outOfOrder))
	text("  writes a fold of queued events saves, at most", fmt.Sprintf("%.2f per event", j.foldSaving/float64(j.events)))
	text("  reconcile errors, lost races aside (kidevent / kiduser)", fmt.Sprintf("%.0f / %.0f", j.reconcileErrs["kidevent"], j.reconcileErrs["kiduser"]))
}

// madeMix is the writes the manager made over the phase, per event, by
// kind: its POSTs beyond the events' creates were users' creates, its
// PATCHes beyond the events' status writes users' status writes, its
// DELETEs stand-ins' deletes (a 404 or 409 counts as the write it tried).
func (j *journeyRun) madeMix() writeMix {
	e := float64(j.events)
	return writeMix{
		eventCreateWrite: 1,
		eventStatusWrite: 1,
		userCreateWrite:  max(j.byVerb["POST"]-e, 0) / e,
		userStatusWrite:  max(j.byVerb["PATCH"]+j.byVerb["PUT"]-e, 0) / e,
		userDeleteWrite:  j.byVerb["DELETE"] / e,
	}
}
