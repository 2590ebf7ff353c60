package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

type scalePoint struct {
	label        string
	events       int
	users        int
	rssBytes     int64
	etcdBytes    int64
	readyAfter   time.Duration
	rssRestarted int64
}

type results struct {
	n, c           int
	rawRounds      []float64
	rawHigh        float64
	rawLatencies   []time.Duration // of every round
	cHigh          int
	recvRounds     []receiverRun // receiver-only manager
	writeCosts     []writeCost
	receiverBusy   receiverRun // the full manager, during the e2e run
	e2e            time.Duration
	writesPerEvent float64
	// cpuPerEvent is the full manager's CPU time (user and system, its
	// receiver included) over the e2e run, in milliseconds per event.
	cpuPerEvent float64
	// byVerb is the full manager's API requests over the e2e run, by HTTP
	// method (GET: its reads).
	byVerb        map[string]float64
	throttledSecs float64
	reconcileErrs map[string]float64
	e2eTimeline   []float64
	profile       string
	apiProfile    string
	recvProfile   string
	scale         []scalePoint
	sync          syncRun
	journey       *journeyRun // nil when -journeys is 0
}

func run(ctx context.Context, cfg config) (*results, error) {
	r := &results{n: cfg.n, c: cfg.c, cHigh: cfg.cHigh}
	p, err := startPlane(cfg.workDir)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	if err := createProduct(ctx, p); err != nil {
		return nil, err
	}

	// The raw ceiling and the receiver, interleaved in rounds: the speed of
	// this shared machine drifts by more than the effects measured, so each
	// receiver round runs right after a raw round and the figures are the
	// medians. The receiver is a receiver-only manager (what every
	// non-leader replica runs), so the figure is the receiver's and the API
	// server's; while the raw rounds run it is idle.
	recv := newManager(cfg.managerBin, p.kubeconfig)
	recv.extraArgs = []string{"--receiver-only"}
	if _, err := recv.start(ctx); err != nil {
		return nil, err
	}
	var lastRaw []*kidv1.KidEvent
	for k := range cfg.rounds {
		log("round %d: raw ceiling, %d creates at concurrency %d", k+1, cfg.n, cfg.c)
		rate, lat, events, err := rawCeiling(ctx, p, cfg.n, cfg.c, fmt.Sprintf("a%d", k))
		if err != nil {
			return nil, err
		}
		r.rawRounds = append(r.rawRounds, rate)
		r.rawLatencies = append(r.rawLatencies, lat...)
		lastRaw = events

		log("round %d: receiver, %d deliveries at concurrency %d to a receiver-only manager", k+1, cfg.n, cfg.c)
		recvProfiled := make(chan struct{})
		go func() {
			defer close(recvProfiled)
			if k == 0 && cfg.profileSeconds > 0 {
				r.recvProfile, _ = recv.profile(cfg.profileSeconds, filepath.Join(cfg.workDir, "receiver.cpu.pprof"))
			}
		}()
		r.recvRounds = append(r.recvRounds, sendAll(ctx, recv, fmt.Sprintf("recv%d", k), cfg.n, cfg.c))
		<-recvProfiled
	}
	if err := recv.stop(); err != nil {
		return nil, err
	}
	if cfg.cHigh > 0 {
		log("raw ceiling: %d creates at concurrency %d", cfg.n, cfg.cHigh)
		if r.rawHigh, _, _, err = rawCeiling(ctx, p, cfg.n, cfg.cHigh, "b"); err != nil {
			return nil, err
		}
	}
	log("write costs: each other write of an event (its status; a user's create, status and delete), %d each at concurrency %d", cfg.n, cfg.c)
	if r.writeCosts, err = writeCosts(ctx, p, lastRaw, cfg.c); err != nil {
		return nil, err
	}
	// Only the end-to-end run's objects may be there when the full manager
	// starts.
	log("removing the objects of the rounds")
	for _, del := range []struct {
		obj  client.Object
		list client.ObjectList
		ns   string
	}{
		{&kidv1.KidEvent{}, &kidv1.KidEventList{}, rawNS},
		{&kidv1.KidUser{}, &kidv1.KidUserList{}, rawNS},
		{&kidv1.KidEvent{}, &kidv1.KidEventList{}, benchNS},
	} {
		if err := p.deleteAll(ctx, del.obj, del.list, del.ns); err != nil {
			return nil, err
		}
	}

	m := newManager(cfg.managerBin, p.kubeconfig)
	if _, err := m.start(ctx); err != nil {
		return nil, err
	}
	defer func() { _ = m.stop() }() // stopped and checked below; this is for the early returns
	if err := waitReady(ctx, p, benchNS); err != nil {
		return nil, err
	}

	// End to end: n more distinct deliveries, to the full manager.
	log("end to end: %d deliveries at concurrency %d to the full manager", cfg.n, cfg.c)
	writesBefore, cpuBefore, verbsBefore := m.writes(), m.cpuSeconds(), requestsByVerb(m)
	profileDone := make(chan struct{}, 2)
	if cfg.profileSeconds > 0 {
		go func() {
			r.profile, _ = m.profile(cfg.profileSeconds, filepath.Join(cfg.workDir, "manager.cpu.pprof"))
			profileDone <- struct{}{}
		}()
		go func() {
			r.apiProfile, _ = p.apiServerProfile(ctx, cfg.profileSeconds, cfg.workDir, "kube-apiserver.cpu.pprof")
			profileDone <- struct{}{}
		}()
	} else {
		profileDone <- struct{}{}
		profileDone <- struct{}{}
	}
	start := time.Now()
	timeline := make(chan []float64, 1)
	go func() { timeline <- sample(ctx, m, float64(cfg.n)) }()
	r.receiverBusy = sendAll(ctx, m, "e2e", cfg.n, cfg.c)
	if err := waitApplied(ctx, m, float64(cfg.n)); err != nil {
		return nil, err
	}
	r.e2e = time.Since(start)
	r.e2eTimeline = <-timeline
	r.writesPerEvent = (m.writes() - writesBefore) / float64(cfg.n)
	r.cpuPerEvent = (m.cpuSeconds() - cpuBefore) * 1000 / float64(cfg.n)
	r.byVerb = since(m, verbsBefore)
	<-profileDone
	<-profileDone
	if err := checkUsers(ctx, p, cfg.n); err != nil {
		return nil, err
	}
	r.throttledSecs = m.metric("rest_client_rate_limiter_duration_seconds_sum")
	r.reconcileErrs = map[string]float64{}
	for _, c := range []string{"kidevent", "kiduser", "kidproduct", "kidaction"} {
		r.reconcileErrs[c] = m.metric("controller_runtime_reconcile_errors_total", `controller="`+c+`"`)
	}
	if cfg.journeys > 0 {
		log("journeys: %d players, each an IN_PROGRESS, a PASS and a permission change (some a verification, some a deletion), %d deliveries in flight", cfg.journeys, cfg.c)
		if r.journey, err = runJourneys(ctx, cfg, p, m); err != nil {
			return nil, err
		}
	}
	if cfg.syncSessions > 0 {
		log("session sync: %d players consent at a fake k-ID, which delivers to the manager", cfg.syncSessions)
		if r.sync, err = sessionSync(ctx, p, m, cfg.syncSessions, cfg.c); err != nil {
			return nil, err
		}
	}

	if !cfg.scale {
		return r, nil
	}
	// Scale: 10,000 events and users.
	more := 10000 - cfg.n
	if more > 0 {
		log("scale: %d more deliveries, to 10,000 events and users", more)
		// Counted from here: the session sync and the journeys applied
		// events of their own.
		applied := m.metric("kid_events_processed_total", `result="applied"`)
		sendAll(ctx, m, "fill", more, cfg.c)
		if err := waitApplied(ctx, m, applied+float64(more)); err != nil {
			return nil, err
		}
	}
	pt, err := measure(ctx, p, m, "10k events + 10k users")
	if err != nil {
		return nil, err
	}
	r.scale = append(r.scale, pt)

	// Scale: 50,000 users, created directly (as a long-lived product
	// accumulates them).
	add := cfg.users50k - pt.users
	log("scale: creating %d more KidUsers", add)
	parallel(add, 64, func(i int) {
		id := fmt.Sprintf("bulk-%d", i)
		u := &kidv1.KidUser{}
		u.Name, u.Namespace = fmt.Sprintf("bench-bulk-%d", i), benchNS
		u.Labels = map[string]string{kidv1.ProductLabel: "bench", kidv1.IDLabel(id): ""}
		u.Spec = kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "bench"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: id}}
		_ = p.client.Create(ctx, u)
	})
	pt, err = measure(ctx, p, m, fmt.Sprintf("%dk users", cfg.users50k/1000))
	if err != nil {
		return nil, err
	}
	r.scale = append(r.scale, pt)
	return r, nil
}

// measure reads the manager's memory and etcd's size, then restarts the
// manager and times how long it takes to be ready again.
func measure(ctx context.Context, p *plane, m *manager, label string) (scalePoint, error) {
	var events kidv1.KidEventList
	var users kidv1.KidUserList
	if err := p.client.List(ctx, &events, client.InNamespace(benchNS)); err != nil {
		return scalePoint{}, err
	}
	if err := p.client.List(ctx, &users, client.InNamespace(benchNS)); err != nil {
		return scalePoint{}, err
	}
	// Let the caches and queues settle before reading memory.
	time.Sleep(5 * time.Second)
	pt := scalePoint{label: label, events: len(events.Items), users: len(users.Items), rssBytes: m.rssBytes(), etcdBytes: p.etcdBytes()}
	log("scale: %s: restarting the manager", label)
	if err := m.stop(); err != nil {
		return pt, err
	}
	var err error
	if pt.readyAfter, err = m.start(ctx); err != nil {
		return pt, err
	}
	time.Sleep(5 * time.Second)
	pt.rssRestarted = m.rssBytes()
	return pt, nil
}

// waitReady waits until the product "bench" of a namespace is Ready.
func waitReady(ctx context.Context, p *plane, ns string) error {
	for {
		prod := &kidv1.KidProduct{}
		if err := p.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "bench"}, prod); err != nil {
			return err
		}
		for _, c := range prod.Status.Conditions {
			if c.Type == kidv1.ReadyCondition && c.Status == "True" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func log(format string, args ...any) {
	fmt.Printf("# "+format+"\n", args...)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// Aggregates of the rounds, and the floor the API server sets for an event.
func (r *results) rate(d time.Duration) float64 { return float64(r.n) / d.Seconds() }
func (r *results) raw() float64                 { return median(r.rawRounds) }

func (r *results) receiver() float64 {
	rates := make([]float64, len(r.recvRounds))
	for i, rr := range r.recvRounds {
		rates[i] = r.rate(rr.elapsed)
	}
	return median(rates)
}

// receiverRatios compares each receiver round with the raw round just
// before it; their median is the receiver's ratio (pairs share the
// machine's state, which drifts between rounds).
func (r *results) receiverRatios() []float64 {
	ratios := make([]float64, len(r.recvRounds))
	for i, rr := range r.recvRounds {
		ratios[i] = r.rate(rr.elapsed) / r.rawRounds[i]
	}
	return ratios
}

func (r *results) receiverLatencies() []time.Duration {
	var all []time.Duration
	for _, rr := range r.recvRounds {
		all = append(all, rr.latencies...)
	}
	return all
}

// receiverNon200 counts the non-200 answers of the receiver rounds.
func (r *results) receiverNon200() int {
	n := 0
	for _, rr := range r.recvRounds {
		n += rr.non200
	}
	return n
}

// writeMix is how many writes of each kind (eventCreateWrite and the names
// of writeCosts) a trace makes per event.
type writeMix map[string]float64

// total is the writes per event.
func (w writeMix) total() float64 {
	var n float64
	for _, c := range w {
		n += c
	}
	return n
}

// An event about a new player: its create and status, the user's create
// and status. About a known player: the same without the user's create.
var (
	newPlayer   = writeMix{eventCreateWrite: 1, eventStatusWrite: 1, userCreateWrite: 1, userStatusWrite: 1}
	knownPlayer = writeMix{eventCreateWrite: 1, eventStatusWrite: 1, userStatusWrite: 1}
)

// floor is the rate of events at which the API server alone, with no
// operator, can make the writes of a mix: each write timed at its own
// ceiling (the KidEvent create at the raw one) and added up. It is 0 if a
// write of the mix was not measured.
func (r *results) floor(mix writeMix) float64 {
	rates := map[string]float64{eventCreateWrite: r.raw()}
	for _, wc := range r.writeCosts {
		rates[wc.name] = wc.rate
	}
	var secs float64
	for name, count := range mix {
		if rates[name] <= 0 {
			return 0
		}
		secs += count / rates[name]
	}
	return 1 / secs
}

func (r *results) print(w io.Writer) {
	raw, recv, e2e := r.raw(), r.receiver(), r.rate(r.e2e)
	fmt.Fprintf(w, "\n%-46s %14s %8s\n", "measure", "value", "x raw")
	row := func(name string, v float64, unit string, ratio float64) {
		rs := ""
		if ratio > 0 {
			rs = fmt.Sprintf("%.2f", ratio)
		}
		fmt.Fprintf(w, "%-46s %14s %8s\n", name, fmt.Sprintf("%.0f %s", v, unit), rs)
	}
	text := func(name, v string) { fmt.Fprintf(w, "%-46s %14s\n", name, v) }
	latencies := func(d []time.Duration) string {
		return fmt.Sprintf("%.1f / %.1f / %.1f ms", ms(percentile(d, 0.50)), ms(percentile(d, 0.99)), ms(percentile(d, 0.999)))
	}
	rounds := len(r.rawRounds)
	row(fmt.Sprintf("raw ceiling, C=%d (median of %d rounds)", r.c, rounds), raw, "/s", 1)
	perRound := make([]string, rounds)
	for i, v := range r.rawRounds {
		perRound[i] = fmt.Sprintf("%.0f", v)
	}
	text("  each round, /s", strings.Join(perRound, ", "))
	text("  create latency p50 / p99 / p99.9", latencies(r.rawLatencies))
	if r.rawHigh > 0 {
		row(fmt.Sprintf("raw ceiling, C=%d", r.cHigh), r.rawHigh, "/s", r.rawHigh/raw)
	}
	recvRatio := median(r.receiverRatios())
	row(fmt.Sprintf("receiver accepted, C=%d (medians)", r.c), recv, "/s", recvRatio)
	for i, ratio := range r.receiverRatios() {
		perRound[i] = fmt.Sprintf("%.2f", ratio)
	}
	text("  each round, x the raw round before it", strings.Join(perRound, ", "))
	text("  ack latency p50 / p99 / p99.9", latencies(r.receiverLatencies()))
	text("  non-200 answers", fmt.Sprint(r.receiverNon200()))
	if floor := r.floor(newPlayer); floor > 0 {
		text(fmt.Sprintf("API server ceiling of each write, C=%d", r.c), "")
		row("  "+eventCreateWrite, raw, "/s", 1)
		for _, wc := range r.writeCosts {
			row("  "+wc.name, wc.rate, "/s", wc.rate/raw)
		}
		row("  floor: an event about a new player (4)", floor, "/s", floor/raw)
		known := r.floor(knownPlayer)
		row("  floor: an event about a known player (3)", known, "/s", known/raw)
	}
	busy := r.rate(r.receiverBusy.elapsed)
	row("receiver, controllers busy (e2e run)", busy, "/s", busy/raw)
	text("  ack latency p50 / p99 / p99.9", latencies(r.receiverBusy.latencies))
	text("  non-200 answers", fmt.Sprint(r.receiverBusy.non200))
	row("end to end (every event Applied, user folded)", e2e, "/s", e2e/raw)
	if floor := r.floor(newPlayer); floor > 0 {
		text("  x the new-player floor (same events)", fmt.Sprintf("%.2f", e2e/floor))
	}
	text("API writes per event (manager)", fmt.Sprintf("%.2f", r.writesPerEvent))
	text("  GET / POST / PATCH / DELETE per event", perEvent(r.byVerb, r.n))
	text("manager CPU per event (e2e, receiver included)", fmt.Sprintf("%.2f ms", r.cpuPerEvent))
	text("client rate limiter wait, total", fmt.Sprintf("%.3f s", r.throttledSecs))
	for _, c := range []string{"kidevent", "kiduser", "kidproduct", "kidaction"} {
		text("reconcile errors ("+c+")", fmt.Sprintf("%.0f", r.reconcileErrs[c]))
	}
	if r.sync.sessions > 0 {
		text(fmt.Sprintf("session sync: %d players (IN_PROGRESS, PASS)", r.sync.sessions), "")
		text("  API writes per player, with the sync", fmt.Sprintf("%.2f", r.sync.writesPerSession))
		text("  of which the session read's writes", fmt.Sprintf("%.2f", r.sync.syncWrites))
		text("  k-ID API calls per player", fmt.Sprintf("%.2f", float64(r.sync.apiCalls)/float64(r.sync.sessions)))
	}
	if len(r.e2eTimeline) > 0 {
		fmt.Fprintf(w, "%-46s %v\n", "events applied, each second of the e2e run", r.e2eTimeline)
	}
	if r.journey != nil {
		r.printJourney(w, row, text, latencies)
	}
	for _, s := range r.scale {
		text("scale: "+s.label, fmt.Sprintf("%d events, %d users", s.events, s.users))
		text("  manager RSS", fmt.Sprintf("%.0f MiB", mib(s.rssBytes)))
		text("  etcd database", fmt.Sprintf("%.0f MiB", mib(s.etcdBytes)))
		text("  ready after restart", fmt.Sprintf("%.1f s", s.readyAfter.Seconds()))
		text("  manager RSS after restart", fmt.Sprintf("%.0f MiB", mib(s.rssRestarted)))
	}
	if r.recvProfile != "" {
		fmt.Fprintf(w, "\nreceiver-only manager CPU profile during the first receiver round (top):\n%s\n", indent(r.recvProfile))
	}
	if r.profile != "" {
		fmt.Fprintf(w, "\nmanager CPU profile during the e2e run (top):\n%s\n", indent(r.profile))
	}
	if r.apiProfile != "" {
		fmt.Fprintf(w, "\nkube-apiserver CPU profile during the e2e run (top):\n%s\n", indent(r.apiProfile))
	}
	if r.journey != nil && r.journey.profile != "" {
		fmt.Fprintf(w, "\nmanager CPU profile during the journeys (top):\n%s\n", indent(r.journey.profile))
	}
	rss10k := 0.0
	if len(r.scale) > 0 {
		rss10k = mib(r.scale[0].rssBytes)
	}
	if r.sync.sessions > 0 {
		fmt.Fprintf(w, "bench: sync_sessions=%d writes_per_synced_player=%.2f sync_writes_per_session=%.2f api_calls_per_player=%.2f\n",
			r.sync.sessions, r.sync.writesPerSession, r.sync.syncWrites, float64(r.sync.apiCalls)/float64(r.sync.sessions))
	}
	// The summary comes last (but for a warning), with the journeys.
	// The machine may be shared: CPU time and requests per event compare
	// across runs where rates do not.
	journey := ""
	if j := r.journey; j != nil {
		journey = fmt.Sprintf(" journey=%.0f/s (%.2f) journey_writes_per_event=%.2f journey_reads_per_event=%.2f journey_cpu_ms_per_event=%.2f",
			j.rate(), j.rate()/r.floor(j.mix), j.writes/float64(j.events), j.byVerb["GET"]/float64(j.events), j.cpuPerEvent)
	}
	e2eRatio := ""
	if floor := r.floor(newPlayer); floor > 0 {
		e2eRatio = fmt.Sprintf(" e2e_floor_ratio=%.2f", e2e/floor)
	}
	fmt.Fprintf(w, "bench: raw=%.0f/s receiver=%.0f/s (%.2f) e2e=%.0f/s (%.2f)%s writes_per_event=%.2f reads_per_event=%.2f cpu_ms_per_event=%.2f p99_ack_ms=%.1f rss_mib_10k=%.0f%s\n",
		raw, recv, recvRatio, e2e, e2e/raw, e2eRatio, r.writesPerEvent, r.byVerb["GET"]/float64(r.n), r.cpuPerEvent, ms(percentile(r.receiverLatencies(), 0.99)), rss10k, journey)
	n := r.receiverNon200() + r.receiverBusy.non200
	if r.journey != nil {
		n += r.journey.non200
	}
	if n > 0 {
		fmt.Fprintf(w, "bench: WARNING: %d non-200 answers\n", n)
	}
}

// perEvent is the GET / POST / PATCH / DELETE requests of byVerb per event,
// for n events.
func perEvent(byVerb map[string]float64, n int) string {
	f := float64(n)
	return fmt.Sprintf("%.2f / %.2f / %.2f / %.2f", byVerb["GET"]/f, byVerb["POST"]/f, byVerb["PATCH"]/f, byVerb["DELETE"]/f)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n  ")
}

// sample records, each second, how many events the manager has applied,
// until want.
func sample(ctx context.Context, m *manager, want float64) []float64 {
	var out []float64
	for ctx.Err() == nil {
		time.Sleep(time.Second)
		n := m.metric("kid_events_processed_total", `result="applied"`)
		out = append(out, n)
		if n >= want {
			return out
		}
	}
	return out
}
