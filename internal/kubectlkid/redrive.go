package kubectlkid

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

type redriveOptions struct {
	*Options
	failed  bool
	action  string
	product string
	dryRun  bool
	yes     bool
}

func newRedriveCommand(o *Options) *cobra.Command {
	r := &redriveOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "redrive (<event> | --failed) [--action A]",
		Short: "Run the failed action runs of an event again, or of every event whose runs failed",
		Long: `Redrive sets the kid.dev/redrive annotation on KidEvents. The KidEvent
controller then puts every failed run of the event back to its first attempt,
removes the annotation and runs them again (with --action, the events chosen
are those with a failed run of that action; their other failed runs re-run
too, as the controller redrives whole events).

--dry-run prints what would be redriven and changes nothing. Before
redriving more than one event it lists them and asks, unless --yes.`,
		Example: `  kubectl kid redrive demo-challenge-statechange-1b2c3d4e5f60718293a4
  kubectl kid redrive --failed --action notify-backend --dry-run
  kubectl kid redrive --failed --product my-game --yes`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return r.run(cmd.Context(), args) },
	}
	cmd.Flags().BoolVar(&r.failed, "failed", false, "every event of the namespace with a failed run")
	cmd.Flags().StringVar(&r.action, "action", "", "only events with a failed run of this KidAction")
	cmd.Flags().StringVar(&r.product, "product", "", "with --failed, only the events of this KidProduct")
	cmd.Flags().BoolVar(&r.dryRun, "dry-run", false, "print what would be redriven; change nothing")
	cmd.Flags().BoolVarP(&r.yes, "yes", "y", false, "do not ask before redriving more than one event")
	completeProductFlag(cmd, o)
	return cmd
}

func (r *redriveOptions) run(ctx context.Context, args []string) error {
	if err := r.check(args); err != nil {
		return err
	}
	s, err := r.connect()
	if err != nil {
		return err
	}
	var events []kidv1.KidEvent
	if r.failed {
		if events, err = r.failedEvents(ctx, s); err != nil {
			return err
		}
		if len(events) == 0 {
			fmt.Fprintf(r.Out, "No KidEvent in namespace %s has a failed run%s.\n", s.namespace, r.ofAction())
			return nil
		}
	} else {
		e := &kidv1.KidEvent{}
		if err := s.client.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: args[0]}, e); err != nil {
			return fmt.Errorf("reading KidEvent %s: %w", args[0], err)
		}
		if len(r.failedRuns(e)) == 0 {
			return fmt.Errorf("KidEvent %s has no failed run%s: nothing to redrive", e.Name, r.ofAction())
		}
		events = []kidv1.KidEvent{*e}
	}
	if r.dryRun {
		for i := range events {
			fmt.Fprintf(r.Out, "kidevent/%s would be redriven: %s\n", events[i].Name, describeRuns(r.failedRuns(&events[i])))
		}
		fmt.Fprintf(r.Out, "%d event(s) would be redriven (dry run: nothing was changed).\n", len(events))
		return nil
	}
	if len(events) > 1 && !r.yes {
		// A redrive runs every failed run again, calls to the backends
		// included: many at once deserve a look first.
		for i := range events {
			fmt.Fprintf(r.Out, "kidevent/%s: %s\n", events[i].Name, describeRuns(r.failedRuns(&events[i])))
		}
		if err := r.confirm(fmt.Sprintf("Redrive these %d events, running their failed runs again?", len(events))); err != nil {
			return err
		}
	}
	value := r.Clock.Now().UTC().Format(time.RFC3339Nano)
	for i := range events {
		runs := describeRuns(r.failedRuns(&events[i]))
		if err := redriveEvent(ctx, s.client, &events[i], value); err != nil {
			return err
		}
		fmt.Fprintf(r.Out, "kidevent/%s redriven: %s\n", events[i].Name, runs)
	}
	fmt.Fprintf(r.Out, "%d event(s) redriven: each failed run starts again from its first attempt (kubectl kid events --watch follows them).\n", len(events))
	return nil
}

// check validates the arguments: one event, or --failed.
func (r *redriveOptions) check(args []string) error {
	switch {
	case r.failed == (len(args) == 1):
		return errors.New("name one event, or pass --failed for every event with a failed run")
	case !r.failed && r.product != "":
		return errors.New("--product goes with --failed")
	case len(args) == 1 && len(validation.IsDNS1123Subdomain(args[0])) > 0:
		return fmt.Errorf("%q is not a KidEvent name", args[0])
	case r.action != "" && len(validation.IsDNS1123Subdomain(r.action)) > 0:
		return fmt.Errorf("--action %q is not a KidAction name", r.action)
	}
	return checkProduct(r.product)
}

func (r *redriveOptions) ofAction() string {
	if r.action == "" {
		return ""
	}
	return " of action " + r.action
}

// failedEvents lists the namespace's events with a failed run (of the
// action, if given), by the time they were received.
func (r *redriveOptions) failedEvents(ctx context.Context, s *session) ([]kidv1.KidEvent, error) {
	opts := []client.ListOption{client.InNamespace(s.namespace)}
	if r.product != "" {
		opts = append(opts, client.MatchingLabels{kidv1.ProductLabel: r.product})
	}
	var out []kidv1.KidEvent
	err := eachEvent(ctx, s.client, func(e *kidv1.KidEvent) {
		if len(r.failedRuns(e)) > 0 {
			out = append(out, *e.DeepCopy())
		}
	}, opts...)
	sortByReceived(out)
	return out, err
}

// failedRuns are the event's failed runs; with --action, none unless that
// action's run failed, and then every failed run (the controller redrives
// them all).
func (r *redriveOptions) failedRuns(e *kidv1.KidEvent) []kidv1.ActionRunStatus {
	var failed []kidv1.ActionRunStatus
	ofAction := r.action == ""
	for _, run := range e.Status.Actions {
		if run.Phase == kidv1.RunFailed {
			failed = append(failed, run)
			ofAction = ofAction || run.Name == r.action
		}
	}
	if !ofAction {
		return nil
	}
	return failed
}

// redriveEvent sets the redrive annotation. The controller acts on its
// presence and removes it; a new value each time makes a repeated request a
// change that wakes it even if an earlier one is still there.
func redriveEvent(ctx context.Context, c client.Writer, e *kidv1.KidEvent, value string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{kidv1.RedriveAnnotation: value}}})
	if err != nil {
		return err
	}
	if err := c.Patch(ctx, e, client.RawPatch(types.MergePatchType, patch)); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("KidEvent %s is gone (retention or erasure deleted it)", e.Name)
		}
		return fmt.Errorf("annotating KidEvent %s: %w", e.Name, err)
	}
	return nil
}

// describeRuns says which runs were failed and why, on one line.
func describeRuns(runs []kidv1.ActionRunStatus) string {
	parts := make([]string, 0, len(runs))
	for _, run := range runs {
		p := fmt.Sprintf("%s (failed after %d attempt(s)", run.Name, run.Attempts)
		if run.LastError != "" {
			p += ": " + oneLine(run.LastError)
		}
		parts = append(parts, p+")")
	}
	return strings.Join(parts, ", ")
}
