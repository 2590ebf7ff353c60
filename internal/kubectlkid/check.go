package kubectlkid

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// leaseName is the manager's leader election Lease (operator.go's
// LeaderElectionID).
const leaseName = "kid-operator.kid.dev"

type checkOptions struct {
	*Options
	allNamespaces     bool
	operatorNamespace string
	service           string
	lease             string
	pendingFor        time.Duration
}

func newCheckCommand(o *Options) *cobra.Command {
	c := &checkOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "check",
		Short: "One screen of health for the person on call; exits non-zero when something needs a look",
		Long: `Check shows, for the products of the namespace (-A: of every namespace):
their conditions (Ready, APIReady, ErasuresHeld), the events still Pending
and the events whose failed runs wait for a redrive; then the receiver's
ready pods (behind its Service), the controllers' leader (the leader
election Lease) and k-ID's API breaker (a product's APIReady False with
reason Failing). It lists every problem found and exits 1 when there is one,
so that it can be scripted:

  a product not Ready, or Stalled;
  a product's APIReady False for any reason but NotConfigured (Failing is
  the breaker open; Unauthorized, Unreachable, ...);
  a product's erasures held (ErasuresHeld: a person resumes them);
  an event Pending for longer than --pending-for (the controllers are not
  folding: is there a leader?);
  an event with a failed run (kubectl kid redrive);
  no ready receiver pod, or the receiver's Service cannot be read;
  a leader election Lease that expired (no replica leads).

No Lease means leader election is off (one replica), which is no problem.`,
		Example: `  kubectl kid check -n games
  kubectl kid check -A --operator-namespace kid-system
  kubectl kid check -A >/dev/null || page-the-team`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return c.run(cmd.Context()) },
	}
	cmd.Flags().BoolVarP(&c.allNamespaces, "all-namespaces", "A", false, "check the products of every namespace")
	cmd.Flags().StringVar(&c.operatorNamespace, "operator-namespace", "kid-system", "namespace of the operator: its receiver Service and leader election Lease")
	cmd.Flags().StringVar(&c.service, "service", "kid-operator-webhook", "name of the receiver Service")
	cmd.Flags().StringVar(&c.lease, "lease", leaseName, "name of the leader election Lease")
	cmd.Flags().DurationVar(&c.pendingFor, "pending-for", time.Minute, "an event Pending for longer than this is a problem (1s..1h)")
	return cmd
}

// health gathers the problems check found.
type health struct {
	problems []string
}

func (h *health) problem(format string, args ...any) {
	h.problems = append(h.problems, fmt.Sprintf(format, args...))
}

// backlog is what a product's events wait for.
type backlog struct {
	pending       int
	oldestPending time.Time
	failed        int
}

func (c *checkOptions) run(ctx context.Context) error {
	if err := c.check(); err != nil {
		return err
	}
	s, err := c.connect()
	if err != nil {
		return err
	}
	var opts []client.ListOption
	if !c.allNamespaces {
		opts = append(opts, client.InNamespace(s.namespace))
	}
	var products kidv1.KidProductList
	if err := s.client.List(ctx, &products, opts...); err != nil {
		return fmt.Errorf("listing KidProducts: %w", err)
	}
	backlogs, err := c.backlogs(ctx, s.client, opts)
	if err != nil {
		return err
	}
	h := &health{}
	now := c.Clock.Now()
	if err := c.writeProducts(c.Out, products.Items, backlogs, now, h); err != nil {
		return err
	}
	if len(products.Items) == 0 {
		where := "namespace " + s.namespace
		if c.allNamespaces {
			where = "any namespace"
		}
		fmt.Fprintf(c.Out, "No KidProducts in %s.\n", where)
	}
	fmt.Fprintf(c.Out, "Receiver:  %s\n", c.receiver(ctx, s.client, h))
	fmt.Fprintf(c.Out, "Leader:    %s\n", c.leader(ctx, s.client, now, h))
	fmt.Fprintf(c.Out, "k-ID API:  %s\n", breakers(products.Items))
	if len(h.problems) == 0 {
		fmt.Fprintln(c.Out, "Healthy.")
		return nil
	}
	fmt.Fprintf(c.Out, "%d problem(s):\n", len(h.problems))
	for _, p := range h.problems {
		fmt.Fprintf(c.Out, "  - %s\n", p)
	}
	return fmt.Errorf("unhealthy: %d problem(s)", len(h.problems))
}

func (c *checkOptions) check() error {
	if errs := validation.IsDNS1123Label(c.operatorNamespace); len(errs) > 0 {
		return fmt.Errorf("--operator-namespace %q is not a namespace name: %s", c.operatorNamespace, errs[0])
	}
	if errs := validation.IsDNS1035Label(c.service); len(errs) > 0 {
		return fmt.Errorf("--service %q is not a Service name: %s", c.service, errs[0])
	}
	if errs := validation.IsDNS1123Subdomain(c.lease); len(errs) > 0 {
		return fmt.Errorf("--lease %q is not a Lease name: %s", c.lease, errs[0])
	}
	if c.pendingFor < time.Second || c.pendingFor > time.Hour {
		return fmt.Errorf("--pending-for %s is out of range: between 1s and 1h", c.pendingFor)
	}
	return nil
}

// backlogs counts, per product (namespace/name), the events Pending and
// those with a failed run. KidEvents are bounded by the products'
// retention, and read a page at a time as `kubectl kid events` reads them;
// KidUsers, which may be 250,000, are not read at all.
func (c *checkOptions) backlogs(ctx context.Context, cl client.Reader, opts []client.ListOption) (map[string]*backlog, error) {
	out := map[string]*backlog{}
	err := eachEvent(ctx, cl, func(e *kidv1.KidEvent) {
		k := e.Namespace + "/" + e.Spec.ProductRef.Name
		b := out[k]
		if b == nil {
			b = &backlog{}
			out[k] = b
		}
		if phase(e) == string(kidv1.EventPending) {
			b.pending++
			if b.oldestPending.IsZero() || e.Spec.ReceivedAt.Time.Before(b.oldestPending) {
				b.oldestPending = e.Spec.ReceivedAt.Time
			}
		}
		if slices.ContainsFunc(e.Status.Actions, func(r kidv1.ActionRunStatus) bool { return r.Phase == kidv1.RunFailed }) {
			b.failed++
		}
	}, opts...)
	return out, err
}

// writeProducts prints a row per product and notes its problems.
func (c *checkOptions) writeProducts(out io.Writer, products []kidv1.KidProduct, backlogs map[string]*backlog, now time.Time, h *health) error {
	if len(products) == 0 {
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
	header := []string{"PRODUCT", "READY", "API", "ERASURES", "PENDING", "FAILED RUNS"}
	if c.allNamespaces {
		header = append([]string{"NAMESPACE"}, header...)
	}
	row(w, 0, header...)
	for i := range products {
		p := &products[i]
		name := p.Name
		if c.allNamespaces {
			name = p.Namespace + "/" + p.Name
		}
		conds := p.Status.Conditions
		ready := conditionCell(conds, kidv1.ReadyCondition)
		if !meta.IsStatusConditionTrue(conds, kidv1.ReadyCondition) {
			h.problem("product %s is not Ready: %s", name, conditionText(conds, kidv1.ReadyCondition))
		}
		if meta.IsStatusConditionTrue(conds, kidv1.StalledCondition) {
			h.problem("product %s is Stalled: %s", name, conditionText(conds, kidv1.StalledCondition))
		}
		api := conditionCell(conds, kidv1.APIReadyCondition)
		if a := meta.FindStatusCondition(conds, kidv1.APIReadyCondition); a != nil && a.Status != metav1.ConditionTrue && a.Reason != kidv1.NotConfiguredReason {
			h.problem("product %s cannot use k-ID's API: APIReady %s", name, conditionText(conds, kidv1.APIReadyCondition))
		}
		erasures := "flowing"
		if meta.IsStatusConditionTrue(conds, kidv1.ErasuresHeldCondition) {
			erasures = "held"
			h.problem("product %s holds erasures learned from k-ID's API: %s (resume with the %s annotation)", name, conditionText(conds, kidv1.ErasuresHeldCondition), kidv1.ResumeErasuresAnnotation)
		}
		b := backlogs[p.Namespace+"/"+p.Name]
		if b == nil {
			b = &backlog{}
		}
		pending := strconv.Itoa(b.pending)
		if b.pending > 0 {
			oldest := now.Sub(b.oldestPending)
			pending += " (oldest " + duration.HumanDuration(oldest) + ")"
			if oldest > c.pendingFor {
				h.problem("product %s: %d event(s) Pending, the oldest received %s ago (over --pending-for %s): are the controllers running, is there a leader?", name, b.pending, duration.HumanDuration(oldest), c.pendingFor)
			}
		}
		if b.failed > 0 {
			h.problem("product %s: %d event(s) with a failed run wait for a redrive (kubectl kid redrive --failed --product %s -n %s)", name, b.failed, p.Name, p.Namespace)
		}
		cells := []string{p.Name, ready, api, erasures, pending, strconv.Itoa(b.failed)}
		if c.allNamespaces {
			cells = append([]string{p.Namespace}, cells...)
		}
		row(w, 0, cells...)
	}
	return w.Flush()
}

// conditionCell is a condition for a table cell: its status, and its
// reason when it is not True.
func conditionCell(conds []metav1.Condition, t string) string {
	c := meta.FindStatusCondition(conds, t)
	switch {
	case c == nil:
		return "<unknown>"
	case c.Status == metav1.ConditionTrue:
		return string(c.Status)
	}
	return string(c.Status) + " (" + c.Reason + ")"
}

// conditionText is a condition in words, for a problem.
func conditionText(conds []metav1.Condition, t string) string {
	c := meta.FindStatusCondition(conds, t)
	if c == nil {
		return "no " + t + " condition yet (has the controller seen it?)"
	}
	s := string(c.Status) + ", " + c.Reason
	if c.Message != "" {
		s += ": " + oneLine(c.Message)
	}
	return s
}

// receiver says how many of the receiver's pods are ready: the pods its
// Service selects, as the Service's endpoints count them. None ready means
// k-ID's deliveries fail (k-ID retries them).
func (c *checkOptions) receiver(ctx context.Context, cl client.Reader, h *health) string {
	where := c.operatorNamespace + "/" + c.service
	svc := &corev1.Service{}
	if err := cl.Get(ctx, client.ObjectKey{Namespace: c.operatorNamespace, Name: c.service}, svc); err != nil {
		h.problem("receiver: cannot read its Service %s (--operator-namespace, --service): %s", where, reason(err))
		return "unknown"
	}
	if len(svc.Spec.Selector) == 0 {
		h.problem("receiver: the Service %s selects no pods", where)
		return "unknown"
	}
	var pods corev1.PodList
	if err := cl.List(ctx, &pods, client.InNamespace(c.operatorNamespace), client.MatchingLabels(svc.Spec.Selector)); err != nil {
		h.problem("receiver: cannot list the pods of Service %s: %s", where, reason(err))
		return "unknown"
	}
	ready := 0
	for i := range pods.Items {
		if podReady(&pods.Items[i]) {
			ready++
		}
	}
	if ready == 0 {
		h.problem("receiver: no ready pod behind Service %s: k-ID's deliveries fail until one is (k-ID retries them)", where)
	}
	return fmt.Sprintf("%d/%d pods ready behind Service %s", ready, len(pods.Items), where)
}

// leader reads the leader election Lease: its holder, and whether the
// holder still renews it. No Lease: leader election is off.
func (c *checkOptions) leader(ctx context.Context, cl client.Reader, now time.Time, h *health) string {
	where := c.operatorNamespace + "/" + c.lease
	l := &coordinationv1.Lease{}
	err := cl.Get(ctx, client.ObjectKey{Namespace: c.operatorNamespace, Name: c.lease}, l)
	switch {
	case apierrors.IsNotFound(err):
		return "leader election off (no Lease " + where + ")"
	case err != nil:
		h.problem("leader: cannot read the Lease %s: %s", where, reason(err))
		return "unknown"
	}
	holder := ""
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	if holder == "" {
		// A leader that stops on purpose (LeaderElectionReleaseOnCancel)
		// empties the holder; the next replica takes over within a retry.
		h.problem("leader: the Lease %s has no holder: no replica runs the controllers", where)
		return "none (Lease " + where + ")"
	}
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return holder + " (Lease " + where + ")"
	}
	renewed := l.Spec.RenewTime.Time
	expires := renewed.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second)
	if now.After(expires) {
		h.problem("leader: %s stopped renewing the Lease %s %s ago: no replica runs the controllers", holder, where, duration.HumanDuration(now.Sub(renewed)))
		return holder + ", expired (Lease " + where + ")"
	}
	return fmt.Sprintf("%s, renewed %s ago (Lease %s)", holder, duration.HumanDuration(max(0, now.Sub(renewed))), where)
}

// breakers says which products' k-ID API breaker is open: APIReady False
// with reason Failing (controllers/apibreaker.go).
func breakers(products []kidv1.KidProduct) string {
	var open, using []string
	for i := range products {
		p := &products[i]
		a := meta.FindStatusCondition(p.Status.Conditions, kidv1.APIReadyCondition)
		switch {
		case a == nil || a.Reason == kidv1.NotConfiguredReason:
		case a.Reason == kidv1.FailingReason:
			open = append(open, p.Name)
			using = append(using, p.Name)
		default:
			using = append(using, p.Name)
		}
	}
	switch {
	case len(using) == 0:
		return "no product uses k-ID's API (no spec.api)"
	case len(open) == 0:
		return fmt.Sprintf("breaker closed for every product using it (%d)", len(using))
	}
	return fmt.Sprintf("breaker OPEN for %s (calls paused, one probe at a time)", strings.Join(open, ", "))
}

// reason is an API error in a few words.
func reason(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return string(apierrors.ReasonForError(err)) + ": " + status.Status().Message
	}
	return err.Error()
}
