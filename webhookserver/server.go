// Package webhookserver receives k-ID's webhook deliveries, verifies them and
// stores each as a KidEvent. It answers k-ID exactly as k-ID expects: 200 only
// once the event is stored, and a status code for every other case that
// tells k-ID whether a retry can help (5xx) or not (4xx).
//
// The handler does no reconciling: controllers do all follow-up work.
//
// The same server serves the game's own pages: k-ID's widget (DOM) events
// they relay, stored as hints with source browser (relay.go), and a live
// stream of their player's status (status.go), both behind a relay token
// (webhookserver/relaytoken) and CORS for the product's allowed origins.
package webhookserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/secrets"
	"github.com/kid-operator/kid-operator/internal/spool"
)

// Defaults of Options.
const (
	DefaultAddr         = "127.0.0.1:8080"
	DefaultMaxBodyBytes = 64 << 10
	// DefaultStoreTimeout bounds the wait for the API server, so that k-ID
	// gets a 503 well before its own timeout and retries after 5 s and 10 s.
	DefaultStoreTimeout = 3 * time.Second
	// RetryAfterSeconds is the Retry-After of every 503: k-ID's first retry
	// comes after 5 s.
	RetryAfterSeconds = "5"
	// ShutdownTimeout bounds the wait for requests in flight once the
	// receiver stops accepting (after its drain period).
	ShutdownTimeout = 15 * time.Second
	// MaxDrainPeriod bounds Options.DrainPeriod: a pod's grace period must
	// cover the drain and ShutdownTimeout.
	MaxDrainPeriod = 5 * time.Minute
)

// Options configure the receiver.
type Options struct {
	// Addr is the listen address.
	Addr string
	// MaxBodyBytes caps a delivery's body; a larger one gets 413 before any
	// HMAC is computed.
	MaxBodyBytes int64
	// StoreTimeout bounds the create of a KidEvent.
	StoreTimeout time.Duration
	// DrainPeriod is how long the receiver keeps serving after it is told
	// to stop, while its readiness already fails: long enough for the
	// Service (or ingress) to take it out of its endpoints, so that no
	// delivery meets a closed port while another replica is ready. Zero
	// means none (tests, `make run`); the manager command's default is
	// DefaultDrainPeriod.
	DrainPeriod time.Duration
	// MaxInFlight bounds the webhook deliveries being verified and stored
	// at one time; past it the answer is 503 with Retry-After at once
	// (limits.go). Zero means DefaultMaxInFlight.
	MaxInFlight int
	// MaxBrowserInFlight bounds, as MaxInFlight does, the relayed browser
	// events being stored, from a pool of their own. Zero means
	// DefaultMaxBrowserInFlight.
	MaxBrowserInFlight int
	// Clock checks the signatures' timestamps and the relay tokens' expiry
	// and stamps receivedAt; nil means the real clock. It is a passive
	// clock: the drain and the status stream's expiry wait on real time, as
	// the integration tests' clock (real time plus jumps) needs.
	Clock clock.PassiveClock
	// Namespaces, if set, are the only namespaces whose products the
	// receiver serves (the manager's --watch-namespaces); a delivery for
	// any other namespace gets 404, as an unknown product does.
	Namespaces []string
	// Browser configures the browser relay and the status stream
	// (relay.go, status.go).
	Browser BrowserOptions
	// Spool configures the spool on disk that holds verified deliveries
	// the API server cannot store in time (spool.go); without a
	// directory, they get 503.
	Spool SpoolOptions
}

func (o *Options) setDefaults() {
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.StoreTimeout <= 0 {
		o.StoreTimeout = DefaultStoreTimeout
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.MaxBrowserInFlight <= 0 {
		o.MaxBrowserInFlight = DefaultMaxBrowserInFlight
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	o.Browser.setDefaults()
	o.Spool.setDefaults()
}

// Server is the webhook receiver. It runs as a manager runnable on every
// replica, reading products from the manager's informer cache and their
// webhook Secrets through a short-lived cache of single gets (no informer
// holds Secrets), and creating KidEvents directly on the API server.
type Server struct {
	opts    Options
	cache   cache.Cache
	reader  client.Reader
	secrets *secrets.Cache
	// namespaces is the set of Options.Namespaces; nil means all.
	namespaces map[string]bool
	store      inbox.Store
	// spool holds what the API server could not store in time; nil
	// without Options.Spool.Dir.
	spool *spool.Spool
	// browser is the state of the browser endpoints.
	browser *browserRelay
	// inFlight bounds the requests verifying and storing (limits.go).
	inFlight inFlight
	// synced: the caches the handlers read have synced; until then
	// requests get 503.
	synced atomic.Bool
	// draining: the receiver was told to stop; it fails readiness but
	// still serves, so that the Service moves traffic away first.
	draining atomic.Bool
	addr     atomic.Value // string: the address actually listened on
}

// New returns a receiver that reads products through c (an informer cache)
// and their webhook Secrets through sec, and stores events with store. It
// opens the spool Options.Spool names, if any, keeping what it holds for
// the drainer.
func New(c cache.Cache, sec *secrets.Cache, store inbox.Store, opts Options) (*Server, error) {
	opts.setDefaults()
	s := &Server{opts: opts, cache: c, reader: c, secrets: sec, store: store}
	s.browser = newBrowserRelay(&watchUsers{client: opts.Browser.Users}, opts.Browser)
	if len(opts.Namespaces) > 0 {
		s.namespaces = map[string]bool{}
		for _, ns := range opts.Namespaces {
			s.namespaces[ns] = true
		}
	}
	if err := s.openSpool(); err != nil {
		return nil, err
	}
	return s, nil
}

// NeedLeaderElection is false: every replica receives deliveries.
func (s *Server) NeedLeaderElection() bool { return false }

// Handler returns the receiver's routes: POST /webhooks/{namespace}/{product},
// GET /sdk/kid-events.js (sdk.go), POST /browser/{namespace}/{product} and
// GET /browser/{namespace}/{product}/status (relay.go, status.go), GET
// /healthz and GET /readyz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(kidv1.WebhookPathPrefix+"{namespace}/{product}", s.receive)
	handleSDK(mux)
	s.handleBrowser(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// DefaultDrainPeriod is the manager command's drain period: a few seconds
// covers kube-proxy and common ingress controllers, which learn of a
// terminating pod through the EndpointSlice controller.
const DefaultDrainPeriod = 5 * time.Second

// Start serves until ctx ends, then drains: readiness fails at once, the
// receiver keeps serving for the drain period, then stops accepting and lets
// requests in flight finish (ShutdownTimeout at most).
func (s *Server) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("webhookserver")
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.opts.Addr, err)
	}
	srv := s.httpServer(ctx)

	s.addr.Store(ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("receiving k-ID webhooks", "addr", ln.Addr().String())

	go s.waitForCaches(ctx)
	go s.drainSpool(ctx)

	select {
	case err := <-errc:
		return fmt.Errorf("serving webhooks: %w", err)
	case <-ctx.Done():
	}
	s.draining.Store(true)
	if d := s.opts.DrainPeriod; d > 0 {
		log.Info("draining: not ready, still serving", "for", d)
		select {
		case <-time.After(d):
		case err := <-errc:
			return fmt.Errorf("serving webhooks: %w", err)
		}
	}
	// Status streams would hold the shutdown until its timeout; their
	// pages reconnect to a replica that is ready.
	s.browser.stop()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("draining webhook requests: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// httpServer is the receiver's HTTP server, with its limits (limits.go).
func (s *Server) httpServer(ctx context.Context) *http.Server {
	return s.limitedHTTPServer(&http.Server{ //nolint:gosec // G112: limitedHTTPServer sets ReadHeaderTimeout and the other limits
		Handler: s.Handler(),
		// Requests in flight must outlive ctx while the server drains.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	})
}

// waitForCaches makes the informer the handler reads exist (products; Secrets
// have none), waits for it to sync, then marks the receiver ready. Until
// then deliveries get 503, so that a new replica never answers 404 for a
// product it has not seen yet.
func (s *Server) waitForCaches(ctx context.Context) {
	for _, obj := range []client.Object{&kidv1.KidProduct{}} {
		if _, err := s.cache.GetInformer(ctx, obj); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "starting informer", "kind", fmt.Sprintf("%T", obj))
			return
		}
	}
	if s.cache.WaitForCacheSync(ctx) {
		s.synced.Store(true)
	}
}

// Addr returns the address the receiver listens on, once started (useful
// with port 0), or "".
func (s *Server) Addr() string {
	a, _ := s.addr.Load().(string)
	return a
}

// Ready reports whether the receiver should be sent traffic: its caches
// synced and it is not draining.
func (s *Server) Ready() bool { return s.synced.Load() && !s.draining.Load() }

// MarkReady is for tests that drive Handler without Start.
func (s *Server) MarkReady() { s.synced.Store(true) }
