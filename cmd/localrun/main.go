// Command localrun is `make run`: the embedded local default. It starts a
// local control plane (kube-apiserver and etcd, built by
// hack/build-controlplane.sh), installs the CRDs, starts the simulator's fake
// k-ID (its REST API and its webhooks), creates the sample product "demo"
// with its webhook and API Secrets pointed at the fake, serves the DOM
// events demo (a game's page that frames the fake's widget and uses the
// receiver's kid-events.js), and runs the operator with its receiver, until
// Ctrl-C stops everything.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/cmd/manager/operator"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/internal/outbound"
	"github.com/kid-operator/kid-operator/internal/scheme"
	"github.com/kid-operator/kid-operator/test/testenv"
	"github.com/kid-operator/kid-operator/webhookserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) (err error) {
	ctrl.SetLogger(zap.New(zap.UseDevMode(os.Getenv("KID_DEBUG") != "")))
	root := testenv.RepoRoot()

	env, err := testenv.New()
	if err != nil {
		return err
	}
	fmt.Println("starting the local control plane (kube-apiserver and etcd)...")
	// etcd and kube-apiserver die with this process, however it ends
	// (testenv.New); testenv.Stop also removes their data.
	cfg, err := env.Start()
	if err != nil {
		return errors.Join(fmt.Errorf("starting the control plane: %w", err), testenv.Stop(env))
	}
	defer func() {
		fmt.Println("stopping the local control plane")
		err = errors.Join(err, testenv.Stop(env))
	}()

	// KID_KUBECONFIG moves it, so that a test of `make run` leaves a
	// developer's own run alone.
	kubeconfig := os.Getenv("KID_KUBECONFIG")
	if kubeconfig == "" {
		kubeconfig = filepath.Join(root, ".local", "kubeconfig")
	}
	if err := writeKubeconfig(env, kubeconfig); err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return err
	}
	secret, generated, err := webhookSecret()
	if err != nil {
		return err
	}
	addr := os.Getenv("KID_LISTEN_ADDR")
	if addr == "" {
		addr = webhookserver.DefaultAddr
	}
	url := "http://" + addr + kidv1.WebhookPath("default", "demo")

	// The fake k-ID: k-ID itself is not reachable from a laptop's cluster,
	// and the fake lets a new user move a player along by hand.
	simAddr := os.Getenv("KIDSIM_LISTEN_ADDR")
	if simAddr == "" {
		simAddr = "127.0.0.1:8090"
	}
	// It is as strict as k-ID's test environment (its rate limit, the
	// propagation delay), and its logs stay bounded however long it runs.
	fake := kidsim.NewFake(kidsim.FakeOptions{
		APIKey: demoAPIKey, ProductID: 11472, WebhookURL: url, WebhookSecret: []byte(secret),
		PropagationDelay: 1500 * time.Millisecond,
		MaxRecords:       10000,
	})
	defer fake.Close()
	if err := fake.SetWindowLimit(kidsim.TestRateLimit); err != nil {
		return err
	}
	if simAddr, err = fake.ListenAndServe(ctx, simAddr); err != nil {
		return fmt.Errorf("starting the fake k-ID: %w", err)
	}
	// The DOM events demo: a game's page on an origin of its own.
	demoAddr := os.Getenv("KID_DEMO_LISTEN_ADDR")
	if demoAddr == "" {
		demoAddr = "127.0.0.1:8092"
	}
	relayKey, err := randomHex(24)
	if err != nil {
		return err
	}
	receiverURL := "http://" + addr
	if demoAddr, err = serveDemo(ctx, demoAddr, receiverURL, "http://"+simAddr, fake, []byte(relayKey)); err != nil {
		return fmt.Errorf("starting the DOM events demo: %w", err)
	}
	samplePath := filepath.Join(root, "config", "samples", "kid_v1alpha1_kidproduct.yaml")
	browser := &kidv1.BrowserSpec{
		AllowedOrigins: demoOrigins(demoAddr),
		TokenSecretRef: kidv1.LocalObjectReference{Name: demoRelaySecret},
	}
	if err := createDemo(ctx, c, samplePath, secret, "http://"+simAddr+"/api/v1", browser, relayKey); err != nil {
		return err
	}

	mgr, err := operator.New(cfg, operator.Options{
		MetricsAddr: os.Getenv("KID_METRICS_ADDR"),
		Webhook:     webhookserver.Options{Addr: addr},
		// The walkthrough's fake k-ID and kidsim target listen on
		// loopback, which a deployed operator refuses to call, and the
		// fake serves plain http://.
		Outbound:             outbound.Options{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}},
		AllowInsecureAPIURLs: true,
		APIAllowHosts:        []string{"127.0.0.0/8", "::1", "localhost"},
	})
	if err != nil {
		return err
	}

	secretNote := "from KID_WEBHOOK_SECRET"
	if generated {
		secretNote = "generated; set KID_WEBHOOK_SECRET to choose it"
	}
	done := make(chan error, 1)
	waiting, stopWaiting := context.WithCancel(ctx)
	defer stopWaiting()
	go func() {
		err := mgr.Start(ctx)
		stopWaiting()
		done <- err
	}()
	// The banner invites a delivery at once, so it waits until one would
	// be verified and stored, not answered 503.
	if !receiverReady(waiting, url) {
		// Ctrl-C, or the operator stopped on its own (its error says why).
		return <-done
	}
	fmt.Printf(`
kid-operator is running on a local control plane.

  kubeconfig:     %[1]s
  webhook URL:    %[2]s
  webhook secret: %[3]s (%[4]s)
  fake k-ID:      http://%[5]s (its API at /api/v1, key %[6]q; it delivers to the webhook URL)
  DOM events demo: http://%[7]s/ (a game's page: the fake k-ID's widget, kid-events.js
                  from the receiver, the relay and the player's live status)

Try, in another shell (README, "Walkthrough"):
  export KUBECONFIG=%[1]s KIDSIM_URL=http://%[5]s
  go run ./cmd/kidsim challenge start
  go run ./cmd/kidsim challenge approve <challenge id>
  go run ./cmd/kidsim session permission <session id> text-chat-private on
  kubectl get kidusers -o wide

Ctrl-C stops everything.
`, kubeconfig, url, secret, secretNote, simAddr, demoAPIKey, demoAddr)

	return <-done
}

// receiverReady waits until the receiver verifies deliveries for the demo
// product: an unsigned POST is then answered 401 (before, 503 or no answer),
// and refused before anything is stored. It reports false when ctx ended
// first.
func receiverReady(ctx context.Context, url string) bool {
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("{}"))
		if err != nil {
			return false
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// writeKubeconfig writes an admin kubeconfig for the local control plane.
func writeKubeconfig(env *envtest.Environment, path string) error {
	user, err := env.AddUser(envtest.User{Name: "kid-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("adding the admin user: %w", err)
	}
	raw, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("rendering the kubeconfig: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o600)
}

// webhookSecret returns KID_WEBHOOK_SECRET, or a new random secret.
func webhookSecret() (string, bool, error) {
	if s := os.Getenv("KID_WEBHOOK_SECRET"); s != "" {
		return s, false, nil
	}
	s, err := randomHex(24)
	return s, err == nil, err
}

// randomHex returns n random bytes, hex-encoded.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// demoAPIKey is the fake k-ID's API key under make run.
const demoAPIKey = "demo-api-key"

// createDemo creates the sample product in namespace default, with its
// webhook Secret, its API pointed at the fake k-ID and, if browser is set,
// its relay token Secret and spec.browser.
func createDemo(ctx context.Context, c client.Client, samplePath, secret, apiBaseURL string, browser *kidv1.BrowserSpec, relayKey string) error {
	raw, err := os.ReadFile(samplePath)
	if err != nil {
		return err
	}
	product := &kidv1.KidProduct{}
	if err := utilyaml.Unmarshal(raw, product); err != nil {
		return fmt.Errorf("reading %s: %w", samplePath, err)
	}
	product.Namespace = "default"
	if err := c.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: product.Spec.Webhook.SecretRef.Name, Namespace: product.Namespace, Labels: kidv1.SecretLabels()},
		StringData: map[string]string{"current": secret},
	}); err != nil {
		return fmt.Errorf("creating the webhook secret: %w", err)
	}
	if product.Spec.API != nil {
		product.Spec.API.BaseURL = apiBaseURL
		// The fake stands in for k-ID's test environment: a rate above its
		// limit would only collect 429s.
		if rps := product.Spec.API.RequestsPerSecond; rps != nil && *rps > kidsim.TestRateLimit {
			*rps = kidsim.TestRateLimit
		}
		if err := c.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: product.Spec.API.SecretRef.Name, Namespace: product.Namespace, Labels: kidv1.SecretLabels()},
			StringData: map[string]string{product.Spec.API.SecretRef.Key: demoAPIKey},
		}); err != nil {
			return fmt.Errorf("creating the API secret: %w", err)
		}
	}
	if browser != nil {
		if err := c.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: browser.TokenSecretRef.Name, Namespace: product.Namespace, Labels: kidv1.SecretLabels()},
			StringData: map[string]string{"current": relayKey},
		}); err != nil {
			return fmt.Errorf("creating the relay token secret: %w", err)
		}
		product.Spec.Browser = browser
	}
	if err := c.Create(ctx, product); err != nil {
		return fmt.Errorf("creating the demo product: %w", err)
	}
	return nil
}
