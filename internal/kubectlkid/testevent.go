package kubectlkid

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
)

type testOptions struct {
	*Options
	url              string
	key              string
	serviceNamespace string
	service          string
	timeout          time.Duration
}

func newTestCommand(o *Options) *cobra.Command {
	t := &testOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "test <product>",
		Short: "Send a signed Test delivery to a product's receiver, as Compliance Studio's Test Webhook does",
		Long: `Test builds k-ID's Test event, signs it with the product's webhook secret (read
from the Secret spec.webhook.secretRef names) and POSTs it to the product's
path on the receiver: --url gives the receiver's base URL; without it, the
command port-forwards to a ready pod of the receiver's Service. It prints the
HTTP answer and the product's status.lastTestEventTime before and after.`,
		Example: `  kubectl kid test my-game -n games
  kubectl kid test my-game -n games --url https://kid.example.com`,
		Args:              cobra.ExactArgs(1),
		RunE:              func(cmd *cobra.Command, args []string) error { return t.run(cmd.Context(), args[0]) },
		ValidArgsFunction: productArg(o),
	}
	cmd.Flags().StringVar(&t.url, "url", "", "the receiver's base URL (http or https); default: port-forward to the receiver Service")
	cmd.Flags().StringVar(&t.key, "key", "", "the key of the webhook Secret to sign with (default: the first non-empty key, by name)")
	cmd.Flags().StringVar(&t.serviceNamespace, "service-namespace", "kid-system", "namespace of the receiver Service, for the port-forward")
	cmd.Flags().StringVar(&t.service, "service", "kid-operator-webhook", "name of the receiver Service, for the port-forward")
	cmd.Flags().DurationVar(&t.timeout, "timeout", 30*time.Second, "how long to wait for the delivery and for lastTestEventTime to move (1s..1h)")
	return cmd
}

func (t *testOptions) run(ctx context.Context, name string) error {
	base, err := t.check(name)
	if err != nil {
		return err
	}
	s, err := t.connect()
	if err != nil {
		return err
	}
	product := &kidv1.KidProduct{}
	if err := s.client.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: name}, product); err != nil {
		return fmt.Errorf("reading KidProduct %s: %w", name, err)
	}
	key, err := t.signingKey(ctx, s, product)
	if err != nil {
		return err
	}
	if base == nil {
		local, stop, err := forwardToService(ctx, s.config, t.serviceNamespace, t.service, t.ErrOut)
		if err != nil {
			return err
		}
		defer stop()
		base = local
	}
	before := product.Status.LastTestEventTime
	fmt.Fprintf(t.Out, "lastTestEventTime before: %s\n", stamp(before))

	target := base.JoinPath(webhookPath(product)).String()
	// A fresh id: a Test event's identity is its id, and each test is to
	// be stored as an event of its own.
	body := kid.TestPayload(uuid.NewString())
	timestamp := strconv.FormatInt(t.Clock.Now().Unix(), 10)
	status, answer, err := deliver(ctx, &http.Client{Timeout: t.timeout}, target, key.Secret, body, timestamp)
	if err != nil {
		return fmt.Errorf("POST %s: %w", target, err)
	}
	fmt.Fprintf(t.Out, "POST %s (Test, signed with key %q): %s\n", target, key.Name, strings.TrimSpace(fmt.Sprintf("%d %s %s", status, http.StatusText(status), oneLine(answer))))
	if status != http.StatusOK {
		return fmt.Errorf("the receiver answered %d, not 200: k-ID would retry, and Compliance Studio's Test Webhook would fail", status)
	}
	return t.waitRecorded(ctx, s, product, body, timestamp)
}

// maxAnswer bounds how much of the receiver's answer is read and printed.
const maxAnswer = 512

// deliver POSTs one Test delivery as k-ID sends it: the raw body, the
// timestamp header and internal/kid's signature of both. It returns the
// status and the start of the answer.
func deliver(ctx context.Context, c *http.Client, target string, secret, body []byte, timestamp string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(kid.HeaderTimestamp, timestamp)
	req.Header.Set(kid.HeaderSignature, kid.Sign(secret, timestamp, body))
	req.Header.Set(kid.HeaderEventType, kid.TestEvent)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	return resp.StatusCode, string(bytes.TrimSpace(answer)), nil
}

// check validates the arguments and returns the --url, parsed.
func (t *testOptions) check(name string) (*url.URL, error) {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return nil, fmt.Errorf("%q is not a KidProduct name: %s", name, errs[0])
	}
	if err := checkTimeout(t.timeout); err != nil {
		return nil, err
	}
	if t.key != "" && len(validation.IsConfigMapKey(t.key)) > 0 {
		return nil, fmt.Errorf("--key %q is not a Secret key", t.key)
	}
	if t.url == "" {
		if errs := validation.IsDNS1123Label(t.serviceNamespace); len(errs) > 0 {
			return nil, fmt.Errorf("--service-namespace %q is not a namespace name: %s", t.serviceNamespace, errs[0])
		}
		if errs := validation.IsDNS1035Label(t.service); len(errs) > 0 {
			return nil, fmt.Errorf("--service %q is not a Service name: %s", t.service, errs[0])
		}
		return nil, nil
	}
	u, err := url.Parse(t.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--url %q is not an http(s) base URL such as https://kid.example.com", t.url)
	}
	return u, nil
}

// signingKey reads the product's webhook Secret as the receiver does (every
// non-empty key verifies) and picks --key, or the first key by name.
func (t *testOptions) signingKey(ctx context.Context, s *session, product *kidv1.KidProduct) (kid.Key, error) {
	ref := product.Spec.Webhook.SecretRef.Name
	secret := &corev1.Secret{}
	if err := s.client.Get(ctx, client.ObjectKey{Namespace: product.Namespace, Name: ref}, secret); err != nil {
		return kid.Key{}, fmt.Errorf("reading the product's webhook Secret %s: %w", ref, err)
	}
	keys := kid.KeysFromSecretData(secret.Data)
	if len(keys) == 0 {
		return kid.Key{}, fmt.Errorf("the webhook Secret %s holds no non-empty key", ref)
	}
	if t.key == "" {
		return keys[0], nil
	}
	for _, k := range keys {
		if k.Name == t.key {
			return k, nil
		}
	}
	return kid.Key{}, fmt.Errorf("the webhook Secret %s has no non-empty key %q", ref, t.key)
}

// webhookPath is the product's path on the receiver, as its status
// publishes it (or as the controller will, for a product not yet
// reconciled).
func webhookPath(p *kidv1.KidProduct) string {
	if p.Status.WebhookPath != "" {
		return p.Status.WebhookPath
	}
	return kidv1.WebhookPath(p.Namespace, p.Name)
}

// waitRecorded waits until the product's lastTestEventTime reaches the
// stored event's receivedAt, and the KidEvent controller has seen the event
// (a Test event is Ignored: kept for the record, folded into no user).
// Comparing with the event rather than with the time before is what still
// works for two tests within one second (the status has one-second
// resolution).
func (t *testOptions) waitRecorded(ctx context.Context, s *session, product *kidv1.KidProduct, body []byte, timestamp string) error {
	env, err := kid.ParseEnvelope(body)
	if err != nil {
		return err
	}
	signed, _ := strconv.ParseInt(timestamp, 10, 64)
	key := client.ObjectKey{Namespace: product.Namespace, Name: kid.EventName(product.Name, kid.TestEvent, env.Identity(body, time.Unix(signed, 0)))}
	event := &kidv1.KidEvent{}
	if err := s.client.Get(ctx, key, event); err != nil {
		return fmt.Errorf("the receiver answered 200 but KidEvent %s cannot be read: %w", key.Name, err)
	}
	received := event.Spec.ReceivedAt
	after := product
	err = poll(ctx, 250*time.Millisecond, t.timeout, func(ctx context.Context) (bool, error) {
		got := &kidv1.KidProduct{}
		if err := s.client.Get(ctx, client.ObjectKeyFromObject(product), got); err != nil {
			return false, err
		}
		after = got
		if last := got.Status.LastTestEventTime; last == nil || last.Before(&received) {
			return false, nil
		}
		if err := s.client.Get(ctx, key, event); err != nil {
			return false, err
		}
		return phase(event) != string(kidv1.EventPending), nil
	})
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("after %s, lastTestEventTime is %s (the event was received at %s) and kidevent/%s is %s: is the operator running?",
			t.timeout, stamp(after.Status.LastTestEventTime), stamp(&received), key.Name, phase(event))
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(t.Out, "lastTestEventTime after:  %s\n", stamp(after.Status.LastTestEventTime))
	fmt.Fprintf(t.Out, "stored as kidevent/%s, phase %s\n", event.Name, phase(event))
	return nil
}
