package kubectlkid

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// recentKidEvents is how many of a player's KidEvents, the latest by
// signing time, have their Kubernetes Events read: one field-selected list
// each, so a player with a long history costs a bounded number of calls.
const recentKidEvents = 20

// maxRecent is how many Kubernetes Events `user` prints, the latest.
const maxRecent = 20

// recentEvents are the Kubernetes Events (core/v1, as kubectl describe
// shows them) about the player: those whose involvedObject is the KidUser,
// and those about its latest KidEvents (the controllers record an
// ActionFailed Warning on the event whose run failed). Each is one list
// with a field selector on involvedObject, never the namespace's every
// Event. Events are kept an hour by default (kube-apiserver --event-ttl).
func recentEvents(ctx context.Context, c client.Reader, u *kidv1.KidUser, events []kidv1.KidEvent) ([]corev1.Event, error) {
	about := []client.MatchingFields{{"involvedObject.kind": "KidUser", "involvedObject.name": u.Name}}
	for i := max(0, len(events)-recentKidEvents); i < len(events); i++ {
		about = append(about, client.MatchingFields{"involvedObject.kind": "KidEvent", "involvedObject.name": events[i].Name})
	}
	var out []corev1.Event
	for _, sel := range about {
		var list corev1.EventList
		if err := c.List(ctx, &list, client.InNamespace(u.Namespace), sel); err != nil {
			return nil, fmt.Errorf("listing the Events about %s %s: %w", sel["involvedObject.kind"], sel["involvedObject.name"], err)
		}
		out = append(out, list.Items...)
	}
	sort.SliceStable(out, func(i, j int) bool { return lastSeen(&out[i]).Before(lastSeen(&out[j])) })
	if len(out) > maxRecent {
		out = out[len(out)-maxRecent:]
	}
	return out, nil
}

// lastSeen is when an Event last happened, whichever API wrote it: the
// events.k8s.io recorder the controllers use sets eventTime (and a series
// when it repeats), the older core/v1 one lastTimestamp.
func lastSeen(e *corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// count is how many times an Event happened.
func count(e *corev1.Event) int32 {
	switch {
	case e.Series != nil:
		return e.Series.Count
	case e.Count > 0:
		return e.Count
	}
	return 1
}

// describeRecent writes the Events as the Events section of kubectl
// describe, oldest first.
func describeRecent(out io.Writer, events []corev1.Event) error {
	w := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "Recent Events (of the KidUser and its latest KidEvents):")
	if len(events) == 0 {
		fmt.Fprintln(w, "  <none>")
		return w.Flush()
	}
	row(w, 1, "LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE")
	for i := range events {
		e := &events[i]
		obj := strings.ToLower(e.InvolvedObject.Kind) + "/" + e.InvolvedObject.Name
		row(w, 1, lastSeen(e).UTC().Format(time.RFC3339), e.Type, e.Reason, obj, fmt.Sprint(count(e)), oneLine(e.Message))
	}
	return w.Flush()
}
