package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/kid-operator/kid-operator/internal/kid"
)

var (
	eventsProcessedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_events_processed_total",
		Help: "KidEvents processed by the KidEvent controller, by event type (known types, else unknown) and result (applied, ignored, erased, refolded).",
	}, []string{"type", "result"})

	applyLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kid_event_apply_latency_seconds",
		Help:    "Time from k-ID signing an event to the event being folded into its KidUser, by event type.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
	}, []string{"type"})

	retentionDeletedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_retention_deleted_total",
		Help: "Objects deleted by the product's retention, by reason: age and count (finished KidEvents), user-erased and user-inactive (KidUsers).",
	}, []string{"reason"})

	actionAttemptsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_action_attempts_total",
		Help: "KidAction attempts, by action (namespace/name) and result: success, retry, failure, dry-run.",
	}, []string{"action", "result"})

	actionDelay = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kid_action_delay_seconds",
		Help:    "Time from the receiver storing an event to an action's success, by action.",
		Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800},
	}, []string{"action"})

	erasedEventsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kid_erased_events_total",
		Help: "KidEvents holding personal data deleted because k-ID deleted the player's session or account.",
	})

	standInsBoundTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kid_standin_personal_data_dropped_total",
		Help: "Stand-in KidUsers (never linked to a session) whose personal data was dropped after the product's retention.maxAge.",
	})

	sessionSyncsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_session_syncs_total",
		Help: "Reads of a session from k-ID's /session/get, by result: changed (one status write), unchanged (304 or same content), found-change (a change no notice announced, stored as an event), suspected, not-confirmed, held, deleted (k-ID no longer knows the session, confirmed), unknown.",
	}, []string{"result"})

	recoveryPollsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_recovery_polls_total",
		Help: "Polls of a pending challenge or verification, and rechecks of a passed verification (kind revocation), by kind and result: changed (an event was stored), unchanged, not-found.",
	}, []string{"kind", "result"})

	recoveredEventsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_polled_events_total",
		Help: "Events stored from k-ID's REST API (source poll), by event type; a webhook of the same change is then a duplicate.",
	}, []string{"type"})

	// The backlog of the KidEvent controller, per product. Nothing else
	// measures it: the work queue holds an event only while it is due, not
	// while it waits out a retry, and the receiver's and the controllers'
	// counters live in different processes that restart apart. The product
	// controller already lists a product's events at every pass (woken by
	// each stored event and each phase change), so it counts them there.
	eventsPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kid_events_pending",
		Help: "KidEvents stored and not yet folded (phase Pending), by product (namespace/name), as of the product's last pass.",
	}, []string{"product"})

	// A time rather than an age, so that it stays right between passes:
	// time() minus it grows on its own while the backlog waits, even if
	// nothing wakes the product.
	oldestPendingTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kid_events_oldest_pending_timestamp_seconds",
		Help: "When the oldest KidEvent still Pending was stored (Unix seconds), by product; 0 when none is.",
	}, []string{"product"})
)

func init() {
	metrics.Registry.MustRegister(eventsProcessedTotal, applyLatency, retentionDeletedTotal, erasedEventsTotal, actionAttemptsTotal, actionDelay,
		sessionSyncsTotal, recoveryPollsTotal, recoveredEventsTotal, standInsBoundTotal, eventsPending, oldestPendingTimestamp)
}

// typeLabel bounds the event type label to the types this version knows.
func typeLabel(eventType string) string {
	if kid.Known(eventType) || eventType == kid.TestEvent {
		return eventType
	}
	return "unknown"
}
