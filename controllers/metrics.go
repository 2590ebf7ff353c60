package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidapi"
)

var (
	eventsProcessedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_events_processed_total",
		Help: "KidEvents processed by the KidEvent controller, by event type (known types, else unknown) and result (applied, ignored, erased, refolded; for browser events confirming, or confirm-coalesced when another relay's read of the subject answers it).",
	}, []string{"type", "result"})

	// foldReplays counts them (fold_replays.go); the fault tests read it
	// to show that their kills landed between a fold's two writes.
	foldReplaysTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kid_fold_replays_total",
		Help: "Folds of a KidEvent into a KidUser that already held it in flight from a fold another process made: that process stopped between the fold's two writes (the user's, then the event's), and the replay counts nothing twice.",
	})

	// batchedEventsTotal counts the events a batch folded
	// (kidevent_batch.go): each is a user status write spared.
	batchedEventsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kid_fold_batched_events_total",
		Help: "KidEvents folded into their player's KidUser ahead of their own pass, in the status write of another of the player's queued events: each is a KidUser status write spared.",
	})

	// idLabelWritesTotal counts the label writes of a user's ids
	// (labelIDs): a write beside the status, for each id a user gains
	// after its create.
	idLabelWritesTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kid_user_id_label_writes_total",
		Help: "Writes of a KidUser's id labels (kid.dev/id-<digest>, what kubectl kid finds a player by): one for each user that gained an id after its create, was registered by the game, or was stored before the labels.",
	})

	// standInDelaysTotal counts the passes of an unlinked challenge event
	// that waited before making its stand-in (kidevent_standin_delay.go).
	standInDelaysTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kid_standin_delays_total",
		Help: "Passes of a Challenge.StateChange naming no session, and linked to none yet, that waited (at most the stand-in delay from its receipt) before creating the challenge's stand-in, for a linking event to arrive.",
	})

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

	// The matching's bounds count by namespace: one tenant's actions are
	// what the bounds stop (actions.MatchLimits, filterLanes).
	filterBudgetExceededTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_action_filter_budget_exceeded_total",
		Help: "KidEvents whose filters spent the event's budget (--action-filter-budget) before every KidAction of the namespace was evaluated, by namespace.",
	}, []string{"namespace"})

	actionLimitExceededTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_action_limit_exceeded_total",
		Help: "KidEvents of a namespace holding more KidActions than an event evaluates (--max-actions-per-namespace), by namespace.",
	}, []string{"namespace"})

	filterLaneWaitsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_action_filter_lane_waits_total",
		Help: "Times a KidEvent went back to the queue because every filter lane of its namespace was busy (--action-filter-lanes), by namespace.",
	}, []string{"namespace"})

	erasedEventsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kid_erased_events_total",
		Help: "KidEvents holding personal data deleted because k-ID deleted the player's session or account.",
	})

	standInsBoundTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kid_standin_personal_data_dropped_total",
		Help: "Stand-in KidUsers (never linked to a session) whose personal data was dropped after the product's retention.maxAge.",
	})

	// The k-ID API's metrics carry the product ("namespace/name", as
	// kid_api_* do): its configured products bound them, and a deleted
	// product's series are dropped (forgetProductSeries).
	sessionSyncsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_session_syncs_total",
		Help: "Reads of a session from k-ID's /session/get, by product and result: changed (one status write), unchanged (304 or same content: no write), found-change (a change no notice announced, stored as an event), suspected, not-confirmed, held, deleted (k-ID no longer knows the session, confirmed), unknown.",
	}, []string{"product", "result"})

	recoveryPollsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_recovery_polls_total",
		Help: "Polls of a pending challenge or verification, and rechecks of a passed verification (kind revocation), by product, kind and result: changed (an event was stored), unchanged, not-found.",
	}, []string{"product", "kind", "result"})

	// Counted when the poll's copy is the one stored: not when the webhook's
	// copy was there first (the poll's is then a duplicate), whatever it
	// added to it (design.md §3, "Recovery").
	recoveredEventsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_polled_events_total",
		Help: "Events the cluster learned first from k-ID's REST API (stored with source poll), by product and event type; a poll whose event the webhook had stored already is not counted.",
	}, []string{"product", "type"})

	// From a user's booking of its rate-limiter slot (Book) to its call;
	// 0 when it could call at once. Its count is the reads that took a
	// slot; the backlog itself is kid_api_backlog (internal/kidapi).
	slotWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kid_api_slot_wait_seconds",
		Help:    "How long a read of k-ID's API waited for its rate-limiter slot, from booking it to the call (0 when it went at once), by product.",
		Buckets: []float64{0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
	}, []string{"product"})

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
	metrics.Registry.MustRegister(eventsProcessedTotal, foldReplaysTotal, batchedEventsTotal, idLabelWritesTotal, standInDelaysTotal, filterBudgetExceededTotal, actionLimitExceededTotal, filterLaneWaitsTotal, applyLatency, retentionDeletedTotal, erasedEventsTotal, actionAttemptsTotal, actionDelay,
		sessionSyncsTotal, recoveryPollsTotal, recoveredEventsTotal, slotWait, standInsBoundTotal, eventsPending, oldestPendingTimestamp)
}

// productLabel is a product's metrics label, "namespace/name".
func productLabel(p *kidv1.KidProduct) string { return productKey(p).String() }

// userProductLabel is the metrics label of a user's product.
func userProductLabel(u *kidv1.KidUser) string { return u.Namespace + "/" + u.Spec.ProductRef.Name }

// forgetProductSeries drops a deleted product's series, so that the labels
// stay bounded by the products that exist.
func forgetProductSeries(product string) {
	eventsPending.DeleteLabelValues(product)
	oldestPendingTimestamp.DeleteLabelValues(product)
	labels := prometheus.Labels{"product": product}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{sessionSyncsTotal, recoveryPollsTotal, recoveredEventsTotal, slotWait} {
		v.DeletePartialMatch(labels)
	}
	kidapi.Forget(product)
}

// typeLabel bounds the event type label to the types this version knows.
func typeLabel(eventType string) string {
	if kid.Known(eventType) || eventType == kid.TestEvent {
		return eventType
	}
	return "unknown"
}
