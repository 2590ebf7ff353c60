// Package kubectlkid is the kubectl plugin of kid-operator (`kubectl kid`):
// a player whichever id names it, the event inbox as a table or a stream,
// redriving failed action runs, a manual erasure and a signed Test delivery.
// Each subcommand lives in a file of its own; they share the kubectl flags
// (genericclioptions.ConfigFlags: --kubeconfig, --context, -n, ...) and
// the lookups in find.go.
package kubectlkid

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kid-operator/kid-operator/internal/scheme"
)

// Options is what every subcommand shares: the kubectl connection flags,
// the streams (injected by tests), and the clock.
type Options struct {
	ConfigFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams
	// Clock stamps what the commands write (a redrive's request, an
	// erasure's receivedAt, a Test delivery's signature) and ages the
	// events listed. The waits and timeouts are real time.
	Clock clock.PassiveClock
}

// NewCommand returns `kubectl kid` with its subcommands, writing to
// streams. clk is the clock (nil: the real clock); tests pass the clock the
// operator under test runs on.
func NewCommand(streams genericiooptions.IOStreams, clk clock.PassiveClock) *cobra.Command {
	if clk == nil {
		clk = clock.RealClock{}
	}
	o := &Options{ConfigFlags: genericclioptions.NewConfigFlags(true), IOStreams: streams, Clock: clk}
	cmd := &cobra.Command{
		Use:   "kubectl-kid",
		Short: "Inspect and operate kid-operator: health, players, events, redrives, erasures, test deliveries",
		Long: `kubectl kid works on kid-operator's resources in the current namespace
(-n to choose another), with kubectl's own connection flags.`,
		Annotations: map[string]string{
			// Shown as "kubectl kid" in help when run as a kubectl plugin.
			cobra.CommandDisplayNameAnnotation: "kubectl kid",
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	o.ConfigFlags.AddFlags(cmd.PersistentFlags())
	cmd.AddCommand(
		newUserCommand(o),
		newEventsCommand(o),
		newRedriveCommand(o),
		newEraseCommand(o),
		newTestCommand(o),
		newVersionCommand(o),
		newCheckCommand(o),
	)
	return cmd
}

// session is a connection to the cluster, for one command.
type session struct {
	config    *rest.Config
	client    client.WithWatch
	namespace string
}

// connect builds the clients from the kubectl flags.
func (o *Options) connect() (*session, error) {
	cfg, err := o.ConfigFlags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	ns, _, err := o.ConfigFlags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, fmt.Errorf("reading the namespace: %w", err)
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return nil, fmt.Errorf("connecting to the cluster: %w", err)
	}
	return &session{config: cfg, client: c, namespace: ns}, nil
}

// checkProduct checks a --product value: a KidProduct name is a DNS label.
func checkProduct(product string) error {
	if product == "" {
		return nil
	}
	if errs := validation.IsDNS1123Label(product); len(errs) > 0 {
		return fmt.Errorf("--product %q is not a KidProduct name: %s", product, errs[0])
	}
	return nil
}

// checkTimeout bounds a --timeout.
func checkTimeout(d time.Duration) error {
	if d < time.Second || d > time.Hour {
		return fmt.Errorf("--timeout %s is out of range: between 1s and 1h", d)
	}
	return nil
}

// confirm asks question on the input stream, as erase and redrive do before
// a change that cannot be taken back or touches many objects; anything but
// y or yes refuses, and so does no answer (a script without --yes).
func (o *Options) confirm(question string) error {
	fmt.Fprint(o.Out, question+" [y/N]: ")
	answer, err := bufio.NewReader(o.In).ReadString('\n')
	if err != nil && answer == "" {
		return errors.New("not confirmed (no answer): nothing was changed")
	}
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return errors.New("not confirmed: nothing was changed")
}

// errTimeout says that a wait ran out, as opposed to a failure.
var errTimeout = errors.New("timed out")

// poll calls check every interval until it reports done, fails, or timeout
// passes (errTimeout) or ctx ends.
func poll(ctx context.Context, interval, timeout time.Duration, check func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		done, err := check(ctx)
		if err != nil || done {
			if err != nil && ctx.Err() == context.DeadlineExceeded {
				return errTimeout
			}
			return err
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return errTimeout
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}
