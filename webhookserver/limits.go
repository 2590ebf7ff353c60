package webhookserver

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The receiver's serving limits. A client that sends its headers or its body
// slowly is cut off by the read timeouts and holds no handler slot while it
// sends (see inFlight); a header larger than MaxHeaderBytes gets 431 from
// net/http before any handler runs.
const (
	// DefaultMaxInFlight is the default of Options.MaxInFlight.
	DefaultMaxInFlight = 256
	// DefaultMaxBrowserInFlight is the default of
	// Options.MaxBrowserInFlight.
	DefaultMaxBrowserInFlight = 64
	// ReadHeaderTimeout cuts off a client that has not sent its headers
	// within it (slowloris).
	ReadHeaderTimeout = 5 * time.Second
	// ReadTimeout cuts off a client that has not sent its whole request,
	// body included, within it. The body is at most MaxBodyBytes; 10 s is
	// generous for it.
	ReadTimeout = 10 * time.Second
	// IdleTimeout closes a kept-alive connection that sends nothing more.
	IdleTimeout = 90 * time.Second
	// MaxHeaderBytes bounds a request's headers (net/http allows 4 KiB more
	// and answers 431 past that).
	MaxHeaderBytes = 16 << 10
)

var inFlightRejectedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "kid_webhook_in_flight_rejected_total",
	Help: "Requests answered 503 because their endpoint's in-flight slots were all taken (MaxInFlight for webhook, MaxBrowserInFlight for browser), by endpoint.",
}, []string{"endpoint"})

func init() {
	metrics.Registry.MustRegister(inFlightRejectedTotal)
}

// The endpoints that take in-flight slots, each from a pool of its own.
const (
	endpointWebhook = "webhook"
	endpointBrowser = "browser"
)

// inFlight bounds the requests that verify and store an event at one time:
// each waits for the API server for up to StoreTimeout, so without a bound a
// slow API server would pile up goroutines and bodies. A slot is taken once
// the body is read (bounded by MaxBodyBytes and ReadTimeout), so that slow
// or never-ending bodies cannot take the slots of well-formed deliveries.
// Past the bound the answer is 503 with Retry-After at once, never a wait.
// k-ID's deliveries and the browser relay have a pool each: relays come
// from anyone's page, and however many there are, a k-ID delivery always
// finds its own slots (503 to k-ID costs a retry, and after 15 s the
// event).
type inFlight struct {
	once             sync.Once
	webhook, browser chan struct{}
}

// acquire takes a slot of the endpoint's pool, or reports false at once
// when none is free. release gives it back.
func (s *Server) acquire(endpoint string) (release func(), ok bool) {
	s.inFlight.once.Do(func() {
		s.inFlight.webhook = make(chan struct{}, s.opts.MaxInFlight)
		s.inFlight.browser = make(chan struct{}, s.opts.MaxBrowserInFlight)
	})
	slots := s.inFlight.webhook
	if endpoint == endpointBrowser {
		slots = s.inFlight.browser
	}
	select {
	case slots <- struct{}{}:
		return func() { <-slots }, true
	default:
		inFlightRejectedTotal.WithLabelValues(endpoint).Inc()
		return nil, false
	}
}

// limitedHTTPServer sets the receiver's limits on srv.
func (s *Server) limitedHTTPServer(srv *http.Server) *http.Server {
	srv.ReadHeaderTimeout = ReadHeaderTimeout
	srv.ReadTimeout = ReadTimeout
	// Long enough for the store and an answer; the status stream lifts
	// the read and write deadlines for itself (status.go).
	srv.WriteTimeout = s.opts.StoreTimeout + 10*time.Second
	srv.IdleTimeout = IdleTimeout
	srv.MaxHeaderBytes = MaxHeaderBytes
	return srv
}
