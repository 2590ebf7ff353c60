// Command bench is kid-operator's load benchmark (`make bench`). On the local
// control plane that `make run` uses, it measures in one run:
//
//   - raw: the API server's ceiling, client-go creates of KidEvents of the
//     size the receiver writes, at concurrency C;
//   - receiver: distinct signed deliveries over HTTP to the manager, run as a
//     user runs it (its own process), at the same C, in rounds interleaved
//     with the raw ones (the medians are reported);
//   - write costs: the API server's ceiling for each other write an event
//     needs (its status, the KidUser's create and status), and from them the
//     floor the API alone sets for an event;
//   - e2e: from the first send until every event is Applied and every
//     KidUser reflects its event, and the manager's API requests (writes,
//     and reads: GET) and CPU time per event;
//   - journeys: players each go through a k-ID journey (a challenge
//     IN_PROGRESS, its PASS with the session, a permission change; some a
//     verification, some a Session.Delete), one player's deliveries in
//     sequence, many players interleaved; from the first send until every
//     event is Applied and every stand-in merged, as a ratio of the floor
//     the API server sets for that trace's writes; the manager's requests
//     and CPU time per event; and a CPU profile;
//   - session sync: players consent at the simulator's fake k-ID, which
//     delivers to the manager; the manager reads each new session back from
//     the fake's /session/get. The API writes per player and the writes of
//     the sync alone;
//   - scale: the manager's memory and etcd's size at 10,000 KidEvents +
//     10,000 KidUsers and at 50,000 KidUsers, and the manager's time to be
//     ready again after a restart at each size.
//
// Every throughput is also given as a ratio to raw, measured in the same run.
//
// With -suite=scale (`make bench-scale`) it instead grows one product's
// players, each with a folded status, to each of -points and measures there
// etcd's size, the manager's memory with and without GOMEMLIMIT, its time to
// be ready after a restart, one event's fold, and kubectl's lists.
//
// With -suite=reads (`make bench-reads`) it starts the manager over players
// whose sessions are all overdue for their resync, against a fake k-ID that
// answers after a latency, and measures the reads per second against the
// product's rate and how long urgent reads wait behind the backlog
// (reads.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/kid-operator/kid-operator/test/testenv"
)

type config struct {
	n, c, cHigh    int
	rounds         int
	scale          bool
	users50k       int
	profileSeconds int
	syncSessions   int
	journeys       int
	// journeyProfileSeconds is longer than the e2e run's profile: the
	// journeys' deliveries are all sent in the first part of the phase,
	// and the controllers' work goes on long after.
	journeyProfileSeconds int
	managerBin            string
	workDir               string
}

func main() {
	var cfg config
	flag.IntVar(&cfg.n, "n", 5000, "objects or deliveries per measurement")
	flag.IntVar(&cfg.c, "c", 16, "concurrency")
	flag.IntVar(&cfg.rounds, "rounds", 3, "interleaved rounds of the raw ceiling and the receiver (the medians are reported)")
	flag.IntVar(&cfg.cHigh, "c-high", 64, "second concurrency for the raw ceiling (0 skips it)")
	flag.BoolVar(&cfg.scale, "scale", true, "run the scale measurements (10k events + users, 50k users)")
	flag.IntVar(&cfg.users50k, "users", 50000, "KidUsers for the second scale point")
	flag.IntVar(&cfg.syncSessions, "sync-sessions", 500, "players whose session the manager reads from a fake k-ID, for the writes a synced session costs (0 skips it)")
	flag.IntVar(&cfg.profileSeconds, "profile-seconds", 8, "CPU profile of the manager during the receiver run (0 skips it)")
	flag.IntVar(&cfg.journeys, "journeys", 1000, fmt.Sprintf("players whose k-ID journey is sent after the e2e run, at most %d (0 skips it)", maxJourneys))
	flag.IntVar(&cfg.journeyProfileSeconds, "journey-profile-seconds", 20, fmt.Sprintf("CPU profile of the manager from the journeys' first send, at most %d s (0 skips it)", maxProfileSeconds))
	suite := flag.String("suite", "load", "load (make bench), scale (make bench-scale) or reads (make bench-reads)")
	points := flag.String("points", "50000,100000,250000", "scale: players at which to measure, ascending, comma separated")
	var sc scaleConfig
	flag.IntVar(&sc.createC, "create-c", 32, "scale: concurrency of the players' creates and status writes")
	flag.IntVar(&sc.foldEvents, "fold-events", 200, "scale: deliveries for existing players whose fold is timed, per point")
	flag.IntVar(&sc.foldC, "fold-c", 1, "scale: deliveries in flight while timing folds (1: one event's fold, nothing queued)")
	flag.BoolVar(&sc.heapProfile, "heap-profile", false, "scale: print the manager's heap profile at the point nearest 100k players")
	flag.IntVar(&sc.events, "events", 10000, "scale: applied KidEvents stored beside the players, from the first point on")
	flag.BoolVar(&sc.kubectl, "kubectl", true, "scale: time kubectl's lists of every player at each point")
	flag.IntVar(&sc.lookupProfileSeconds, "lookup-profile-seconds", 10, fmt.Sprintf("scale: kube-apiserver's CPU profile during repeated lookups at the largest point, at most %d s (0 skips it)", maxProfileSeconds))
	flag.IntVar(&sc.startProfileSeconds, "start-profile-seconds", 0, fmt.Sprintf("scale: a third restart at the largest point, not in the line, with kube-apiserver's and the manager's CPU profiles over its first seconds, at most %d (0 skips it)", maxProfileSeconds))
	flag.BoolVar(&sc.watchCache, "watch-cache", true, "scale: kube-apiserver's watch cache (false fits 250k players in 24 GiB; the manager's figures are its own either way)")
	rc := readsConfig{}
	flag.IntVar(&rc.sessions, "read-sessions", 20000, "reads: players whose sessions are overdue when the manager starts (250000 for the scale issue's size)")
	flag.IntVar(&rc.rps, "read-rps", 100, "reads: the product's requestsPerSecond (100 is the live default)")
	flag.DurationVar(&rc.latency, "read-latency", 100*time.Millisecond, "reads: how long the fake k-ID takes to answer each call")
	flag.DurationVar(&rc.interval, "read-interval", time.Minute, "reads: the product's sessionResync; the sessions due per second after the start are the sessions over it")
	flag.IntVar(&rc.urgent, "read-urgent", 20, fmt.Sprintf("reads: urgent reads asked for through the window, at most %d", maxReadUrgent))
	flag.DurationVar(&rc.window, "read-window", time.Minute, "reads: how long the reads are measured from the first")
	flag.IntVar(&rc.concurrency, "read-concurrency", 32, "reads: the manager's --api-read-concurrency")
	flag.Parse()
	rc.createC, rc.watchCache = sc.createC, sc.watchCache
	var err error
	switch *suite {
	case "load":
		err = cfg.validate()
	case "scale":
		if sc.points, err = parsePoints(*points); err == nil {
			err = sc.validate()
		}
	case "reads":
		err = rc.validate()
	default:
		err = fmt.Errorf("-suite: %q is not load, scale or reads", *suite)
	}
	if err != nil {
		fail(err)
	}
	cfg.rounds = max(cfg.rounds, 1)
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))

	root := testenv.RepoRoot()
	cfg.workDir = filepath.Join(root, ".local", "bench")
	if *suite != "load" {
		// Its own kubeconfig and profiles: a load run may share the machine.
		cfg.workDir = filepath.Join(root, ".local", "bench-"+*suite)
	}
	cfg.managerBin = filepath.Join(root, "bin", "manager")
	if err := os.MkdirAll(cfg.workDir, 0o755); err != nil {
		fail(err)
	}
	build := exec.Command("go", "build", "-o", cfg.managerBin, "./cmd/manager")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fail(fmt.Errorf("building the manager: %w", err))
	}

	if *suite == "reads" {
		sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		ctx, cancel := context.WithTimeout(sig, 4*time.Hour)
		defer cancel()
		r, err := runReads(ctx, cfg, rc)
		if err != nil {
			fail(err)
		}
		printReads(os.Stdout, r)
		return
	}
	if *suite == "scale" {
		// Creating 250k players at a few hundred writes per second takes
		// about half an hour on a 2-core machine.
		// An interrupt stops the creates, and runScale then stops the
		// control plane: at these sizes a leftover kube-apiserver holds
		// gigabytes.
		sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		ctx, cancel := context.WithTimeout(sig, 4*time.Hour)
		defer cancel()
		// What was measured is printed even when the run stopped short
		// of its points, with why.
		pts, err := runScale(ctx, cfg, sc)
		printScale(os.Stdout, pts, sc)
		if err != nil {
			fail(err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	r, err := run(ctx, cfg)
	if err != nil {
		fail(err)
	}
	r.print(os.Stdout)
}

// maxProfileSeconds bounds a profile's length: a profile longer than the
// phase it samples only waits.
const maxProfileSeconds = 600

// validate bounds the load suite's new flags.
func (cfg *config) validate() error {
	if cfg.journeys < 0 || cfg.journeys > maxJourneys {
		return fmt.Errorf("-journeys: %d is not between 0 and %d", cfg.journeys, maxJourneys)
	}
	if cfg.journeyProfileSeconds < 0 || cfg.journeyProfileSeconds > maxProfileSeconds {
		return fmt.Errorf("-journey-profile-seconds: %d is not between 0 and %d", cfg.journeyProfileSeconds, maxProfileSeconds)
	}
	if cfg.journeys > 0 && cfg.c < 1 {
		return fmt.Errorf("-c: %d: the journeys need at least one delivery in flight", cfg.c)
	}
	return nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
