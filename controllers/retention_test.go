package controllers

import (
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

func eventAt(name string, at time.Time, phase kidv1.EventPhase) *kidv1.KidEvent {
	return &kidv1.KidEvent{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       kidv1.KidEventSpec{ReceivedAt: metav1.NewTime(at)},
		Status:     kidv1.KidEventStatus{Phase: phase},
	}
}

func names(events []*kidv1.KidEvent) []string {
	out := []string{}
	for _, e := range events {
		out = append(out, e.Name)
	}
	return out
}

func TestRetentionDefaultsAndHorizon(t *testing.T) {
	g := NewWithT(t)
	p := &kidv1.KidProduct{}
	r := retentionOf(p)
	g.Expect(r.maxAge).To(Equal(7 * 24 * time.Hour))
	g.Expect(r.maxEvents).To(Equal(5000))
	g.Expect(r.horizon).To(Equal(5*time.Minute + 15*time.Second))

	p.Spec.Retention.MaxAge = &metav1.Duration{Duration: time.Second}
	g.Expect(retentionOf(p).maxAge).To(Equal(r.horizon), "never sooner than the deduplication horizon")
	p.Spec.Retention.MaxAge = &metav1.Duration{Duration: 20 * 365 * 24 * time.Hour}
	g.Expect(retentionOf(p).maxAge).To(Equal(kidv1.MaxRetentionMaxAge), "never longer than the CRD's bound, for objects stored before it")
}

func TestRetentionExpiry(t *testing.T) {
	now := time.Unix(1764000000, 0)
	r := retention{maxAge: time.Hour, maxEvents: 2, horizon: 5 * time.Minute}
	cases := []struct {
		name    string
		events  []*kidv1.KidEvent
		byAge   []string
		byCount []string
		next    time.Duration
	}{
		{
			name:   "old finished events go, unfinished stay however old",
			events: []*kidv1.KidEvent{eventAt("old-applied", now.Add(-2*time.Hour), kidv1.EventApplied), eventAt("old-pending", now.Add(-2*time.Hour), kidv1.EventPending), eventAt("old-unset", now.Add(-2*time.Hour), "")},
			byAge:  []string{"old-applied"}, byCount: []string{},
		},
		{
			name: "beyond the count the oldest finished go",
			events: []*kidv1.KidEvent{
				eventAt("a", now.Add(-10*time.Minute), kidv1.EventApplied), eventAt("b", now.Add(-20*time.Minute), kidv1.EventIgnored),
				eventAt("c", now.Add(-30*time.Minute), kidv1.EventSucceeded), eventAt("d", now.Add(-40*time.Minute), kidv1.EventFailed),
			},
			byAge: []string{}, byCount: []string{"c", "d"}, next: 40 * time.Minute,
		},
		{
			name: "nothing younger than the horizon goes, even beyond the count",
			events: []*kidv1.KidEvent{
				eventAt("a", now.Add(-1*time.Minute), kidv1.EventApplied), eventAt("b", now.Add(-2*time.Minute), kidv1.EventApplied),
				eventAt("c", now.Add(-3*time.Minute), kidv1.EventApplied),
			},
			byAge: []string{}, byCount: []string{}, next: 2 * time.Minute,
		},
		{
			name:   "the next expiry is the oldest kept event's",
			events: []*kidv1.KidEvent{eventAt("a", now.Add(-45*time.Minute), kidv1.EventApplied)},
			byAge:  []string{}, byCount: []string{}, next: 15 * time.Minute,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			byAge, byCount, next := r.expired(tc.events, now)
			g.Expect(names(byAge)).To(Equal(tc.byAge))
			g.Expect(names(byCount)).To(Equal(tc.byCount))
			g.Expect(next).To(Equal(tc.next))
		})
	}
}

func TestRetentionKeepsAProductAt10PerSecondUnder10000(t *testing.T) {
	g := NewWithT(t)
	now := time.Unix(1764000000, 0)
	r := retentionOf(&kidv1.KidProduct{Spec: kidv1.KidProductSpec{Retention: kidv1.RetentionSpec{MaxEvents: ptr.To[int32](DefaultRetentionMaxEvents)}}})
	// One hour of 10 events per second, all finished.
	var events []*kidv1.KidEvent
	for i := range 36000 {
		events = append(events, eventAt(fmt.Sprint(i), now.Add(-time.Duration(i)*100*time.Millisecond), kidv1.EventApplied))
	}
	byAge, byCount, _ := r.expired(events, now)
	kept := len(events) - len(byAge) - len(byCount)
	g.Expect(kept).To(BeNumerically("<", 10000))
	// Within the horizon (5m15s at 10/s = 3150 events) nothing is deleted.
	g.Expect(kept).To(BeNumerically(">=", 3150))
}

func TestRetentionKeepsEventsWithPendingActionRuns(t *testing.T) {
	g := NewWithT(t)
	now := time.Unix(1764000000, 0)
	r := retention{maxAge: time.Hour, maxEvents: 100, horizon: time.Minute}
	pending := eventAt("pending-run", now.Add(-2*time.Hour), kidv1.EventApplied)
	pending.Status.Actions = []kidv1.ActionRunStatus{{Name: "a", Phase: kidv1.RunPending}}
	done := eventAt("done-run", now.Add(-2*time.Hour), kidv1.EventApplied)
	done.Status.Actions = []kidv1.ActionRunStatus{{Name: "a", Phase: kidv1.RunSkipped}}
	byAge, _, _ := r.expired([]*kidv1.KidEvent{pending, done}, now)
	g.Expect(names(byAge)).To(Equal([]string{"done-run"}))
}
