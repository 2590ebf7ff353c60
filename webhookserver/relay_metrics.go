package webhookserver

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the browser endpoints. Every label is bounded: products are the
// configured ones with spec.browser (any other path counts as "unknown"),
// codes and reasons are fixed sets.
var (
	relayRequestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_browser_relay_requests_total",
		Help: "Relayed browser (DOM) event requests and their preflights, by product (namespace/name, or unknown) and HTTP status code.",
	}, []string{"product", "code"})

	relayTokenFailuresTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_browser_token_failures_total",
		Help: "Relay tokens refused (relay and status stream), by product and reason: malformed, signature, expired, too_long, wrong_product.",
	}, []string{"product", "reason"})

	statusRequestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_browser_status_requests_total",
		Help: "Status stream requests and their preflights, by product (namespace/name, or unknown) and HTTP status code (200: a stream was served).",
	}, []string{"product", "code"})

	statusStreamsRefusedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_browser_status_streams_refused_total",
		Help: "Status streams refused with 429, by product and the bound that was full: subject (one token's subject), product (spec.browser.maxStreams) or replica (--browser-max-streams).",
	}, []string{"product", "reason"})

	statusStreamsOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kid_browser_status_streams",
		Help: "Status streams open, by product.",
	}, []string{"product"})
)

func init() {
	metrics.Registry.MustRegister(relayRequestsTotal, relayTokenFailuresTotal, statusRequestsTotal, statusStreamsRefusedTotal, statusStreamsOpen)
}
