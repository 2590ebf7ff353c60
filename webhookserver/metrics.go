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

	spoolEntries = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kid_webhook_spool_entries",
		Help: "Deliveries held in the receiver's spool on disk: verified and answered 200 while the API server could not store them, waiting to be replayed.",
	})

	spoolBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kid_webhook_spool_bytes",
		Help: "Bytes of the receiver's spool files (bounded by --spool-max-bytes).",
	})

	spoolOldest = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kid_webhook_spool_oldest_entry_timestamp_seconds",
		Help: "When the oldest delivery still in the spool was spooled (unix seconds); 0 when the spool is empty. Past --spool-max-age the spool is full.",
	})

	spoolAppendsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_webhook_spool_appends_total",
		Help: "Deliveries the API server could not store in time, by what the spool did: spooled (answered 200), full_bytes or full_age (answered 503), error (answered 503).",
	}, []string{"result"})

	spoolReplaysTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_webhook_spool_replays_total",
		Help: "Spooled events replayed to the API server, by result: stored, duplicate (stored already: a replay after a crash, or k-ID's retry), dropped (its product is gone, or the API server refuses it).",
	}, []string{"result"})

	spoolTornTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kid_webhook_spool_torn_records_total",
		Help: "Torn records (an append cut short by a crash, never answered 200) dropped when the spool was opened.",
	})

	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kid_webhook_request_duration_seconds",
		Help:    "Time from the request's arrival to its answer, by HTTP status code.",
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
	}, []string{"code"})
)

func init() {
	metrics.Registry.MustRegister(requestsTotal, signatureFailuresTotal, verifiedTotal, duplicatesTotal, requestDuration,
		spoolEntries, spoolBytes, spoolOldest, spoolAppendsTotal, spoolReplaysTotal, spoolTornTotal)
}
