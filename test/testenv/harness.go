package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/cmd/manager/operator"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/internal/outbound"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

// Clock is a clock that tests move forward. Real time passes under it too:
// the reconcilers' requeue timers and the API server run on real time, so an
// integration test jumps over a wait (Advance) rather than stopping time, as
// k8s.io/utils/clock/testing's FakeClock would.
type Clock struct{ offset atomic.Int64 }

var _ clock.PassiveClock = (*Clock)(nil)

// Now is the real time plus every Advance so far.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Since is the time elapsed since t on this clock.
func (c *Clock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// Harness is the operator, as a user runs it, on a local control plane.
type Harness struct {
	Env      *envtest.Environment
	Config   *rest.Config
	Client   client.Client
	Operator *operator.Operator
	// Clock drives the controllers, the receiver and the products'
	// senders, so a test can move all of them forward together.
	Clock *Clock
	// BaseURL is the receiver's, http://host:port.
	BaseURL string

	cancel context.CancelFunc
	done   chan error
}

// Start starts a control plane and the operator on it, with the receiver on
// a free local port, and waits until the receiver is ready.
func Start() (*Harness, error) {
	h, err := StartControlPlane()
	if err != nil {
		return nil, err
	}
	if err := h.startOperator(); err != nil {
		return nil, errors.Join(err, Stop(h.Env))
	}
	return h, nil
}

// StartControlPlane starts a control plane with the CRDs installed and no
// operator: for tests that run operators of their own (StartOperator), for
// example under a restricted identity.
func StartControlPlane() (*Harness, error) {
	env, err := New()
	if err != nil {
		return nil, err
	}
	// Kinds the tests need beside kid-operator's own (a stand-in for a
	// Knative Broker); make run's control plane has none of them.
	env.CRDDirectoryPaths = append(env.CRDDirectoryPaths, filepath.Join(RepoRoot(), "test", "testenv", "testdata", "crds"))
	// The API server drains open watches for up to a minute when stopped
	// while the operator runs; tests that stop it want it gone sooner (it
	// is killed after this timeout). envtest gives this to every component
	// when it starts them, overwriting any StopTimeout set on them before.
	env.ControlPlaneStopTimeout = 5 * time.Second
	// New gives the API server a certificate directory of our own, which
	// survives a stop of the API server, so that tests can start it again
	// with the same certificates and port.
	cfg, err := env.Start()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("starting the control plane: %w", err), Stop(env))
	}
	h := &Harness{Env: env, Config: cfg, Clock: &Clock{}, done: make(chan error, 1)}
	if h.Client, err = client.New(h.Config, client.Options{Scheme: scheme.Scheme}); err != nil {
		return nil, errors.Join(err, Stop(env))
	}
	return h, nil
}

// SecretRecheck is how often the tests' operators re-read the Secrets
// products name (a deployed operator: every one to two minutes), so that
// specs see a changed or deleted Secret within seconds.
const SecretRecheck = 2 * time.Second

// UserSweep is how often the tests' operators sweep the KidUsers for the
// players due (a deployed operator: every five minutes), so that a spec
// that moves the clock past a player's expiry sees it handled within
// seconds, with nothing but the sweep to wake it.
const UserSweep = 2 * time.Second

// ScopedOutboundNamespace is the one namespace whose calls may reach
// 127.0.0.2 (OperatorOptions); a test that uses it creates it.
const ScopedOutboundNamespace = "kid-outbound-scoped"

// OperatorOptions are the options the harness runs the operator with: the
// receiver on a free loopback port, the harness's clock, loopback targets
// and the fake k-ID's plain http:// allowed, and Secrets re-read every
// SecretRecheck.
func (h *Harness) OperatorOptions() operator.Options {
	opts := operator.Options{Clock: h.Clock, SkipControllerNameValidation: true, SecretRecheck: SecretRecheck, UserSweep: UserSweep, AllowInsecureAPIURLs: true,
		// The fake k-ID serves on loopback, as make run's does.
		APIAllowHosts: []string{"127.0.0.0/8"}}
	// The simulator's targets and fake k-ID listen on loopback, which a
	// deployed operator refuses to call.
	opts.Outbound.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	// But for 127.0.0.2, which only the calls made for
	// ScopedOutboundNamespace may reach (an allowance scoped to a
	// namespace, as --outbound-allow-cidrs=127.0.0.2@NAMESPACE writes it).
	opts.Outbound.Deny = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/31")}
	opts.Outbound.NamespaceAllow = map[string]outbound.Allowance{
		ScopedOutboundNamespace: {CIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}},
	}
	opts.Webhook.Addr = "127.0.0.1:0"
	opts.Webhook.Clock = h.Clock
	return opts
}

func (h *Harness) startOperator(edits ...func(*operator.Options)) error {
	opts := h.OperatorOptions()
	for _, edit := range edits {
		edit(&opts)
	}
	op, stop, err := StartOperator(h.Config, opts)
	if err != nil {
		return err
	}
	h.Operator = op
	h.cancel = func() { h.done <- stop() }
	h.BaseURL = "http://" + op.Receiver.Addr()
	return nil
}

// StartOperator builds an operator with cfg (its identity) and opts, starts
// it, and waits until its receiver, if it has one, is ready. stop stops it
// and returns what its Start returned.
func StartOperator(cfg *rest.Config, opts operator.Options) (op *operator.Operator, stop func() error, err error) {
	op, err = operator.New(cfg, opts)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- op.Start(ctx) }()
	stop = func() error {
		cancel()
		return <-done
	}
	if op.Receiver == nil {
		return op, stop, nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for !op.Receiver.Ready() || op.Receiver.Addr() == "" {
		select {
		case err := <-done:
			cancel()
			return nil, nil, fmt.Errorf("the operator stopped before its receiver was ready: %w", err)
		default:
		}
		if time.Now().After(deadline) {
			return nil, nil, errors.Join(errors.New("the receiver did not become ready in 30s"), stop())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return op, stop, nil
}

// RestartOperator stops the operator and starts a new one on the same
// control plane, as a rollout or a crash would. The receiver's address
// changes; products made before keep the old URL.
func (h *Harness) RestartOperator() error {
	return h.RestartOperatorWith()
}

// RestartOperatorWith restarts the operator as RestartOperator does, with
// the harness's options changed by edits (for example, to watch one
// namespace only). RestartOperator goes back to the harness's own.
func (h *Harness) RestartOperatorWith(edits ...func(*operator.Options)) error {
	h.cancel()
	if err := <-h.done; err != nil {
		return err
	}
	return h.startOperator(edits...)
}

// Stop stops the operator, if the harness runs one, and the control plane.
func (h *Harness) Stop() error {
	var err error
	if h.cancel != nil {
		h.cancel()
		err = <-h.done
	}
	return errors.Join(err, Stop(h.Env))
}

// Product is a KidProduct a test created, with its secret.
type Product struct {
	*kidv1.KidProduct
	Secret string
	URL    string
	clock  *Clock
}

// Sender returns a kidsim sender for the product, without retries, on the
// harness's clock.
func (p *Product) Sender() *kidsim.Sender {
	return &kidsim.Sender{URL: p.URL, Secret: []byte(p.Secret), Clock: p.clock}
}

// NewNamespace creates a namespace with a generated name.
func (h *Harness) NewNamespace(ctx context.Context) (string, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "kid-"}}
	if err := h.Client.Create(ctx, ns); err != nil {
		return "", err
	}
	return ns.Name, nil
}

// NewProduct creates a webhook Secret and a KidProduct named name in ns;
// mutate, if set, adjusts the product before it is created.
func (h *Harness) NewProduct(ctx context.Context, ns, name string, mutate func(*kidv1.KidProduct)) (*Product, error) {
	secret := h.WebhookSecret(ns, name)
	if err := h.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-webhook", Namespace: ns, Labels: kidv1.SecretLabels()},
		StringData: map[string]string{"current": secret},
	}); err != nil {
		return nil, err
	}
	p := &kidv1.KidProduct{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: kidv1.KidProductSpec{
			ProductID:   11472,
			Environment: kidv1.EnvironmentTest,
			Webhook:     kidv1.WebhookSpec{SecretRef: kidv1.LocalObjectReference{Name: name + "-webhook"}},
		},
	}
	if mutate != nil {
		mutate(p)
	}
	if err := h.Client.Create(ctx, p); err != nil {
		return nil, err
	}
	return &Product{KidProduct: p, Secret: secret, URL: h.WebhookURL(ns, name), clock: h.Clock}, nil
}

// NewReadyProduct makes a namespace and a product named name in it (mutate,
// if set, adjusts it first), and waits until it is Ready.
func (h *Harness) NewReadyProduct(ctx context.Context, name string, mutate func(*kidv1.KidProduct)) (*Product, error) {
	ns, err := h.NewNamespace(ctx)
	if err != nil {
		return nil, err
	}
	p, err := h.NewProduct(ctx, ns, name, mutate)
	if err != nil {
		return nil, err
	}
	return p, h.WaitReady(ctx, p)
}

// WebhookURL is where the receiver takes the deliveries of a product, known
// before the product exists (a fake k-ID is told it first).
func (h *Harness) WebhookURL(ns, name string) string {
	return h.BaseURL + kidv1.WebhookPath(ns, name)
}

// WebhookSecret is the webhook secret NewProduct gives a product.
func (h *Harness) WebhookSecret(ns, name string) string { return "secret-of-" + ns + "-" + name }

// WaitReady waits until the product is Ready, which also means the
// operator's cache, and so the receiver, has seen it and its Secret.
func (h *Harness) WaitReady(ctx context.Context, p *Product) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := &kidv1.KidProduct{}
		if err := h.Client.Get(ctx, client.ObjectKeyFromObject(p.KidProduct), got); err != nil {
			return err
		}
		if meta.IsStatusConditionTrue(got.Status.Conditions, kidv1.ReadyCondition) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("product %s/%s not Ready after 30s: %+v", p.Namespace, p.Name, got.Status.Conditions)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
