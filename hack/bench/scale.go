package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/fold"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

// Bounds of the scale benchmark's flags: a point above maxScalePoint would
// take hours to create on a laptop-sized control plane, and more points than
// maxScalePoints would not fit one run.
const (
	maxScalePoint  = 1_000_000
	maxScalePoints = 10
	maxFoldEvents  = 10_000
	maxCreateC     = 256
	maxFoldC       = 64
	maxScaleEvents = 100_000 // the bench product's retention.maxEvents
	// scaleReadyTimeout bounds a start over a point's players: at 250,000
	// under GOMEMLIMIT the initial lists took more than 2 minutes.
	scaleReadyTimeout = 15 * time.Minute
	// heapProfileAt is the size at which -heap-profile takes the manager's
	// heap profile (the point nearest to it).
	heapProfileAt = 100_000
)

type scaleConfig struct {
	points      []int
	createC     int
	foldEvents  int
	foldC       int
	heapProfile bool
	// events are KidEvents stored (applied, each about a player) beside
	// the players, created before the first point.
	events int
	// watchCache off starts kube-apiserver with --watch-cache=false. Its
	// watch cache holds every player decoded (kube-apiserver held 7.8 GiB
	// at 100,000 players with it), which on a 24 GiB machine leaves no
	// room for 250,000; without it, lists and watches are served from etcd.
	// The manager's figures are its own either way.
	watchCache bool
	// kubectl off skips the kubectl lists (at 250,000 players each takes
	// many minutes and gigabytes of kubectl's memory).
	kubectl bool
	// lookupProfileSeconds, when above 0, profiles kube-apiserver's CPU
	// for that long at the largest point while lookups repeat, after the
	// timed ones: where a lookup's time goes (issue #24 asks a goal not
	// met for its profile).
	lookupProfileSeconds int
	// startProfileSeconds, when above 0, adds a third restart at the
	// largest point, not counted in the line: kube-apiserver's and the
	// manager's CPU profiles over its first startProfileSeconds.
	startProfileSeconds int
}

// parsePoints reads -points: ascending player counts, comma separated.
func parsePoints(s string) ([]int, error) {
	var points []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("-points: %q is not a number", f)
		}
		if n < 1 || n > maxScalePoint {
			return nil, fmt.Errorf("-points: %d is outside [1, %d]", n, maxScalePoint)
		}
		if len(points) > 0 && n <= points[len(points)-1] {
			return nil, fmt.Errorf("-points: %d does not follow %d; give the points in ascending order", n, points[len(points)-1])
		}
		points = append(points, n)
	}
	if len(points) > maxScalePoints {
		return nil, fmt.Errorf("-points: %d points, at most %d", len(points), maxScalePoints)
	}
	return points, nil
}

func (c scaleConfig) validate() error {
	switch {
	case c.createC < 1 || c.createC > maxCreateC:
		return fmt.Errorf("-create-c: %d is outside [1, %d]", c.createC, maxCreateC)
	case c.foldEvents < 1 || c.foldEvents > maxFoldEvents:
		return fmt.Errorf("-fold-events: %d is outside [1, %d]", c.foldEvents, maxFoldEvents)
	case c.foldC < 1 || c.foldC > maxFoldC:
		return fmt.Errorf("-fold-c: %d is outside [1, %d]", c.foldC, maxFoldC)
	case c.events < 0 || c.events > maxScaleEvents:
		return fmt.Errorf("-events: %d is outside [0, %d]", c.events, maxScaleEvents)
	case c.events > c.points[0]:
		return fmt.Errorf("-events: %d events are each about a player, and the first point has %d", c.events, c.points[0])
	case c.lookupProfileSeconds < 0 || c.lookupProfileSeconds > maxProfileSeconds:
		return fmt.Errorf("-lookup-profile-seconds: %d is outside [0, %d]", c.lookupProfileSeconds, maxProfileSeconds)
	case c.startProfileSeconds < 0 || c.startProfileSeconds > maxProfileSeconds:
		return fmt.Errorf("-start-profile-seconds: %d is outside [0, %d]", c.startProfileSeconds, maxProfileSeconds)
	}
	return nil
}

// playerPoint is what the scale benchmark measured at one number of players.
type playerPoint struct {
	users          int
	events         int     // KidEvents stored beside the players
	kubectlErr     string  // why a kubectl list failed, if one did
	createRate     float64 // players (create + status) per second to reach it
	etcdBytes      int64
	getAll         time.Duration
	getLabel       time.Duration
	readyAfter     time.Duration // with GOMEMLIMIT, the Deployment's setting
	rss, heap      int64         // settled, with GOMEMLIMIT
	peakRSS        int64         // VmHWM: the start's initial lists
	rssNoLimit     int64         // settled, without GOMEMLIMIT
	heapNoLimit    int64
	peakNoLimit    int64
	foldP50        time.Duration
	foldP99        time.Duration
	foldLatencies  []time.Duration
	heapProfileTop string
	// lookupProfileTop is kube-apiserver's CPU profile during lookups.
	lookupProfileTop string
	// startProfileAPIServer and startProfileManager are the profiled
	// restart's.
	startProfileAPIServer, startProfileManager string
	apiServerRSS                               int64 // kube-apiserver's resident memory, after the lists
	etcdRSS                                    int64 // etcd's resident memory, after the lists
	// baseAPIServerRSS and baseEtcdRSS are the two before any player:
	// what a player costs each is the growth over them.
	baseAPIServerRSS, baseEtcdRSS int64
	userBytes                     int64           // a player's value in etcd, mean of a few
	lookups                       []lookup        // kubectl kid user by each kind of id
	restarts                      []time.Duration // the largest point's two restarts, ready after
	// startCPU and restartCPU are the CPU time each process spent on the
	// first start and on each restart.
	startCPU   startCPU
	restartCPU []startCPU
	// stopped says why the run stopped at this point, which it measured
	// only in part.
	stopped string
}

// perUser is the growth of a process's resident memory over its base,
// per player, in KiB.
func perUser(rss, base int64, users int) float64 {
	if rss == 0 || base == 0 || users == 0 {
		return 0
	}
	return float64(rss-base) / 1024 / float64(users)
}

// runScale grows one product's players to each point and measures the
// manager, etcd and kubectl at each.
func runScale(ctx context.Context, cfg config, sc scaleConfig) ([]playerPoint, error) {
	p, err := startPlane(cfg.workDir, func(env *envtest.Environment) {
		// Each player is two revisions (its create and its status), and
		// etcd's file is not defragmented: 250,000 players pass etcd's
		// default quota of 2 GiB.
		env.ControlPlane.Etcd.Configure().Set("quota-backend-bytes", strconv.Itoa(8<<30))
		if !sc.watchCache {
			env.ControlPlane.GetAPIServer().Configure().Set("watch-cache", "false")
		}
	})
	if err != nil {
		return nil, err
	}
	defer p.stop()
	if err := createProduct(ctx, p); err != nil {
		return nil, err
	}
	product := &kidv1.KidProduct{}
	if err := p.client.Get(ctx, client.ObjectKey{Namespace: benchNS, Name: "bench"}, product); err != nil {
		return nil, err
	}
	if err := createLookupStandIn(ctx, p, product); err != nil {
		return nil, err
	}
	baseAPIServer, baseEtcd := p.apiServerRSS(ctx), p.etcdRSS(ctx)
	// The profile is taken at the point nearest to heapProfileAt.
	profileAt := -1
	if sc.heapProfile {
		for i, n := range sc.points {
			if profileAt < 0 || abs(n-heapProfileAt) < abs(sc.points[profileAt]-heapProfileAt) {
				profileAt = i
			}
		}
	}

	var out []playerPoint
	have := 0
	for i, n := range sc.points {
		pt := playerPoint{users: n, baseAPIServerRSS: baseAPIServer, baseEtcdRSS: baseEtcd}
		// stop ends the run at this point: what it measured is printed,
		// with why it stopped.
		stop := func(err error) ([]playerPoint, error) {
			pt.stopped = err.Error()
			printPlayerLine(os.Stdout, pt)
			return append(out, pt), err
		}
		// Players are created with the manager stopped: the machine's two
		// cores go to the API server, and the manager's start at the point
		// is then a restart over n players.
		log("players: creating %d more (create, then status), to %d, at concurrency %d", n-have, n, sc.createC)
		elapsed, err := createPlayers(ctx, p, product, have, n, sc.createC)
		if err != nil {
			return stop(err)
		}
		pt.createRate = float64(n-have) / elapsed.Seconds()
		if i == 0 && sc.events > 0 {
			log("events: creating %d applied KidEvents, each about a player", sc.events)
			if err := createEvents(ctx, p, product, sc.events, sc.createC); err != nil {
				return stop(err)
			}
		}
		pt.events = sc.events
		have = n
		pt.etcdBytes = p.etcdBytes()

		if sc.kubectl {
			log("players=%d: kubectl get kidusers -A, and by label", n)
			// A list that fails is a figure too (at 250,000 players without
			// the watch cache, a page's continue token outlived etcd's
			// compaction): reported, and the point goes on.
			// n players and the lookups' verification stand-in.
			if pt.getAll, err = kubectlGet(ctx, p, n+1, "get", "kidusers", "-A"); err != nil {
				log("players=%d: %v", n, err)
				pt.kubectlErr = err.Error()
			} else if pt.getLabel, err = kubectlGet(ctx, p, n+1, "get", "kidusers", "-A", "-l", kidv1.ProductLabel+"=bench"); err != nil {
				log("players=%d: %v", n, err)
				pt.kubectlErr = err.Error()
			}
		}
		pt.apiServerRSS, pt.etcdRSS = p.apiServerRSS(ctx), p.etcdRSS(ctx)
		if pt.userBytes, err = p.storedUserBytes(ctx, sampleUsers(n)); err != nil {
			return stop(err)
		}
		// The newest player: no fold of an earlier point touched it.
		log("players=%d: kubectl kid user by challenge, verification and kuid", n)
		pt.lookups = timeLookups(ctx, p, n-1)
		if why := lookupFailed(pt.lookups); why != "" {
			log("players=%d: %s", n, why)
		} else if i == len(sc.points)-1 && sc.lookupProfileSeconds > 0 {
			log("players=%d: kube-apiserver's CPU profile over %d s of lookups", n, sc.lookupProfileSeconds)
			if pt.lookupProfileTop, err = profileLookups(ctx, p, n-1, sc.lookupProfileSeconds, cfg.workDir); err != nil {
				log("players=%d: lookup profile: %v", n, err)
			} else {
				// Printed now too, so a long run stopped later keeps it.
				fmt.Printf("# players=%d: kube-apiserver during lookups (top, cumulative):\n%s\n", n, indent(pt.lookupProfileTop))
			}
		}

		log("players=%d: starting the manager (GOMEMLIMIT=%s)", n, memoryLimit)
		m := newManager(cfg.managerBin, p.kubeconfig)
		m.readyTimeout = scaleReadyTimeout
		if pt.readyAfter, pt.startCPU, err = timedStart(ctx, p, m); err != nil {
			return stop(err)
		}
		if pt.rss, pt.heap, pt.peakRSS, err = settledMemory(ctx, m); err != nil {
			_ = m.stop()
			return stop(err)
		}
		log("players=%d: %d folds into existing players, at concurrency %d", n, sc.foldEvents, sc.foldC)
		if pt.foldLatencies, err = foldLatencies(ctx, p, m, n, sc.foldEvents, sc.foldC); err != nil {
			_ = m.stop()
			return stop(err)
		}
		pt.foldP50, pt.foldP99 = percentile(pt.foldLatencies, 0.50), percentile(pt.foldLatencies, 0.99)
		if i == profileAt {
			log("players=%d: heap profile", n)
			if pt.heapProfileTop, err = heapProfile(m, filepath.Join(cfg.workDir, fmt.Sprintf("manager-%d.heap.pprof", n))); err != nil {
				_ = m.stop()
				return stop(err)
			}
			// Printed now too, so a long run stopped later keeps it.
			fmt.Printf("# players=%d: heap profile (top 15):\n%s\n", n, indent(pt.heapProfileTop))
		}
		_ = m.stop()

		if i == len(sc.points)-1 {
			// A restart at the largest point, twice: a Deployment's
			// manager restarts over every player (a rollout, an eviction).
			for k := range 2 {
				log("players=%d: restart %d of the manager (GOMEMLIMIT=%s)", n, k+1, memoryLimit)
				m = newManager(cfg.managerBin, p.kubeconfig)
				m.readyTimeout = scaleReadyTimeout
				took, cpu, err := timedStart(ctx, p, m)
				_ = m.stop()
				if err != nil {
					return stop(fmt.Errorf("restart %d: %w", k+1, err))
				}
				pt.restarts = append(pt.restarts, took)
				pt.restartCPU = append(pt.restartCPU, cpu)
			}
			if sc.startProfileSeconds > 0 {
				log("players=%d: a third restart, profiled for %d s (not in the line)", n, sc.startProfileSeconds)
				m = newManager(cfg.managerBin, p.kubeconfig)
				m.readyTimeout = scaleReadyTimeout
				pt.startProfileAPIServer, pt.startProfileManager, err = profiledStart(ctx, p, m, sc.startProfileSeconds, cfg.workDir)
				if err != nil {
					log("players=%d: start profile: %v", n, err)
				}
				fmt.Printf("# players=%d: a start's first %d s, kube-apiserver (top, cumulative):\n%s\n# the manager:\n%s\n", n, sc.startProfileSeconds, indent(pt.startProfileAPIServer), indent(pt.startProfileManager))
			}
		}

		log("players=%d: starting the manager without GOMEMLIMIT", n)
		m = newManager(cfg.managerBin, p.kubeconfig)
		m.noMemoryLimit = true
		m.readyTimeout = scaleReadyTimeout
		if _, err := m.start(ctx); err != nil {
			return stop(err)
		}
		pt.rssNoLimit, pt.heapNoLimit, pt.peakNoLimit, err = settledMemory(ctx, m)
		_ = m.stop()
		if err != nil {
			return stop(err)
		}
		out = append(out, pt)
		printPlayerLine(os.Stdout, pt)
	}
	return out, nil
}

func abs(x int) int { return max(x, -x) }

// playerIDs are the k-ID ids of the i-th player.
func playerIDs(i int) (session, kuid, challenge, verification string) {
	id := strconv.Itoa(i)
	return "s-scale-" + id, "k-scale-" + id, "c-scale-" + id, "v-scale-" + id
}

// playerStatus is the status the controllers would have folded for a
// player who passed a consent challenge, was age-verified and whose session
// was read from k-ID: consent Granted with its challenge, a verification
// record, a session with permissions, and the last event still named in
// inFlightEvents (it is pruned only at the next fold).
func playerStatus(u *kidv1.KidUser, i int, now time.Time) (*kidv1.KidUserStatus, error) {
	session, kuid, challenge, verification := playerIDs(i)
	st := &kidv1.KidUserStatus{}
	events := []struct {
		typ     string
		fields  kidsim.Fields
		subject kidv1.EventSubject
	}{
		{kid.ChallengeStateChange, kidsim.Fields{ID: challenge, ChallengeID: challenge, Status: kid.StatusPass, SessionID: session, KUID: kuid, ProductID: 11472},
			kidv1.EventSubject{SessionID: session, KUID: kuid, ChallengeID: challenge}},
		{kid.VerificationResult, kidsim.Fields{ID: verification, Status: kid.StatusPass, Method: "age-estimation", AgeLow: 13, AgeHigh: 15, AgeCategory: "TEEN"},
			kidv1.EventSubject{VerificationIDs: []string{verification}}},
		{kid.SessionChangePermissions, kidsim.Fields{SessionID: session, KUID: kuid, ProductID: 11472},
			kidv1.EventSubject{SessionID: session, KUID: kuid}},
	}
	for k, ev := range events {
		body, err := kidsim.Build(ev.typ, ev.fields)
		if err != nil {
			return nil, err
		}
		env, err := kid.ParseEnvelope(body)
		if err != nil {
			return nil, err
		}
		fe := &fold.Event{
			Name: fmt.Sprintf("bench-seed-%d-%d", i, k), Type: env.EventType, Subject: ev.subject,
			SignedAt: now.Add(time.Duration(k-3) * time.Minute), Payload: env.Payload,
		}
		st = fold.Apply(st, fe, kid.Privacy{}, string(u.UID))
	}
	st = fold.Merge(st, fold.SyncDelta(&fold.Session{
		SessionID: session, KUID: kuid, AgeStatus: "CONSENT_GRANTED", Jurisdiction: "US-CA", Status: "ACTIVE",
		ETag: `W/"` + strconv.Itoa(i) + `"`, At: now,
		Permissions: []kidv1.SessionPermission{
			{Name: "chat", Enabled: false, ManagedBy: "GUARDIAN"},
			{Name: "multiplayer", Enabled: true, ManagedBy: "GUARDIAN"},
			{Name: "purchases", Enabled: false, ManagedBy: "GUARDIAN"},
			{Name: "user-generated-content", Enabled: true, ManagedBy: "PLAYER"},
		},
	}, kid.Privacy{}))
	st.InFlightEvents = st.InFlightEvents[len(st.InFlightEvents)-1:]
	at := metav1.NewTime(now)
	for _, c := range []struct {
		typ, reason, msg string
	}{
		{kidv1.ConsentGrantedCondition, kidv1.ConsentReason, "consent is Granted"},
		{kidv1.AgeVerifiedCondition, kidv1.VerificationReason, "verification is " + string(st.Verification.State)},
		{kidv1.SessionActiveCondition, kidv1.SessionReason, "session is Active"},
	} {
		st.Conditions = append(st.Conditions, metav1.Condition{Type: c.typ, Status: metav1.ConditionTrue, Reason: c.reason, Message: c.msg, LastTransitionTime: at})
	}
	return st, nil
}

// createPlayers creates players [from, to) as the KidEvent controller
// creates them (labelled, owned by the product), then writes each one's
// folded status, and returns the time taken.
func createPlayers(ctx context.Context, p *plane, product *kidv1.KidProduct, from, to, c int) (time.Duration, error) {
	var done, failed atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	defer every(30*time.Second, func(time.Duration) {
		log("players: %d of %d", from+int(done.Load()), to)
	})()
	now := time.Now()
	elapsed := parallel(to-from, c, func(k int) {
		if ctx.Err() != nil || failed.Load() > 0 {
			return
		}
		i := from + k
		session, kuid, challenge, verification := playerIDs(i)
		u := &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{
				Name: kidv1.UserName("bench", kidv1.IdentitySession, session), Namespace: benchNS,
				// As the operator labels a player (its ids), so that
				// no start labels the bench's players.
				Labels:          kidv1.WithIDLabels(map[string]string{kidv1.ProductLabel: "bench"}, []string{session, kuid, challenge, verification}),
				OwnerReferences: []metav1.OwnerReference{product.OwnerReference()},
			},
			Spec: kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "bench"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: session}},
		}
		if err := p.client.Create(ctx, u); err != nil {
			fail(fmt.Errorf("creating player %d: %w", i, err))
			return
		}
		before := u.DeepCopy()
		st, err := playerStatus(u, i, now)
		if err != nil {
			fail(err)
			return
		}
		u.Status = *st
		if !kidv1.IDLabelsCover(u.Labels, u.HeldIDs()) {
			fail(fmt.Errorf("player %d holds other ids than its labels name: %v", i, u.HeldIDs()))
			return
		}
		if err := p.client.Status().Patch(ctx, u, client.MergeFrom(before)); err != nil {
			fail(fmt.Errorf("writing player %d's status: %w", i, err))
			return
		}
		done.Add(1)
	})
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, fmt.Errorf("%d players failed, the first: %w", failed.Load(), err)
	}
	return elapsed, ctx.Err()
}

// createEvents stores n KidEvents as a product's history holds them: each a
// permission change of player i's session, built by the receiver's own
// code, and Applied to that player. Nothing is left for the manager to do.
func createEvents(ctx context.Context, p *plane, product *kidv1.KidProduct, n, c int) error {
	var failed atomic.Int64
	var firstErr atomic.Value
	now := time.Now()
	parallel(n, c, func(i int) {
		if ctx.Err() != nil || failed.Load() > 0 {
			return
		}
		err := func() error {
			session, kuid, _, _ := playerIDs(i)
			body, err := kidsim.Build(kid.SessionChangePermissions, kidsim.Fields{SessionID: session, KUID: kuid, ProductID: 11472})
			if err != nil {
				return err
			}
			env, err := kid.ParseEnvelope(body)
			if err != nil {
				return err
			}
			e, err := inbox.Build(product, env, body, now, now, kidv1.SourceWebhook)
			if err != nil {
				return err
			}
			if err := p.client.Create(ctx, e); err != nil {
				return fmt.Errorf("creating event %d: %w", i, err)
			}
			e.Status.Phase = kidv1.EventApplied
			e.Status.UserRef = &kidv1.LocalObjectReference{Name: kidv1.UserName("bench", kidv1.IdentitySession, session)}
			e.Status.AppliedAt = &metav1.Time{Time: now}
			if err := p.client.Status().Update(ctx, e); err != nil {
				return fmt.Errorf("applying event %d: %w", i, err)
			}
			return nil
		}()
		if err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err)
		}
	})
	if err, _ := firstErr.Load().(error); err != nil {
		return fmt.Errorf("%d events failed, the first: %w", failed.Load(), err)
	}
	return ctx.Err()
}

// kubectlGet times one kubectl command against the bench's control plane
// ($KUBECTL, else kubectl on PATH) and checks it listed every player.
func kubectlGet(ctx context.Context, p *plane, want int, args ...string) (time.Duration, error) {
	bin := os.Getenv("KUBECTL")
	if bin == "" {
		bin = "kubectl"
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+p.kubeconfig)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("%s: %w", bin, err)
	}
	// Counting the lines reads the output as a terminal would, so the time
	// includes kubectl's printing.
	lines := 0
	s := bufio.NewScanner(stdout)
	for s.Scan() {
		lines++
	}
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, stderr.String())
	}
	took := time.Since(begin)
	if lines-1 != want {
		return 0, fmt.Errorf("%s %s listed %d players, want %d", bin, strings.Join(args, " "), lines-1, want)
	}
	return took, nil
}

// settledMemory waits until the manager's work queues are empty (the start
// enqueues every player), lets it idle a few seconds, and reads its
// resident memory, Go heap in use and peak resident memory.
func settledMemory(ctx context.Context, m *manager) (rss, heap, peak int64, err error) {
	deadline := time.Now().Add(10 * time.Minute)
	for m.metric("workqueue_depth") > 0 || m.metric("go_memstats_heap_inuse_bytes") == 0 {
		if time.Now().After(deadline) {
			return 0, 0, 0, errors.New("the manager's work queues did not empty in 10 minutes")
		}
		select {
		case <-ctx.Done():
			return 0, 0, 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	time.Sleep(5 * time.Second)
	return m.rssBytes(), int64(m.metric("go_memstats_heap_inuse_bytes")), m.procStatus("VmHWM:"), nil
}

// foldLatencies sends n signed Challenge.StateChange deliveries (a new
// challenge passed) for existing players' sessions through the receiver,
// c at a time, each worker waiting for its event to be Applied before the
// next, and returns each one's time from send to Applied as seen on a
// watch of the KidEvents.
func foldLatencies(ctx context.Context, p *plane, m *manager, players, n, c int) ([]time.Duration, error) {
	wc, err := client.NewWithWatch(p.cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return nil, err
	}
	w, err := wc.Watch(ctx, &kidv1.KidEventList{}, client.InNamespace(benchNS))
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	var mu sync.Mutex
	waiting := map[string]chan time.Time{}
	go func() {
		for ev := range w.ResultChan() {
			e, ok := ev.Object.(*kidv1.KidEvent)
			if !ok || e.Status.Phase != kidv1.EventApplied {
				continue
			}
			mu.Lock()
			if ch := waiting[e.Spec.Subject.ChallengeID]; ch != nil {
				ch <- time.Now()
				delete(waiting, e.Spec.Subject.ChallengeID)
			}
			mu.Unlock()
		}
	}()

	url := "http://" + m.webhook + kidv1.WebhookPath(benchNS, "bench")
	s := kidsim.NewSender(url, []byte(secret))
	s.Client = &http.Client{Timeout: 30 * time.Second}
	lat := make([]time.Duration, n)
	var failed atomic.Int64
	var firstErr atomic.Value
	parallel(n, c, func(k int) {
		if failed.Load() > 0 {
			return
		}
		// Players spread over the whole range, each once.
		i := int(int64(k) * int64(players) / int64(n))
		session, kuid, _, _ := playerIDs(i)
		challenge := fmt.Sprintf("c-fold-%d-%d", players, k)
		body, err := kidsim.Build(kid.ChallengeStateChange, kidsim.Fields{
			ID: challenge, ChallengeID: challenge, Status: kid.StatusPass, SessionID: session, KUID: kuid, ProductID: 11472,
		})
		if err != nil {
			panic(err)
		}
		applied := make(chan time.Time, 1)
		mu.Lock()
		waiting[challenge] = applied
		mu.Unlock()
		begin := time.Now()
		a := s.Deliver(ctx, body, strconv.FormatInt(begin.Unix(), 10), kid.Sign)
		if a.Status != http.StatusOK {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, fmt.Errorf("delivery %d answered %d: %s %v", k, a.Status, a.Body, a.Err))
			return
		}
		select {
		case at := <-applied:
			lat[k] = at.Sub(begin)
		case <-time.After(time.Minute):
			failed.Add(1)
			firstErr.CompareAndSwap(nil, fmt.Errorf("event %d (challenge %s) not Applied within a minute", k, challenge))
		}
	})
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, fmt.Errorf("%d folds failed, the first: %w", failed.Load(), err)
	}
	return lat, nil
}

// heapProfile saves the manager's heap profile into path and returns
// pprof's top 15 entries by space in use.
func heapProfile(m *manager, path string) (string, error) {
	if err := savePprof("http://"+m.pprof+"/debug/pprof/heap", path); err != nil {
		return "", err
	}
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=15", path).CombinedOutput()
	return string(out), err
}

func mibStr(b int64) string { return fmt.Sprintf("%.0f", mib(b)) }

func (c startCPU) String() string {
	return fmt.Sprintf("%.1f/%.1f/%.1f", c.manager, c.apiServer, c.etcd)
}

// cpusStr joins starts' CPU times with sep ("-" for none).
func cpusStr(cs []startCPU, sep string) string {
	if len(cs) == 0 {
		return "-"
	}
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.String()
	}
	return strings.Join(parts, sep)
}

func printPlayerLine(w io.Writer, pt playerPoint) {
	restart := 0.0
	for _, r := range pt.restarts {
		restart = max(restart, r.Seconds())
	}
	fmt.Fprintf(w, "scale: users=%d events=%d rss_mib=%s heap_mib=%s ready_s=%.1f restart_ready_s=%.1f fold_p99_ms=%.1f lookup_ms=%.0f etcd_mib=%s apiserver_mib=%s etcd_rss_mib=%s user_bytes=%d apiserver_kib_per_user=%.1f etcd_kib_per_user=%.1f rss_nolimit_mib=%s fold_p50_ms=%.1f get_all_s=%.1f get_label_s=%.1f start_cpu_s=%s restart_cpu_s=%s\n",
		pt.users, pt.events, mibStr(pt.rss), mibStr(pt.heap), pt.readyAfter.Seconds(), restart, ms(pt.foldP99), ms(worstLookup(pt.lookups)),
		mibStr(pt.etcdBytes), mibStr(pt.apiServerRSS), mibStr(pt.etcdRSS), pt.userBytes,
		perUser(pt.apiServerRSS, pt.baseAPIServerRSS, pt.users), perUser(pt.etcdRSS, pt.baseEtcdRSS, pt.users),
		mibStr(pt.rssNoLimit), ms(pt.foldP50), pt.getAll.Seconds(), pt.getLabel.Seconds(), pt.startCPU, cpusStr(pt.restartCPU, ","))
	if pt.kubectlErr != "" {
		fmt.Fprintf(w, "scale: users=%d kubectl_failed=%q\n", pt.users, pt.kubectlErr)
	}
	if why := lookupFailed(pt.lookups); why != "" {
		// lookup_ms above is then the time until the failure.
		fmt.Fprintf(w, "scale: users=%d lookup_failed=%q\n", pt.users, why)
	}
	if pt.stopped != "" {
		fmt.Fprintf(w, "scale: users=%d stopped=%q (the figures above are what this point measured before it stopped; 0 is not measured)\n", pt.users, pt.stopped)
	}
}

func printScale(w io.Writer, pts []playerPoint, sc scaleConfig) {
	fmt.Fprintf(w, "\n| players | RSS (MiB) | heap in use (MiB) | peak RSS at start (MiB) | RSS, no GOMEMLIMIT (MiB) | heap, no limit (MiB) | etcd (MiB) | ready after restart (s) | two more restarts (s) | fold p50 / p99 (ms) | kubectl kid user (ms) | kubectl get -A (s) | kubectl get -l (s) | kube-apiserver RSS (MiB) | per player (KiB) | etcd RSS (MiB) | per player (KiB) | a player in etcd (bytes) | created (players/s) | CPU of the start, then of each restart: manager / kube-apiserver / etcd (s) |\n")
	fmt.Fprintf(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, pt := range pts {
		restarts := "-"
		if len(pt.restarts) > 0 {
			var parts []string
			for _, r := range pt.restarts {
				parts = append(parts, fmt.Sprintf("%.1f", r.Seconds()))
			}
			restarts = strings.Join(parts, ", ")
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %.1f | %s | %.1f / %.1f | %s | %.1f | %.1f | %s | %.1f | %s | %.1f | %d | %.0f | %s |\n",
			pt.users, mibStr(pt.rss), mibStr(pt.heap), mibStr(pt.peakRSS), mibStr(pt.rssNoLimit), mibStr(pt.heapNoLimit), mibStr(pt.etcdBytes),
			pt.readyAfter.Seconds(), restarts, ms(pt.foldP50), ms(pt.foldP99), lookupsStr(pt.lookups), pt.getAll.Seconds(), pt.getLabel.Seconds(),
			mibStr(pt.apiServerRSS), perUser(pt.apiServerRSS, pt.baseAPIServerRSS, pt.users), mibStr(pt.etcdRSS), perUser(pt.etcdRSS, pt.baseEtcdRSS, pt.users),
			pt.userBytes, pt.createRate, cpusStr(append([]startCPU{pt.startCPU}, pt.restartCPU...), "; "))
	}
	fmt.Fprintf(w, "\nRSS and heap with GOMEMLIMIT=%s after the start's work settled; %d applied KidEvents beside the players; fold: %d deliveries per point, %d at a time, from send to Applied on a watch; kube-apiserver's watch cache %s.\n\n",
		memoryLimit, sc.events, sc.foldEvents, sc.foldC, map[bool]string{true: "on", false: "off"}[sc.watchCache])
	fmt.Fprintf(w, "kubectl kid user: in process, by the newest player's challenge and kuid and by a verification stand-in's id, before the manager starts; the line's lookup_ms is the worst. restart_ready_s: the worse of two more restarts at the largest point. CPU of a start: each process's CPU seconds from the manager's launch to its readiness (the manager's: its own, all of it); on two shared cores they say which process a start waits for. Per player: kube-apiserver's and etcd's resident memory over theirs before any player, divided by the players. A player in etcd: the mean of five players' values (JSON, managedFields included).\n\n")
	for _, pt := range pts {
		if pt.startProfileAPIServer != "" || pt.startProfileManager != "" {
			fmt.Fprintf(w, "a third restart at %d players, profiled over its first %d s; kube-apiserver (top, cumulative):\n%s\n\nthe manager:\n%s\n\n", pt.users, sc.startProfileSeconds, indent(pt.startProfileAPIServer), indent(pt.startProfileManager))
		}
		if pt.lookupProfileTop != "" {
			fmt.Fprintf(w, "kube-apiserver's CPU during repeated lookups at %d players (top, cumulative):\n%s\n\n", pt.users, indent(pt.lookupProfileTop))
		}
		if pt.heapProfileTop != "" {
			fmt.Fprintf(w, "manager heap profile at %d players, GOMEMLIMIT=%s (inuse_space, top 15):\n%s\n\n", pt.users, memoryLimit, indent(pt.heapProfileTop))
		}
	}
	for _, pt := range pts {
		printPlayerLine(w, pt)
	}
}
