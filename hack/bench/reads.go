package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// The reads suite (-suite=reads, `make bench-reads`): the operator restarts
// over n players whose sessions are all overdue for their resync (a 304
// never moves syncedAt), against the simulator's fake k-ID answering every
// call after a latency. It measures the reads per second the manager
// achieves against the product's rate, and how long urgent reads (a
// kid.dev/requested-at, a Session.ChangePermissions webhook) wait behind
// the resync backlog.

// Bounds of the reads suite's flags.
const (
	maxReadWindow  = 30 * time.Minute
	maxReadUrgent  = 1000
	maxReadLatency = 10 * time.Second
)

type readsConfig struct {
	sessions    int
	rps         int
	latency     time.Duration
	interval    time.Duration
	urgent      int
	window      time.Duration
	concurrency int
	createC     int
	watchCache  bool
}

func (c readsConfig) validate() error {
	switch {
	case c.sessions < 1 || c.sessions > maxScalePoint:
		return fmt.Errorf("-read-sessions: %d is outside [1, %d]", c.sessions, maxScalePoint)
	case c.rps < 1 || c.rps > 500:
		return fmt.Errorf("-read-rps: %d is outside [1, 500], a product's requestsPerSecond", c.rps)
	case c.latency < 0 || c.latency > maxReadLatency:
		return fmt.Errorf("-read-latency: %s is outside [0, %s]", c.latency, maxReadLatency)
	case c.interval < time.Minute || c.interval > 720*time.Hour:
		return fmt.Errorf("-read-interval: %s is outside [1m, 720h], a product's sessionResync", c.interval)
	case c.urgent < 0 || c.urgent > maxReadUrgent:
		return fmt.Errorf("-read-urgent: %d is outside [0, %d]", c.urgent, maxReadUrgent)
	case c.window < 10*time.Second || c.window > maxReadWindow:
		return fmt.Errorf("-read-window: %s is outside [10s, %s]", c.window, maxReadWindow)
	case c.concurrency < 1 || c.concurrency > 1000:
		return fmt.Errorf("-read-concurrency: %d is outside [1, 1000]", c.concurrency)
	case c.createC < 1 || c.createC > maxCreateC:
		return fmt.Errorf("-create-c: %d is outside [1, %d]", c.createC, maxCreateC)
	}
	return nil
}

// readsRun is what the reads suite measured.
type readsRun struct {
	cfg        readsConfig
	readyAfter time.Duration
	reads      int     // reads of the players' sessions in the window
	readRate   float64 // reads per second over the window
	maxInOne   int     // most reads in any second of the window
	demand     float64 // sessions due per second by the restart's spread
	urgent     []urgentRead
}

// urgentRead is one urgent read: what asked for it and how long after the
// ask k-ID saw it. A read not made within urgentPatience is missed, and
// counts as waiting that long (a lower bound).
type urgentRead struct {
	via    string
	waited time.Duration
	missed bool
}

// urgentPatience is how long the bench waits for an urgent read before it
// records it missed and goes on: 60 times the goal's 2 s.
const urgentPatience = 2 * time.Minute

const readsAPISecret = "bench-api"

// runReads creates the players with the manager stopped, starts it (a
// restart over them), and measures the window that follows.
func runReads(ctx context.Context, cfg config, rc readsConfig) (readsRun, error) {
	run := readsRun{cfg: rc, demand: float64(rc.sessions) / rc.interval.Seconds()}
	p, err := startPlane(cfg.workDir, func(env *envtest.Environment) {
		env.ControlPlane.Etcd.Configure().Set("quota-backend-bytes", strconv.Itoa(8<<30))
		if !rc.watchCache {
			env.ControlPlane.GetAPIServer().Configure().Set("watch-cache", "false")
		}
	})
	if err != nil {
		return run, err
	}
	defer p.stop()
	m := newManager(cfg.managerBin, p.kubeconfig)
	m.readyTimeout = scaleReadyTimeout
	m.extraArgs = []string{"--api-read-concurrency=" + strconv.Itoa(rc.concurrency)}

	fake, addr, stopFake, err := serveBenchFake(ctx, m, benchNS)
	if err != nil {
		return run, err
	}
	defer stopFake()
	if err := fake.SetAPIFault(kidsim.AllEndpoints, kidsim.APIFault{Latency: rc.latency}); err != nil {
		return run, err
	}
	if err := createReadsProduct(ctx, p, "http://"+addr+"/api/v1", rc); err != nil {
		return run, err
	}

	log("reads: %d sessions at the fake k-ID, and their players (create, then status), at concurrency %d", rc.sessions, rc.createC)
	fake.SetDeliveryFault(kidsim.FaultDrop)
	ids := make([]string, rc.sessions)
	for i := range ids {
		ids[i] = "s-read-" + strconv.Itoa(i)
		if _, err := fake.ApproveChallenge(fake.StartChallenge(), kidsim.Approval{SessionID: ids[i]}); err != nil {
			return run, err
		}
	}
	etags := map[string]string{}
	for _, s := range fake.State().Sessions {
		etags[s.Session.SessionID] = s.Session.Etag
	}
	fake.SetDeliveryFault(kidsim.FaultNone)
	// Read twice the interval ago, and only 304s since: every session is
	// overdue when the manager starts.
	if err := createReadPlayers(ctx, p, ids, etags, time.Now().Add(-2*rc.interval), rc.createC); err != nil {
		return run, err
	}

	log("reads: starting the manager over %d overdue sessions (rate %d/s, k-ID answering in %s, resync every %s, %d readers)", rc.sessions, rc.rps, rc.latency, rc.interval, rc.concurrency)
	begin := time.Now()
	if run.readyAfter, err = m.start(ctx); err != nil {
		return run, err
	}
	defer func() { _ = m.stop() }()

	// The window opens at the first read; the urgent reads are asked for
	// at even steps through it, each for a player not read yet.
	var opened time.Time
	for opened.IsZero() {
		if reads := playerReads(fake, begin); len(reads) > 0 {
			opened = reads[0].At
			break
		}
		if time.Since(begin) > scaleReadyTimeout {
			return run, fmt.Errorf("no session read %s after the start", scaleReadyTimeout)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return run, err
		}
	}
	// Each urgent read is asked for at its step whatever the earlier ones
	// wait: 1,000 of them arrive during the resync as a game's would, not
	// one after another.
	step := rc.window / time.Duration(rc.urgent+1)
	urgent := newUrgentReads(fake, ids)
	stopWatch := urgent.watch(ctx)
	results := make([]urgentRead, rc.urgent)
	errs := make([]error, rc.urgent)
	var wg sync.WaitGroup
	for k := range rc.urgent {
		if err := sleep(ctx, time.Until(opened.Add(time.Duration(k+1)*step))); err != nil {
			return run, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[k], errs[k] = urgent.ask(ctx, p, k)
			switch {
			case errs[k] != nil:
			case results[k].missed:
				log("reads: urgent read %d (%s) not made within %s: counted missed", k+1, results[k].via, urgentPatience)
			case rc.urgent <= 100 || (k+1)%100 == 0:
				log("reads: urgent read %d (%s) made %s after it was asked for", k+1, results[k].via, results[k].waited.Round(time.Millisecond))
			}
		}()
	}
	wg.Wait()
	stopWatch()
	for k := range rc.urgent {
		if errs[k] != nil {
			return run, errs[k]
		}
	}
	run.urgent = results
	if err := sleep(ctx, time.Until(opened.Add(rc.window))); err != nil {
		return run, err
	}
	var times []time.Time
	for _, r := range playerReads(fake, opened) {
		if r.At.Before(opened.Add(rc.window)) {
			times = append(times, r.At)
		}
	}
	run.reads = len(times)
	run.readRate = float64(len(times)) / rc.window.Seconds()
	run.maxInOne = kidsim.MaxInWindow(times, time.Second)
	return run, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// createReadsProduct makes the product "bench" with spec.api at the fake.
func createReadsProduct(ctx context.Context, p *plane, baseURL string, rc readsConfig) error {
	if err := p.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNS}}); err != nil {
		return err
	}
	for name, data := range map[string]map[string]string{"bench-webhook": {"current": secret}, readsAPISecret: {"key": "bench-api-key"}} {
		if err := p.client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNS, Labels: kidv1.SecretLabels()}, StringData: data}); err != nil {
			return err
		}
	}
	rps := int32(rc.rps)
	return p.client.Create(ctx, &kidv1.KidProduct{
		ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: benchNS},
		Spec: kidv1.KidProductSpec{
			ProductID: 11472, Environment: kidv1.EnvironmentTest,
			Webhook: kidv1.WebhookSpec{SecretRef: kidv1.LocalObjectReference{Name: "bench-webhook"}},
			API: &kidv1.APISpec{
				SecretRef: kidv1.SecretKeySelector{Name: readsAPISecret, Key: "key"},
				BaseURL:   baseURL, RequestsPerSecond: &rps,
				SessionResync: &metav1.Duration{Duration: rc.interval},
			},
		},
	})
}

// createReadPlayers creates the players as a consent and a read leave them:
// labelled, their session Active with k-ID's etag (a read is a 304) and
// syncedAt.
func createReadPlayers(ctx context.Context, p *plane, ids []string, etags map[string]string, synced time.Time, c int) error {
	product := &kidv1.KidProduct{}
	if err := p.client.Get(ctx, client.ObjectKey{Namespace: benchNS, Name: "bench"}, product); err != nil {
		return err
	}
	var failed, made atomic.Int64
	var firstErr atomic.Value
	// At 250,000 players this takes a quarter of an hour or more: say how
	// far it has come once a minute.
	stopProgress := every(time.Minute, func(d time.Duration) {
		log("reads: %d of %d players after %.0f s", made.Load(), len(ids), d.Seconds())
	})
	elapsed := parallel(len(ids), c, func(i int) {
		if ctx.Err() != nil || failed.Load() > 0 {
			return
		}
		id := ids[i]
		u := &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{
				Name: kidv1.UserName("bench", kidv1.IdentitySession, id), Namespace: benchNS,
				// As the operator labels a session's player.
				Labels:          map[string]string{kidv1.ProductLabel: "bench", kidv1.IDLabel(id): ""},
				OwnerReferences: []metav1.OwnerReference{product.OwnerReference()},
			},
			Spec: kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "bench"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: id}},
		}
		err := p.client.Create(ctx, u)
		if err == nil {
			u.Status.SessionID = id
			u.Status.Session = kidv1.SessionStatus{State: kidv1.SessionActive, Status: "ACTIVE", ETag: etags[id], SyncedAt: &metav1.Time{Time: synced}}
			err = p.client.Status().Update(ctx, u)
		}
		if err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, fmt.Errorf("player %d: %w", i, err))
			return
		}
		made.Add(1)
	})
	stopProgress()
	if err, _ := firstErr.Load().(error); err != nil {
		return fmt.Errorf("%d players failed, the first: %w", failed.Load(), err)
	}
	log("reads: %d players in %.0f s", len(ids), elapsed.Seconds())
	return ctx.Err()
}

// playerReads lists the fake's reads of the players' sessions since t.
func playerReads(fake *kidsim.Fake, since time.Time) []kidsim.APIRequest {
	var out []kidsim.APIRequest
	for _, r := range fake.Requests() {
		if r.Endpoint == kidsim.EndpointSessionGet && !r.At.Before(since) && strings.HasPrefix(r.Query.Get("sessionId"), "s-read-") {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b kidsim.APIRequest) int { return a.At.Compare(b.At) })
	return out
}

// urgentReads asks for urgent reads, each of a player the resync has not
// read yet and no other urgent read took, and sees them made in the fake's
// request log.
type urgentReads struct {
	fake *kidsim.Fake
	ids  []string
	mu   sync.Mutex
	// taken are the players an urgent read was asked for.
	taken map[string]bool
	// waiting are the urgent reads not yet made, by session.
	waiting map[string]*pendingUrgent
}

type pendingUrgent struct {
	via   string
	asked time.Time
	made  chan urgentRead
}

func newUrgentReads(fake *kidsim.Fake, ids []string) *urgentReads {
	return &urgentReads{fake: fake, ids: ids, taken: map[string]bool{}, waiting: map[string]*pendingUrgent{}}
}

// watch reads the fake's request log every 50 ms and hands each waiting
// urgent read its first read of the player after it was asked for (the
// wait is the fake's own timestamp less the ask's, so the polling does not
// add to it). It returns a function that stops it.
func (u *urgentReads) watch(ctx context.Context) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for sleep(ctx, 50*time.Millisecond) == nil {
			u.mu.Lock()
			n := len(u.waiting)
			u.mu.Unlock()
			if n == 0 {
				continue
			}
			for _, r := range playerReads(u.fake, time.Time{}) {
				id := r.Query.Get("sessionId")
				u.mu.Lock()
				if w := u.waiting[id]; w != nil && !w.asked.IsZero() && !r.At.Before(w.asked) {
					w.made <- urgentRead{via: w.via, waited: r.At.Sub(w.asked)}
					delete(u.waiting, id)
				}
				u.mu.Unlock()
			}
		}
	}()
	return func() { cancel(); <-done }
}

// pick returns a player the resync has not read and no urgent read took,
// from the end of the list: the players least likely to be read soon by
// chance.
func (u *urgentReads) pick() string {
	read := map[string]bool{}
	for _, r := range playerReads(u.fake, time.Time{}) {
		read[r.Query.Get("sessionId")] = true
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := len(u.ids) - 1; i >= 0; i-- {
		if id := u.ids[i]; !read[id] && !u.taken[id] {
			u.taken[id] = true
			return id
		}
	}
	return ""
}

// ask asks for the k-th urgent read: every other one through
// kid.dev/requested-at, the others through a parent's permission change at
// the fake, whose webhook the manager folds. It returns how long after the
// ask k-ID saw the read.
func (u *urgentReads) ask(ctx context.Context, p *plane, k int) (urgentRead, error) {
	id := u.pick()
	if id == "" {
		return urgentRead{}, fmt.Errorf("every player was read before urgent read %d: lengthen -read-window or add -read-sessions", k+1)
	}
	w := &pendingUrgent{via: "requested-at", made: make(chan urgentRead, 1)}
	if k%2 != 0 {
		w.via = "ChangePermissions"
	}
	u.mu.Lock()
	u.waiting[id] = w
	u.mu.Unlock()
	setAsked := func() {
		u.mu.Lock()
		w.asked = time.Now()
		u.mu.Unlock()
	}
	if w.via == "requested-at" {
		user := &kidv1.KidUser{}
		if err := p.client.Get(ctx, client.ObjectKey{Namespace: benchNS, Name: kidv1.UserName("bench", kidv1.IdentitySession, id)}, user); err != nil {
			return urgentRead{}, err
		}
		patch := client.MergeFrom(user.DeepCopy())
		setAsked()
		user.Annotations = map[string]string{kidv1.RequestedAtAnnotation: time.Now().Format(time.RFC3339Nano)}
		if err := p.client.Patch(ctx, user, patch); err != nil {
			return urgentRead{}, err
		}
	} else {
		setAsked()
		if err := u.fake.SetPermission(id, "text-chat-private", true); err != nil {
			return urgentRead{}, err
		}
	}
	select {
	case r := <-w.made:
		return r, nil
	case <-time.After(urgentPatience):
		u.mu.Lock()
		delete(u.waiting, id)
		u.mu.Unlock()
		return urgentRead{via: w.via, waited: urgentPatience, missed: true}, nil
	case <-ctx.Done():
		return urgentRead{}, ctx.Err()
	}
}

func printReads(w io.Writer, r readsRun) {
	var waits []time.Duration
	missed := 0
	for _, u := range r.urgent {
		waits = append(waits, u.waited)
		if u.missed {
			missed++
		}
	}
	var p50, p99, most time.Duration
	if len(waits) > 0 {
		p50, p99, most = percentile(waits, 0.5), percentile(waits, 0.99), slices.Max(waits)
	}
	c := r.cfg
	ratio := r.readRate / float64(c.rps)
	fmt.Fprintf(w, "\n| sessions overdue at start | rate (/s) | k-ID latency (ms) | resync interval | readers | due by the spread (/s) | reads (/s) | of the rate | most in 1 s | urgent reads | missed (over 2 min) | urgent wait p50 / p99 / max (ms) | ready after start (s) |\n")
	fmt.Fprintf(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	fmt.Fprintf(w, "| %d | %d | %.0f | %s | %d | %.0f | %.1f | %.2f | %d | %d | %d | %.1f / %.1f / %.1f | %.1f |\n\n",
		c.sessions, c.rps, ms(c.latency), c.interval, c.concurrency, float64(c.sessions)/c.interval.Seconds(), r.readRate, ratio, r.maxInOne, len(r.urgent), missed, ms(p50), ms(p99), ms(most), r.readyAfter.Seconds())
	fmt.Fprintf(w, "reads: sessions=%d rps=%d latency_ms=%.0f interval=%s readers=%d window_s=%.0f reads=%d read_rps=%.1f read_ratio=%.2f max_1s=%d demand_rps=%.1f urgent=%d urgent_missed=%d urgent_p50_ms=%.1f urgent_p99_ms=%.1f urgent_max_ms=%.1f ready_s=%.1f\n",
		c.sessions, c.rps, ms(c.latency), c.interval, c.concurrency, c.window.Seconds(), r.reads, r.readRate, ratio, r.maxInOne, r.demand, len(r.urgent), missed, ms(p50), ms(p99), ms(most), r.readyAfter.Seconds())
}
