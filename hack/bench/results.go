package main

import (
	"context"
	"fmt"
	"io"
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
	raw, rawHigh   float64
	rawLatencies   []time.Duration
	cHigh          int
	receiver       receiverRun // receiver-only manager
	receiverBusy   receiverRun // the full manager, during the e2e run
	e2e            time.Duration
	writesPerEvent float64
	throttledSecs  float64
	reconcileErrs  map[string]float64
	e2eTimeline    []float64
	profile        string
	apiProfile     string
	recvProfile    string
	scale          []scalePoint
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

	// Raw ceiling, before the manager runs, so nothing else uses the API
	// server; the objects are removed before the manager starts.
	log("raw ceiling: %d creates at concurrency %d", cfg.n, cfg.c)
	if r.raw, r.rawLatencies, err = rawCeiling(ctx, p, cfg.n, cfg.c, "a"); err != nil {
		return nil, err
	}
	if cfg.cHigh > 0 {
		log("raw ceiling: %d creates at concurrency %d", cfg.n, cfg.cHigh)
		if r.rawHigh, _, err = rawCeiling(ctx, p, cfg.n, cfg.cHigh, "b"); err != nil {
			return nil, err
		}
	}
	if err := p.client.DeleteAllOf(ctx, &kidv1.KidEvent{}, client.InNamespace(rawNS)); err != nil {
		return nil, err
	}

	// The receiver: a receiver-only manager (a non-leader replica runs the
	// same), so that the figure is the receiver's and the API server's.
	log("receiver: %d deliveries at concurrency %d to a receiver-only manager", cfg.n, cfg.c)
	recv := newManager(cfg.managerBin, p.kubeconfig)
	recv.extraArgs = []string{"--receiver-only"}
	if _, err := recv.start(ctx); err != nil {
		return nil, err
	}
	recvProfiled := make(chan struct{})
	go func() {
		defer close(recvProfiled)
		if cfg.profileSeconds > 0 {
			r.recvProfile, _ = recv.profile(cfg.profileSeconds, cfg.workDir)
		}
	}()
	r.receiver = sendAll(ctx, recv, "recv", cfg.n, cfg.c)
	<-recvProfiled
	if err := recv.stop(); err != nil {
		return nil, err
	}
	if err := p.client.DeleteAllOf(ctx, &kidv1.KidEvent{}, client.InNamespace(benchNS)); err != nil {
		return nil, err
	}

	m := newManager(cfg.managerBin, p.kubeconfig)
	if _, err := m.start(ctx); err != nil {
		return nil, err
	}
	defer m.stop()
	if err := waitReady(ctx, p); err != nil {
		return nil, err
	}

	// End to end: n more distinct deliveries, to the full manager.
	log("end to end: %d deliveries at concurrency %d to the full manager", cfg.n, cfg.c)
	writesBefore := m.writes()
	profileDone := make(chan struct{}, 2)
	if cfg.profileSeconds > 0 {
		go func() {
			r.profile, _ = m.profile(cfg.profileSeconds, cfg.workDir)
			profileDone <- struct{}{}
		}()
		go func() {
			r.apiProfile, _ = p.apiServerProfile(ctx, cfg.profileSeconds, cfg.workDir)
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

	if !cfg.scale {
		return r, nil
	}
	// Scale: 10,000 events and users.
	more := 10000 - cfg.n
	if more > 0 {
		log("scale: %d more deliveries, to 10,000 events and users", more)
		sendAll(ctx, m, "fill", more, cfg.c)
		if err := waitApplied(ctx, m, 10000); err != nil {
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
		u.Labels = map[string]string{kidv1.ProductLabel: "bench"}
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

func waitReady(ctx context.Context, p *plane) error {
	for {
		prod := &kidv1.KidProduct{}
		if err := p.client.Get(ctx, client.ObjectKey{Namespace: benchNS, Name: "bench"}, prod); err != nil {
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

func (r *results) print(w io.Writer) {
	rate := func(d time.Duration) float64 { return float64(r.n) / d.Seconds() }
	recv := rate(r.receiver.elapsed)
	e2e := rate(r.e2e)
	fmt.Fprintf(w, "\n%-44s %12s %8s\n", "measure", "value", "x raw")
	row := func(name string, v float64, unit string, ratio float64) {
		rs := ""
		if ratio > 0 {
			rs = fmt.Sprintf("%.2f", ratio)
		}
		fmt.Fprintf(w, "%-44s %12s %8s\n", name, fmt.Sprintf("%.0f %s", v, unit), rs)
	}
	row(fmt.Sprintf("raw ceiling, C=%d", r.c), r.raw, "/s", 1)
	fmt.Fprintf(w, "%-44s %12s\n", "  create latency p50 / p99 / p99.9", fmt.Sprintf("%.1f / %.1f / %.1f ms",
		ms(percentile(r.rawLatencies, 0.50)), ms(percentile(r.rawLatencies, 0.99)), ms(percentile(r.rawLatencies, 0.999))))
	if r.rawHigh > 0 {
		row(fmt.Sprintf("raw ceiling, C=%d", r.cHigh), r.rawHigh, "/s", r.rawHigh/r.raw)
	}
	latencies := func(rr receiverRun) string {
		return fmt.Sprintf("%.1f / %.1f / %.1f ms", ms(percentile(rr.latencies, 0.50)), ms(percentile(rr.latencies, 0.99)), ms(percentile(rr.latencies, 0.999)))
	}
	row(fmt.Sprintf("receiver accepted, C=%d", r.c), recv, "/s", recv/r.raw)
	fmt.Fprintf(w, "%-44s %12s\n", "  ack latency p50 / p99 / p99.9", latencies(r.receiver))
	fmt.Fprintf(w, "%-44s %12d\n", "  non-200 answers", r.receiver.non200)
	busy := rate(r.receiverBusy.elapsed)
	row("receiver, controllers busy (e2e run)", busy, "/s", busy/r.raw)
	fmt.Fprintf(w, "%-44s %12s\n", "  ack latency p50 / p99 / p99.9", latencies(r.receiverBusy))
	fmt.Fprintf(w, "%-44s %12d\n", "  non-200 answers", r.receiverBusy.non200)
	row("end to end (every event Applied, user folded)", e2e, "/s", e2e/r.raw)
	fmt.Fprintf(w, "%-44s %12.2f\n", "API writes per event (manager)", r.writesPerEvent)
	fmt.Fprintf(w, "%-44s %12s\n", "client rate limiter wait, total", fmt.Sprintf("%.3f s", r.throttledSecs))
	for _, c := range []string{"kidevent", "kiduser", "kidproduct", "kidaction"} {
		fmt.Fprintf(w, "%-44s %12.0f\n", "reconcile errors ("+c+")", r.reconcileErrs[c])
	}
	if len(r.e2eTimeline) > 0 {
		fmt.Fprintf(w, "%-44s %v\n", "events applied, each second of the e2e run", r.e2eTimeline)
	}
	for _, s := range r.scale {
		fmt.Fprintf(w, "%-44s %12s\n", "scale: "+s.label, fmt.Sprintf("%d events, %d users", s.events, s.users))
		fmt.Fprintf(w, "%-44s %12s\n", "  manager RSS", fmt.Sprintf("%.0f MiB", mib(s.rssBytes)))
		fmt.Fprintf(w, "%-44s %12s\n", "  etcd database", fmt.Sprintf("%.0f MiB", mib(s.etcdBytes)))
		fmt.Fprintf(w, "%-44s %12s\n", "  ready after restart", fmt.Sprintf("%.1f s", s.readyAfter.Seconds()))
		fmt.Fprintf(w, "%-44s %12s\n", "  manager RSS after restart", fmt.Sprintf("%.0f MiB", mib(s.rssRestarted)))
	}
	if r.recvProfile != "" {
		fmt.Fprintf(w, "\nreceiver-only manager CPU profile during the receiver run (top):\n%s\n", indent(r.recvProfile))
	}
	if r.profile != "" {
		fmt.Fprintf(w, "\nmanager CPU profile during the e2e run (top):\n%s\n", indent(r.profile))
	}
	if r.apiProfile != "" {
		fmt.Fprintf(w, "\nkube-apiserver CPU profile during the e2e run (top):\n%s\n", indent(r.apiProfile))
	}
	rss10k := 0.0
	if len(r.scale) > 0 {
		rss10k = mib(r.scale[0].rssBytes)
	}
	fmt.Fprintf(w, "bench: raw=%.0f/s receiver=%.0f/s (%.2f) e2e=%.0f/s (%.2f) writes_per_event=%.2f p99_ack_ms=%.1f rss_mib_10k=%.0f\n",
		r.raw, recv, recv/r.raw, e2e, e2e/r.raw, r.writesPerEvent, ms(percentile(r.receiver.latencies, 0.99)), rss10k)
	if r.receiver.non200+r.receiverBusy.non200 > 0 {
		fmt.Fprintf(w, "bench: WARNING: %d non-200 answers\n", r.receiver.non200+r.receiverBusy.non200)
	}
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
