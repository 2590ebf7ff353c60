// Command kidsim simulates k-ID's webhooks: it builds an event shaped like
// k-ID's, signs it exactly as k-ID does and delivers it on k-ID's retry
// schedule, printing each attempt and its answer.
//
//	kidsim send --url URL --secret S --event Challenge.StateChange --status PASS --session ID
//	kidsim send --url URL --secret S --file event.json
//	kidsim test-button --url URL --secret S
//	kidsim sign --secret S --timestamp 1700000000 --file event.json
//	kidsim relay-token --secret S --product ns/name --challenge ID --ttl 1h
//	kidsim serve --api-key K --webhook-url URL --secret S   (a stateful fake k-ID)
//	kidsim challenge start; kidsim challenge approve ID     (drive a running serve)
//	kidsim version
//
// Each command lives with its flags in one function (this file, serve.go,
// control.go, relaytoken.go), on cobra as the kubectl plugin's are
// (internal/kubectlkid/root.go).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kidsim:", err)
		stop()
		os.Exit(1)
	}
}

// run runs kidsim with args (without the program's name), writing its
// output and help to out. main prints the error and exits 1.
func run(ctx context.Context, args []string, out io.Writer) error {
	cmd := newCommand(out)
	// cobra reads os.Args when given nil, which in a test are go test's
	// own flags.
	cmd.SetArgs(append([]string{}, args...))
	return cmd.ExecuteContext(ctx)
}

// Command groups of the help.
const (
	groupWebhooks = "webhooks"
	groupFake     = "fake"
)

// newCommand returns kidsim with its subcommands.
func newCommand(out io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "kidsim",
		Short: "Simulate k-ID: signed webhook deliveries, and a stateful fake k-ID",
		Long: `kidsim simulates k-ID's webhook deliveries: it builds (or reads) an event,
signs it exactly as k-ID does and delivers it on k-ID's retry schedule. It
also runs a stateful fake k-ID (serve), which the control commands drive.

The webhook secret may also come from KID_WEBHOOK_SECRET.`,
		// With no command, the help and a non-zero exit: a script that
		// lost its arguments must not look successful.
		Args: unknownCommand,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Help()
			return errors.New("no command given")
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		// cobra's default; set here since unknownCommand asks for them
		// itself.
		SuggestionsMinimumDistance: 2,
	}
	root.SetOut(out)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%s: %w; see '%s --help'", subcommand(cmd), err, cmd.CommandPath())
	})
	root.AddGroup(
		&cobra.Group{ID: groupWebhooks, Title: "Sending webhooks:"},
		&cobra.Group{ID: groupFake, Title: "The fake k-ID (serve, and the commands that drive it at --sim):"},
	)
	root.AddCommand(
		newSendCommand(),
		newTestButtonCommand(),
		newSignCommand(),
		newRelayTokenCommand(),
		newTargetCommand(),
		newExamplesCommand(),
		newServeCommand(),
		newChallengeCommand(),
		newVerificationCommand(),
		newSessionCommand(),
		newAccountCommand(),
		newFaultsCommand(),
		newVersionCommand(),
	)
	return root
}

// unknownCommand refuses any argument to kidsim itself: it can only be a
// command kidsim does not have.
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	hint := ""
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		hint = " (did you mean " + strings.Join(s, " or ") + "?)"
	}
	return fmt.Errorf("unknown command %q%s; see 'kidsim --help'", args[0], hint)
}

// subcommand is the command's path without "kidsim", as the errors name it.
func subcommand(cmd *cobra.Command) string {
	if !cmd.HasParent() {
		return cmd.Name()
	}
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

// wantArgs checks the number of positional arguments and names the ones
// wanted, as the help's usage line does.
func wantArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == len(names):
			return nil
		case len(names) == 0:
			return fmt.Errorf("%s takes no arguments, got %q", subcommand(cmd), args)
		}
		return fmt.Errorf("%s wants %d argument(s): %s; got %d", subcommand(cmd), len(names), strings.Join(names, " "), len(args))
	}
}

// secretFlag defines a string flag whose default is the environment
// variable env. The help names the variable but never prints its value: it
// is a secret or a key.
func secretFlag(cmd *cobra.Command, p *string, name, env, usage string) {
	cmd.Flags().StringVar(p, name, os.Getenv(env), usage+" (default $"+env+")")
	cmd.Flags().Lookup(name).DefValue = ""
}

// common are the flags of the commands that deliver to a receiver.
type common struct {
	url    string
	secret string
}

func (c *common) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.url, "url", "", "the receiver's webhook URL, for example http://127.0.0.1:8080/webhooks/default/demo")
	secretFlag(cmd, &c.secret, "secret", "KID_WEBHOOK_SECRET", "the webhook secret")
}

func (c *common) sender(out io.Writer) (*kidsim.Sender, error) {
	if c.url == "" {
		return nil, errors.New("--url is required")
	}
	if c.secret == "" {
		return nil, errors.New("--secret (or KID_WEBHOOK_SECRET) is required")
	}
	s := kidsim.NewSender(c.url, []byte(c.secret))
	s.OnAttempt = func(a kidsim.Attempt) { fmt.Fprintln(out, a) }
	return s, nil
}

type sendOptions struct {
	common
	fields                           kidsim.Fields
	eventType, file, example, verifs string
	noRetry, keepTimestamp           bool
}

func newSendCommand() *cobra.Command {
	o := &sendOptions{}
	cmd := &cobra.Command{
		Use:     "send",
		Short:   "Build (or read) an event, sign it and deliver it with k-ID's retries",
		GroupID: groupWebhooks,
		Example: `  kidsim send --url $U --event Challenge.StateChange --status IN_PROGRESS --challenge c-1
  kidsim send --url $U --example challenge-pass --no-retry
  kidsim send --url $U --file body.json`,
		Args: wantArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	o.register(cmd)
	f, fl := &o.fields, cmd.Flags()
	fl.StringVar(&o.eventType, "event", kid.TestEvent, "event type: "+strings.Join(eventTypes, ", "))
	fl.StringVar(&o.file, "file", "", "send this file's bytes as the body (- for stdin), instead of building one")
	fl.StringVar(&o.example, "example", "", "send the named example payload of k-ID's docs (see kidsim examples)")
	fl.StringVar(&f.ID, "id", "", "data.id (generated when the type needs one)")
	fl.StringVar(&f.Status, "status", "", "data.status: PASS, FAIL, IN_PROGRESS (default PASS)")
	fl.Int64Var(&f.ProductID, "product-id", 0, "data.productId")
	fl.StringVar(&f.SessionID, "session", "", "session id")
	fl.StringVar(&f.KUID, "kuid", "", "k-ID user id")
	fl.StringVar(&f.ChallengeID, "challenge", "", "challenge id")
	fl.StringVar(&o.verifs, "verification", "", "verification id(s), comma-separated")
	fl.StringVar(&f.Reason, "reason", "", "revocation reason (Verification.Revoke)")
	fl.StringVar(&f.Method, "method", "", "verification method")
	fl.IntVar(&f.AgeLow, "age-low", 0, "data.age.low")
	fl.IntVar(&f.AgeHigh, "age-high", 0, "data.age.high")
	fl.StringVar(&f.AgeCategory, "age-category", "", "data.ageCategory")
	fl.StringVar(&f.FailureReason, "failure-reason", "", "data.failureReason")
	fl.StringVar(&f.DOB, "dob", "", "data.dob (personal data)")
	fl.StringVar(&f.ApproverEmail, "approver-email", "", "data.approverEmail (personal data)")
	fl.BoolVar(&o.noRetry, "no-retry", false, "make one attempt only (k-ID retries after 5 s and 10 s)")
	fl.BoolVar(&o.keepTimestamp, "keep-timestamp", false, "sign retries with the first attempt's timestamp instead of a fresh one")
	return cmd
}

func (o *sendOptions) run(ctx context.Context, in io.Reader, out io.Writer) error {
	if o.verifs != "" {
		o.fields.VerificationIDs = strings.Split(o.verifs, ",")
	}
	body, err := body(in, o.eventType, o.file, o.example, o.fields)
	if err != nil {
		return err
	}
	s, err := o.sender(out)
	if err != nil {
		return err
	}
	if !o.noRetry {
		s.Schedule = kidsim.RetrySchedule
	}
	s.KeepTimestamp = o.keepTimestamp
	fmt.Fprintf(out, "POST %s\n%s\n", s.URL, body)
	_, err = s.Send(ctx, body)
	return err
}

var eventTypes = []string{
	kid.ChallengeStateChange, kid.VerificationResult, kid.VerificationRevoke, kid.AccountDelete,
	kid.AgeAssuranceResult, kid.ParentalConsentGranted, kid.SessionChangePermissions, kid.SessionDelete, kid.TestEvent,
}

// body is the file's bytes (in for "-"), the named example, or an event of
// the type built from the fields, in that order of preference.
func body(in io.Reader, eventType, file, example string, f kidsim.Fields) ([]byte, error) {
	switch {
	case file == "-":
		return io.ReadAll(in)
	case file != "":
		return os.ReadFile(file)
	case example != "":
		b, ok := kid.Examples[example]
		if !ok {
			return nil, fmt.Errorf("no example %q: see kidsim examples", example)
		}
		return []byte(b), nil
	}
	return kidsim.Build(eventType, f)
}

func newTestButtonCommand() *cobra.Command {
	var c common
	cmd := &cobra.Command{
		Use:     "test-button",
		Short:   `Send the two Test deliveries of Compliance Studio's "Test Webhook" button`,
		Long:    `test-button sends a Test event signed with the secret, then one signed with another: a correct receiver answers 200, then 401.`,
		GroupID: groupWebhooks,
		Args:    wantArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			s, err := c.sender(out)
			if err != nil {
				return err
			}
			got := s.TestButton(cmd.Context(), uuid.NewString())
			if got[0].Status != 200 || got[1].Status != 401 {
				return fmt.Errorf("a correct receiver answers 200 then 401; got %d then %d", got[0].Status, got[1].Status)
			}
			fmt.Fprintln(out, "receiver answered as k-ID expects: 200 for the signed Test event, 401 for the unsigned one")
			return nil
		},
	}
	c.register(cmd)
	return cmd
}

func newSignCommand() *cobra.Command {
	var secret, timestamp, file string
	cmd := &cobra.Command{
		Use:     "sign",
		Short:   "Print the X-Signature-Hmac-Sha256 of a body",
		GroupID: groupWebhooks,
		Args:    wantArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if timestamp == "" {
				timestamp = fmt.Sprint(time.Now().Unix())
			}
			b, err := body(cmd.InOrStdin(), "", file, "", kidsim.Fields{})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n%s: %s\n", kid.HeaderTimestamp, timestamp, kid.HeaderSignature, kid.Sign([]byte(secret), timestamp, b))
			return nil
		},
	}
	secretFlag(cmd, &secret, "secret", "KID_WEBHOOK_SECRET", "the webhook secret")
	cmd.Flags().StringVar(&timestamp, "timestamp", "", "X-Signature-Timestamp (default now)")
	cmd.Flags().StringVar(&file, "file", "-", "the body (- for stdin)")
	return cmd
}

func newTargetCommand() *cobra.Command {
	var addr, secret string
	var status int
	var dedupe bool
	cmd := &cobra.Command{
		Use:     "target",
		Short:   "Serve an endpoint that prints what KidActions deliver to it",
		GroupID: groupWebhooks,
		Args:    wantArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			t := &kidsim.Target{Status: status, Out: out, Dedupe: dedupe}
			if secret != "" {
				t.Secret = []byte(secret)
			}
			srv := &http.Server{Addr: addr, Handler: t, ReadHeaderTimeout: 5 * time.Second}
			go func() {
				<-cmd.Context().Done()
				_ = srv.Close()
			}()
			fmt.Fprintf(out, "kidsim target listening on http://%s/\n", addr)
			if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:9090", "address to listen on")
	cmd.Flags().StringVar(&secret, "secret", "", "the KidAction's signing secret, to check webhook-signature")
	cmd.Flags().IntVar(&status, "status", 200, "the status code to answer")
	cmd.Flags().BoolVar(&dedupe, "dedupe", false, "take each webhook-id once, as a Standard Webhooks receiver should: a repeat is answered 200 and printed as a repeat")
	return cmd
}

func newExamplesCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "examples",
		Short:   "List the example payloads of k-ID's docs (use with send --example)",
		GroupID: groupWebhooks,
		Args:    wantArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, name := range slices.Sorted(maps.Keys(kid.Examples)) {
				fmt.Fprintf(cmd.OutOrStdout(), "%-22s %s\n", name, kid.Examples[name])
			}
			return nil
		},
	}
}
