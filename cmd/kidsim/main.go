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
package main

import (
	"context"
	"errors"
	"flag"
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

	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

const usage = `kidsim simulates k-ID's webhook deliveries.

Commands:
  send         build (or read) an event, sign it and deliver it with k-ID's retries
  test-button  send the two Test deliveries of Compliance Studio's "Test Webhook" button
  sign         print the X-Signature-Hmac-Sha256 of a body
  relay-token  print a relay token for a game's page (--secret S --product ns/name
               --challenge ID | --verification ID | --session ID [--ttl 1h])
  target       serve an endpoint that prints what KidActions deliver to it
  examples     list the example payloads of k-ID's docs (use with send --example)

  serve        run a stateful fake k-ID: its REST API (/api/v1/), an admin API
               (/kidsim/), webhook deliveries of every state change, and a
               stand-in for k-ID's widget (/widget?challengeId=ID) that posts
               k-ID's DOM events to the page that frames it
  challenge    start | approve ID [--kuid --email --dob] | deny ID
  verification start | pass ID | fail ID | revoke ID [--reason]
  session      permission SESSION NAME on|off | delete SESSION
  account      delete KUID
  faults       [--deliveries drop|5xx|timeout|""] [--delivery-delay 2s]
               [--rate-limit 10 --burst 10] [--retry-after 1s]
  (the last five drive a running serve: --sim URL, default $KIDSIM_URL or
  http://127.0.0.1:8090)

Run 'kidsim COMMAND -h' for a command's flags. The secret may also come from
KID_WEBHOOK_SECRET.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kidsim:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(out, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "send":
		return send(ctx, args[1:], out)
	case "test-button":
		return testButton(ctx, args[1:], out)
	case "sign":
		return sign(args[1:], out)
	case "relay-token":
		return relayToken(args[1:], out)
	case "target":
		return target(ctx, args[1:], out)
	case "serve":
		return serve(ctx, args[1:], out)
	case "challenge":
		return challengeCmd(ctx, args[1:], out)
	case "verification":
		return verificationCmd(ctx, args[1:], out)
	case "session":
		return sessionCmd(ctx, args[1:], out)
	case "account":
		return accountCmd(ctx, args[1:], out)
	case "faults":
		return faultsCmd(ctx, args[1:], out)
	case "examples":
		names := slices.Sorted(maps.Keys(kid.Examples))
		for _, name := range names {
			fmt.Fprintf(out, "%-22s %s\n", name, kid.Examples[name])
		}
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(out, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n\n%s", args[0], usage)
}

type common struct {
	url    string
	secret string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", "", "the receiver's webhook URL, for example http://127.0.0.1:8080/webhooks/default/demo")
	fs.StringVar(&c.secret, "secret", os.Getenv("KID_WEBHOOK_SECRET"), "the webhook secret (default $KID_WEBHOOK_SECRET)")
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

func send(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	var c common
	c.register(fs)
	var f kidsim.Fields
	var eventType, file, example, verifications string
	var noRetry, keepTimestamp bool
	fs.StringVar(&eventType, "event", kid.TestEvent, "event type: "+strings.Join(eventTypes, ", "))
	fs.StringVar(&file, "file", "", "send this file's bytes as the body (- for stdin), instead of building one")
	fs.StringVar(&example, "example", "", "send the named example payload of k-ID's docs (see kidsim examples)")
	fs.StringVar(&f.ID, "id", "", "data.id (generated when the type needs one)")
	fs.StringVar(&f.Status, "status", "", "data.status: PASS, FAIL, IN_PROGRESS (default PASS)")
	fs.Int64Var(&f.ProductID, "product-id", 0, "data.productId")
	fs.StringVar(&f.SessionID, "session", "", "session id")
	fs.StringVar(&f.KUID, "kuid", "", "k-ID user id")
	fs.StringVar(&f.ChallengeID, "challenge", "", "challenge id")
	fs.StringVar(&verifications, "verification", "", "verification id(s), comma-separated")
	fs.StringVar(&f.Reason, "reason", "", "revocation reason (Verification.Revoke)")
	fs.StringVar(&f.Method, "method", "", "verification method")
	fs.IntVar(&f.AgeLow, "age-low", 0, "data.age.low")
	fs.IntVar(&f.AgeHigh, "age-high", 0, "data.age.high")
	fs.StringVar(&f.AgeCategory, "age-category", "", "data.ageCategory")
	fs.StringVar(&f.FailureReason, "failure-reason", "", "data.failureReason")
	fs.StringVar(&f.DOB, "dob", "", "data.dob (personal data)")
	fs.StringVar(&f.ApproverEmail, "approver-email", "", "data.approverEmail (personal data)")
	fs.BoolVar(&noRetry, "no-retry", false, "make one attempt only (k-ID retries after 5 s and 10 s)")
	fs.BoolVar(&keepTimestamp, "keep-timestamp", false, "sign retries with the first attempt's timestamp instead of a fresh one")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if verifications != "" {
		f.VerificationIDs = strings.Split(verifications, ",")
	}
	body, err := body(eventType, file, example, f)
	if err != nil {
		return err
	}
	s, err := c.sender(out)
	if err != nil {
		return err
	}
	if !noRetry {
		s.Schedule = kidsim.RetrySchedule
	}
	s.KeepTimestamp = keepTimestamp
	fmt.Fprintf(out, "POST %s\n%s\n", s.URL, body)
	_, err = s.Send(ctx, body)
	return err
}

var eventTypes = []string{
	kid.ChallengeStateChange, kid.VerificationResult, kid.VerificationRevoke, kid.AccountDelete,
	kid.AgeAssuranceResult, kid.ParentalConsentGranted, kid.SessionChangePermissions, kid.SessionDelete, kid.TestEvent,
}

func body(eventType, file, example string, f kidsim.Fields) ([]byte, error) {
	switch {
	case file == "-":
		return io.ReadAll(os.Stdin)
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

func testButton(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("test-button", flag.ContinueOnError)
	var c common
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := c.sender(out)
	if err != nil {
		return err
	}
	got := s.TestButton(ctx, uuid.NewString())
	if got[0].Status != 200 || got[1].Status != 401 {
		return fmt.Errorf("a correct receiver answers 200 then 401; got %d then %d", got[0].Status, got[1].Status)
	}
	fmt.Fprintln(out, "receiver answered as k-ID expects: 200 for the signed Test event, 401 for the unsigned one")
	return nil
}

func sign(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	var secret, timestamp, file string
	fs.StringVar(&secret, "secret", os.Getenv("KID_WEBHOOK_SECRET"), "the webhook secret")
	fs.StringVar(&timestamp, "timestamp", "", "X-Signature-Timestamp (default now)")
	fs.StringVar(&file, "file", "-", "the body (- for stdin)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if timestamp == "" {
		timestamp = fmt.Sprint(time.Now().Unix())
	}
	b, err := body("", file, "", kidsim.Fields{})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: %s\n%s: %s\n", kid.HeaderTimestamp, timestamp, kid.HeaderSignature, kid.Sign([]byte(secret), timestamp, b))
	return nil
}

func target(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("target", flag.ContinueOnError)
	var addr, secret string
	var status int
	fs.StringVar(&addr, "addr", "127.0.0.1:9090", "address to listen on")
	fs.StringVar(&secret, "secret", "", "the KidAction's signing secret, to check webhook-signature")
	fs.IntVar(&status, "status", 200, "the status code to answer")
	var dedupe bool
	fs.BoolVar(&dedupe, "dedupe", false, "take each webhook-id once, as a Standard Webhooks receiver should: a repeat is answered 200 and printed as a repeat")
	if err := fs.Parse(args); err != nil {
		return err
	}
	t := &kidsim.Target{Status: status, Out: out, Dedupe: dedupe}
	if secret != "" {
		t.Secret = []byte(secret)
	}
	srv := &http.Server{Addr: addr, Handler: t, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	fmt.Fprintf(out, "kidsim target listening on http://%s/\n", addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
