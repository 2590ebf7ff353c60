package webhookserver

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the receiver. Every label is bounded: products are the
// configured ones (an unknown path counts as "unknown"), key names come from
// the product's Secret, reasons and codes are fixed sets.
var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_webhook_requests_total",
		Help: "Webhook requests, by product (namespace/name, or unknown) and HTTP status code.",
	}, []string{"product", "code"})

	signatureFailuresTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_webhook_signature_failures_total",
		Help: "Deliveries refused with 401, by reason: missing, malformed, mismatch, stale, future.",
	}, []string{"product", "reason"})

	verifiedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_webhook_verified_total",
		Help: "Deliveries whose signature verified, by product and the Secret key that matched (watch it while rotating a secret).",
	}, []string{"product", "key"})

	duplicatesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_webhook_duplicates_total",
		Help: "Verified deliveries of an event that was already stored (k-ID retries), answered 200.",
	}, []string{"product"})

	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kid_webhook_request_duration_seconds",
		Help:    "Time from the request's arrival to its answer, by HTTP status code.",
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
	}, []string{"code"})
)

func init() {
	metrics.Registry.MustRegister(requestsTotal, signatureFailuresTotal, verifiedTotal, duplicatesTotal, requestDuration)
}
