package controllers

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// A KidEvent's conditions say why it is where it is, so that `kubectl
// describe kidevent` answers "why is this event stuck" without logs
// (design.md §2, "Why an event is where it is"). They ride on the status
// writes an event has anyway (setPhase, the runs' record, the redrive):
// setting one writes nothing by itself.

// setEventCondition sets one condition of e's status, for the caller's
// status write to carry. msg must hold no personal data.
func setEventCondition(e *kidv1.KidEvent, condType string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&e.Status.Conditions, metav1.Condition{
		Type: condType, Status: status, Reason: reason, Message: msg, ObservedGeneration: e.Generation,
	})
}

// setEventHealth sets what kstatus, the library behind Flux's and Argo CD's
// health checks, reads of an event: observedGeneration, Reconciling while
// the event waits (for its fold, or for its runs: a first attempt, a retry,
// a session read, a suspended product), and Stalled once a run failed for
// good, which only a person's redrive moves on. Both are present only while
// True and repeat the Processed condition's reason and message, so they
// carry no personal data either. Like Processed they ride on the status
// write the caller makes anyway; an event the controllers never wrote is
// InProgress through the CRD's default (observedGeneration 0).
func setEventHealth(e *kidv1.KidEvent) {
	st := &e.Status
	st.ObservedGeneration = e.Generation
	reconciling, stalled := false, false
	switch st.Phase {
	case "", kidv1.EventPending:
		reconciling = true
	case kidv1.EventApplied:
		reconciling = !st.Finished()
	case kidv1.EventFailed:
		stalled = true
	}
	reason, msg := kidv1.ProgressingReason, "the event waits for its fold or its action runs"
	if c := meta.FindStatusCondition(st.Conditions, kidv1.ProcessedCondition); c != nil {
		reason, msg = c.Reason, c.Message
	}
	for _, c := range []struct {
		condType string
		on       bool
	}{{kidv1.ReconcilingCondition, reconciling}, {kidv1.StalledCondition, stalled}} {
		if c.on {
			setEventCondition(e, c.condType, metav1.ConditionTrue, reason, msg)
		} else {
			meta.RemoveStatusCondition(&st.Conditions, c.condType)
		}
	}
}

// setProcessed derives the Processed condition of an applied event from its
// phase and runs: done (Succeeded, Failed, or no action matched), or what
// it waits for (a first attempt, or a retry at a time). A run's error text
// is left to status.actions: it is the game's endpoint's answer, which
// this message must not repeat. It sets the event's health with it
// (setEventHealth).
func setProcessed(e *kidv1.KidEvent) {
	defer setEventHealth(e)
	st := &e.Status
	switch st.Phase {
	case kidv1.EventSucceeded:
		setEventCondition(e, kidv1.ProcessedCondition, metav1.ConditionTrue, kidv1.ActionsSucceededReason,
			fmt.Sprintf("each of %d matched action(s) succeeded or was skipped", len(st.Actions)))
		return
	case kidv1.EventFailed:
		for _, run := range st.Actions {
			if run.Phase == kidv1.RunFailed {
				setEventCondition(e, kidv1.ProcessedCondition, metav1.ConditionTrue, kidv1.ActionFailedReason,
					fmt.Sprintf("action %s failed after %d attempt(s) (status.actions says why); annotate %s to run it again", run.Name, run.Attempts, kidv1.RedriveAnnotation))
				return
			}
		}
		return
	case kidv1.EventApplied:
	default:
		return
	}
	pending, retry := 0, -1
	for i, run := range st.Actions {
		if run.Phase != kidv1.RunPending {
			continue
		}
		pending++
		if run.Attempts > 0 && run.NextAttemptAt != nil && (retry < 0 || run.NextAttemptAt.Before(st.Actions[retry].NextAttemptAt)) {
			retry = i
		}
	}
	switch {
	case len(st.Actions) == 0:
		setEventCondition(e, kidv1.ProcessedCondition, metav1.ConditionTrue, kidv1.NoActionMatchedReason, "no KidAction matched the event")
	case retry >= 0:
		run := st.Actions[retry]
		setEventCondition(e, kidv1.ProcessedCondition, metav1.ConditionFalse, kidv1.RetryScheduledReason,
			fmt.Sprintf("action %s: attempt %d failed (status.actions says why); next attempt at %s", run.Name, run.Attempts, run.NextAttemptAt.UTC().Format(time.RFC3339)))
	case pending > 0:
		setEventCondition(e, kidv1.ProcessedCondition, metav1.ConditionFalse, kidv1.RunsPendingReason,
			fmt.Sprintf("%d action run(s) wait for their first attempt", pending))
	}
}

// ignored is why an event is Ignored, for its Processed condition.
type ignored struct{ reason, msg string }

// condition is the Processed condition of an event Ignored for this reason.
func (i ignored) condition(e *kidv1.KidEvent) *metav1.Condition {
	return &metav1.Condition{Type: kidv1.ProcessedCondition, Status: metav1.ConditionTrue, Reason: i.reason, Message: i.msg, ObservedGeneration: e.Generation}
}

var (
	ignoredUnknownType = ignored{kidv1.UnknownEventTypeReason, "this version of the operator does not know the event type; the event is kept as a record"}
	ignoredBrowser     = ignored{kidv1.BrowserEventReason, "a game page's hint is never folded nor acted on; with spec.api its subject is confirmed at k-ID"}
	ignoredNoProduct   = ignored{kidv1.ProductGoneReason, "the event's KidProduct does not exist"}
)

// ignoredUndecodable says the data does not decode as the event type's
// payload. The decoder's error is not repeated: it may quote a value.
func ignoredUndecodable(eventType string) ignored {
	return ignored{kidv1.UndecodableDataReason, "the stored data does not decode as a " + eventType + " payload; the event is kept as a record"}
}

// errWaitingForMerge ends a fold that must wait for the cache to show where
// a merge took the event's name (WaitingForMergeReason).
var errWaitingForMerge = errors.New("waiting for the cache to show a merge")
