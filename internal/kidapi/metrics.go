package kidapi

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the k-ID API client. Every label is bounded: products are the
// configured ones, endpoints the three this package calls, codes the HTTP
// statuses k-ID answers (or "error" when there was no answer).
var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_api_requests_total",
		Help: "HTTP attempts made to k-ID's API, by product, endpoint and HTTP status code (\"error\" when no answer came).",
	}, []string{"product", "endpoint", "code"})

	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kid_api_request_duration_seconds",
		Help:    "Time of one HTTP attempt to k-ID's API, body read included, by endpoint.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"endpoint"})

	ratelimitWaitSeconds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_api_ratelimit_wait_seconds_total",
		Help: "Time callers were made to wait, or told to come back after, by the product's client-side rate limiter.",
	}, []string{"product"})

	ratelimitedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_api_ratelimited_total",
		Help: "Requests the product's client-side rate limiter could not let go at once (delayed, or the caller told to come back). k-ID's own 429s are in kid_api_requests_total{code=\"429\"}.",
	}, []string{"product"})
)

func init() {
	metrics.Registry.MustRegister(requestsTotal, requestDuration, ratelimitWaitSeconds, ratelimitedTotal)
}

func observe(product, endpoint, code string, start time.Time) {
	requestsTotal.WithLabelValues(product, endpoint, code).Inc()
	requestDuration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
}
