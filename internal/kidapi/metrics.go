package kidapi

import (
	"sync"
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
		Help:    "Time of one HTTP attempt to k-ID's API, body read included, by product and endpoint.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"product", "endpoint"})

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
	metrics.Registry.MustRegister(requestsTotal, requestDuration, ratelimitWaitSeconds, ratelimitedTotal, backlogs)
}

func observe(product, endpoint, code string, start time.Time) {
	requestsTotal.WithLabelValues(product, endpoint, code).Inc()
	requestDuration.WithLabelValues(product, endpoint).Observe(time.Since(start).Seconds())
}

// backlogDesc is kid_api_backlog: read from the products' schedules when
// scraped, so it is never stale between calls (a gauge set at each booking
// would keep its last value once the players stopped coming back).
var backlogDesc = prometheus.NewDesc("kid_api_backlog",
	"Calls of the product waiting for their booked rate-limiter slot (players that must wait for the product's requestsPerSecond), by product.",
	[]string{"product"}, nil)

// backlogCollector exports each product's backlog from its newest client.
type backlogCollector struct {
	mu        sync.Mutex
	byProduct map[string]*Client
}

var backlogs = &backlogCollector{byProduct: map[string]*Client{}}

func (b *backlogCollector) Describe(ch chan<- *prometheus.Desc) { ch <- backlogDesc }

func (b *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for product, c := range b.byProduct {
		ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(c.Backlog()), product)
	}
}

func (b *backlogCollector) track(c *Client) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.byProduct[c.product] = c
}

// Forget drops a product's series from the client's metrics: the product
// was deleted, or no longer calls k-ID, so that the labels stay bounded by
// the products that do.
func Forget(product string) {
	backlogs.mu.Lock()
	delete(backlogs.byProduct, product)
	backlogs.mu.Unlock()
	labels := prometheus.Labels{"product": product}
	requestsTotal.DeletePartialMatch(labels)
	requestDuration.DeletePartialMatch(labels)
	ratelimitWaitSeconds.DeletePartialMatch(labels)
	ratelimitedTotal.DeletePartialMatch(labels)
}

// Backlog is how many booked slots of the product's schedule (Book) have
// not come yet: the callers waiting for their turn at the product's rate.
func (c *Client) Backlog() int { return c.schedule.pending() }
