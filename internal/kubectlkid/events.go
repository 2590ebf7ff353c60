package kubectlkid

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
)

type eventsOptions struct {
	*Options
	product       string
	eventType     string
	watch         bool
	allNamespaces bool
	output        string
}

func newEventsCommand(o *Options) *cobra.Command {
	e := &eventsOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List KidEvents by the time they were received; --watch follows new events and phase changes",
		Example: `  kubectl kid events
  kubectl kid events --product my-game --type Session.Delete
  kubectl kid events -A --watch
  kubectl kid events --product my-game -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return e.run(cmd.Context()) },
	}
	cmd.Flags().StringVar(&e.product, "product", "", "only the events of this KidProduct")
	cmd.Flags().StringVar(&e.eventType, "type", "", "only events of this k-ID event type, exactly (Challenge.StateChange, Session.Delete, ...)")
	cmd.Flags().BoolVarP(&e.watch, "watch", "w", false, "after the list, print a row whenever an event arrives or changes phase or user")
	cmd.Flags().BoolVarP(&e.allNamespaces, "all-namespaces", "A", false, "list the events of every namespace")
	cmd.Flags().StringVarP(&e.output, "output", "o", "", "json or yaml: print the KidEvents as a List, by the time received, instead of the table")
	completeProductFlag(cmd, o)
	return cmd
}

func (e *eventsOptions) run(ctx context.Context) error {
	if err := checkProduct(e.product); err != nil {
		return err
	}
	if len(e.eventType) > kid.MaxEventTypeLen {
		return fmt.Errorf("--type is longer than %d bytes", kid.MaxEventTypeLen)
	}
	if err := checkOutput(e.output); err != nil {
		return err
	}
	if e.output != "" && e.watch {
		return errors.New("--output goes without --watch")
	}
	s, err := e.connect()
	if err != nil {
		return err
	}
	opts := e.listOptions(s.namespace)
	var events []kidv1.KidEvent
	rv, err := eachEventRV(ctx, s.client, func(ev *kidv1.KidEvent) {
		if e.selects(ev) {
			events = append(events, *ev.DeepCopy())
		}
	}, opts...)
	if err != nil {
		return err
	}
	sortByReceived(events)
	if e.output != "" {
		objs := make([]client.Object, 0, len(events))
		for i := range events {
			objs = append(objs, &events[i])
		}
		return printList(e.Out, objs, e.output)
	}
	t := newEventTable(e.allNamespaces)
	rows := make([][]string, 0, len(events))
	for i := range events {
		rows = append(rows, t.cells(&events[i], e.Clock.Now()))
	}
	t.fit(rows)
	if e.watch {
		products, err := e.productsInScope(ctx, s)
		if err != nil {
			return err
		}
		t.widen(products)
	}
	if len(events) == 0 && !e.watch {
		fmt.Fprintln(e.ErrOut, "No KidEvents found.")
		return nil
	}
	t.write(e.Out, t.header)
	for _, r := range rows {
		t.write(e.Out, r)
	}
	if !e.watch {
		return nil
	}
	seen := map[string]string{}
	for i := range events {
		seen[key(&events[i])] = state(&events[i])
	}
	return e.follow(ctx, s.client, opts, rv, t, seen)
}

// listOptions select the namespace (none with -A) and the product.
func (e *eventsOptions) listOptions(ns string) []client.ListOption {
	var opts []client.ListOption
	if !e.allNamespaces {
		opts = append(opts, client.InNamespace(ns))
	}
	if e.product != "" {
		opts = append(opts, client.MatchingLabels{kidv1.ProductLabel: e.product})
	}
	return opts
}

// productsInScope are the names of the products whose events may be
// watched, to size the columns for events not seen yet.
func (e *eventsOptions) productsInScope(ctx context.Context, s *session) ([]string, error) {
	if e.product != "" {
		return []string{e.product}, nil
	}
	var list kidv1.KidProductList
	var opts []client.ListOption
	if !e.allNamespaces {
		opts = append(opts, client.InNamespace(s.namespace))
	}
	if err := s.client.List(ctx, &list, opts...); err != nil {
		return nil, fmt.Errorf("listing KidProducts: %w", err)
	}
	names := make([]string, 0, len(list.Items))
	for _, p := range list.Items {
		names = append(names, p.Name)
	}
	return names, nil
}

// selects applies --type, compared exactly (the label holds a slug for
// types that are not valid label values).
func (e *eventsOptions) selects(ev *kidv1.KidEvent) bool {
	return e.eventType == "" || ev.Spec.EventType == e.eventType
}

// follow prints a row for each event that arrives, or whose phase or user
// changes, until ctx ends. A watch the API server closes is opened again
// from the last version seen; one whose version expired starts from the
// current state, printing only what changed.
func (e *eventsOptions) follow(ctx context.Context, c client.WithWatch, opts []client.ListOption, rv string, t *eventTable, seen map[string]string) error {
	for ctx.Err() == nil {
		w, err := c.Watch(ctx, &kidv1.KidEventList{}, append(opts, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}})...)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return fmt.Errorf("watching KidEvents: %w", err)
		}
		rv, err = e.drain(ctx, w, t, seen, rv)
		w.Stop()
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			rv = ""
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// drain prints the rows of one watch until it closes, and returns the last
// resource version seen.
func (e *eventsOptions) drain(ctx context.Context, w watch.Interface, t *eventTable, seen map[string]string, rv string) (string, error) {
	for {
		select {
		case <-ctx.Done():
			return rv, nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return rv, nil
			}
			switch ev.Type {
			case watch.Error:
				return rv, apierrors.FromObject(ev.Object)
			case watch.Added, watch.Modified, watch.Bookmark:
				obj, ok := ev.Object.(*kidv1.KidEvent)
				if !ok {
					continue
				}
				rv = obj.ResourceVersion
				if ev.Type == watch.Bookmark || !e.selects(obj) {
					continue
				}
				k, now := key(obj), state(obj)
				if seen[k] == now {
					continue
				}
				seen[k] = now
				t.write(e.Out, t.cells(obj, e.Clock.Now()))
			case watch.Deleted:
				if obj, ok := ev.Object.(*kidv1.KidEvent); ok {
					rv = obj.ResourceVersion
					delete(seen, key(obj))
				}
			}
		}
	}
}

func key(e *kidv1.KidEvent) string { return e.Namespace + "/" + e.Name }

// state is what makes a watched event worth a new row.
func state(e *kidv1.KidEvent) string { return phase(e) + "/" + user(e) }

func user(e *kidv1.KidEvent) string {
	if e.Status.UserRef == nil {
		return "<none>"
	}
	return e.Status.UserRef.Name
}

func sortByReceived(events []kidv1.KidEvent) {
	sort.SliceStable(events, func(i, j int) bool {
		ti, tj := events[i].Spec.ReceivedAt.Time, events[j].Spec.ReceivedAt.Time
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return key(&events[i]) < key(&events[j])
	})
}

// eventTable prints rows in columns as kubectl get does. The widths are
// those of the first rows, so that the rows a watch prints later line up
// under them (a longer value widens only its own row).
type eventTable struct {
	header []string
	widths []int
	all    bool
}

func newEventTable(allNamespaces bool) *eventTable {
	t := &eventTable{header: []string{"NAME", "PRODUCT", "TYPE", "SOURCE", "PHASE", "USER", "AGE"}, all: allNamespaces}
	if allNamespaces {
		t.header = append([]string{"NAMESPACE"}, t.header...)
	}
	return t
}

func (t *eventTable) cells(e *kidv1.KidEvent, now time.Time) []string {
	c := []string{e.Name, e.Spec.ProductRef.Name, e.Spec.EventType, string(e.Spec.Source), phase(e), user(e), age(e.Spec.ReceivedAt, now)}
	if t.all {
		c = append([]string{e.Namespace}, c...)
	}
	return c
}

func (t *eventTable) fit(rows [][]string) {
	t.widths = make([]int, len(t.header))
	for _, r := range append([][]string{t.header}, rows...) {
		for i, c := range r {
			t.widths[i] = max(t.widths[i], len(c))
		}
	}
}

// knownTypes are the event types of k-ID's webhooks: the widest values of
// the TYPE column, and of the type slug inside event names.
var knownTypes = []string{
	kid.ChallengeStateChange, kid.VerificationResult, kid.VerificationRevoke, kid.AccountDelete, kid.AgeAssuranceResult,
	kid.AdultVerificationResult, kid.ParentalConsentGranted, kid.SessionChangePermissions, kid.SessionDelete, kid.TestEvent,
}

// widen makes the columns of a watch wide enough for the events of the
// products that may arrive later, so that their rows line up too: an event
// name is <product>-<type slug>-<20 hex digits> (kid.EventName), a user name
// <product>-<kind>-<20 hex digits> (controllers.UserName).
func (t *eventTable) widen(products []string) {
	col := func(name string) int {
		for i, h := range t.header {
			if h == name {
				return i
			}
		}
		return -1
	}
	for _, ty := range knownTypes {
		t.widths[col("TYPE")] = max(t.widths[col("TYPE")], len(ty))
		for _, p := range products {
			t.widths[col("NAME")] = max(t.widths[col("NAME")], len(kid.EventName(p, ty, "")))
		}
	}
	for _, p := range products {
		t.widths[col("USER")] = max(t.widths[col("USER")], len(p+"-verification-")+20)
		t.widths[col("PRODUCT")] = max(t.widths[col("PRODUCT")], len(p))
	}
	for _, src := range []kidv1.EventSource{kidv1.SourceWebhook, kidv1.SourcePoll, kidv1.SourceBrowser, kidv1.SourceManual} {
		t.widths[col("SOURCE")] = max(t.widths[col("SOURCE")], len(src))
	}
	t.widths[col("PHASE")] = max(t.widths[col("PHASE")], len(kidv1.EventSucceeded))
}

func (t *eventTable) write(w io.Writer, cells []string) {
	var b strings.Builder
	for i, c := range cells {
		if i == len(cells)-1 {
			b.WriteString(c)
			break
		}
		fmt.Fprintf(&b, "%-*s   ", t.widths[i], c)
	}
	fmt.Fprintln(w, b.String())
}

// age is kubectl's AGE: a short, rounded duration.
func age(t metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

// eachEventRV is eachEvent that also returns the list's resource version,
// from which a watch continues.
func eachEventRV(ctx context.Context, c client.Reader, f func(*kidv1.KidEvent), opts ...client.ListOption) (string, error) {
	var cont, rv string
	for {
		var list kidv1.KidEventList
		if err := c.List(ctx, &list, append(opts, client.Limit(listPage), client.Continue(cont))...); err != nil {
			return "", fmt.Errorf("listing KidEvents: %w", err)
		}
		if rv == "" {
			rv = list.ResourceVersion
		}
		for i := range list.Items {
			f(&list.Items[i])
		}
		if cont = list.Continue; cont == "" {
			return rv, nil
		}
	}
}
