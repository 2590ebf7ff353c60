// Package operator assembles kid-operator's manager: the informer cache, the
// controllers and the webhook receiver. The manager command, `make run` and
// the integration tests all build it here, so that they run the same thing.
package operator

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kid-operator/kid-operator/controllers"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/outbound"
	"github.com/kid-operator/kid-operator/internal/scheme"
	"github.com/kid-operator/kid-operator/webhookserver"
)

// Options configure the manager.
type Options struct {
	// MetricsAddr serves /metrics; "0" turns it off.
	MetricsAddr string
	// ProbeAddr serves /healthz and /readyz; "0" turns it off.
	ProbeAddr string
	// PprofAddr serves /debug/pprof; "" or "0" turns it off.
	PprofAddr string
	// LeaderElection makes only one replica run the controllers; every
	// replica receives webhooks.
	LeaderElection          bool
	LeaderElectionNamespace string
	// Webhook configures the receiver.
	Webhook webhookserver.Options
	// QPS and Burst of the API client. The receiver creates one object per
	// delivery and the controllers write four more per event (docs/
	// benchmarks.md), so the client-go defaults (5 and 10) would throttle at
	// one or two events per second.
	QPS   float32
	Burst int
	// Now is the controllers' clock; nil means time.Now.
	Now func() time.Time
	// Outbound configures the one outbound HTTP client, which KidActions
	// and the k-ID API client share: timeouts, no redirects, and the
	// address guard (loopback, link-local, private and cluster ranges are
	// refused unless allowed here).
	Outbound outbound.Options
	// HTTPClient, if set, replaces the outbound client (tests).
	HTTPClient *http.Client
	// ReceiverOnly runs the webhook receiver without the controllers: a
	// receiving tier that scales apart from the one that reconciles.
	ReceiverOnly bool
	// SkipControllerNameValidation lets one process build the manager more
	// than once (tests that restart the operator).
	SkipControllerNameValidation bool
}

// Defaults of Options.
const (
	DefaultQPS   = 500
	DefaultBurst = 1000
)

// Operator is a manager with kid-operator's controllers and receiver.
type Operator struct {
	ctrl.Manager
	// Receiver is the webhook receiver the manager runs.
	Receiver *webhookserver.Server
}

// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

// New builds the manager with every controller and the receiver.
func New(cfg *rest.Config, opts Options) (*Operator, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = opts.QPS, opts.Burst
	if cfg.QPS == 0 {
		cfg.QPS = DefaultQPS
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultBurst
	}
	if opts.MetricsAddr == "" {
		opts.MetricsAddr = "0"
	}
	if opts.ProbeAddr == "" {
		opts.ProbeAddr = "0"
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme.Scheme,
		Metrics:                metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress: opts.ProbeAddr,
		PprofBindAddress:       opts.PprofAddr,
		// A receiver-only replica has nothing to lead.
		LeaderElection:          opts.LeaderElection && !opts.ReceiverOnly,
		LeaderElectionID:        "kid-operator.kid.dev",
		LeaderElectionNamespace: opts.LeaderElectionNamespace,
		Controller:              config.Controller{SkipNameValidation: &opts.SkipControllerNameValidation},
		Cache: cache.Options{
			// Managed fields are never read here; dropping them roughly
			// halves the cache's memory.
			DefaultTransform: cache.TransformStripManagedFields(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}

	store, err := inbox.RESTStore(cfg)
	if err != nil {
		return nil, err
	}
	receiver := webhookserver.New(mgr.GetCache(), store, opts.Webhook)
	if err := mgr.Add(receiver); err != nil {
		return nil, fmt.Errorf("adding webhook receiver: %w", err)
	}
	if err := addProbes(mgr, receiver, opts.ProbeAddr); err != nil {
		return nil, err
	}
	op := &Operator{Manager: mgr, Receiver: receiver}
	if opts.ReceiverOnly {
		return op, nil
	}

	httpClient := opts.HTTPClient
	if httpClient == nil {
		if opts.Outbound.Timeout == 0 {
			// The longest any caller may ask for; each request is
			// bounded more tightly by its own context.
			opts.Outbound.Timeout = 30 * time.Second
		}
		httpClient = outbound.New(opts.Outbound)
	}
	apiClients := controllers.NewAPIClients(httpClient)
	ctx := context.Background()
	if err := controllers.SetupIndexes(ctx, mgr); err != nil {
		return nil, err
	}
	if err := (&controllers.KidProductReconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("kidproduct-controller"), Now: opts.Now, APIClients: apiClients,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up KidProduct controller: %w", err)
	}
	filters := actions.NewFilters()
	if err := (&controllers.KidEventReconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("kidevent-controller"), Now: opts.Now,
		Filters: filters, HTTPClient: httpClient, APIReader: mgr.GetAPIReader(),
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up KidEvent controller: %w", err)
	}
	if err := (&controllers.KidUserReconciler{
		Client: mgr.GetClient(), APIClients: apiClients, Now: opts.Now,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up KidUser controller: %w", err)
	}

	if err := (&controllers.KidActionReconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("kidaction-controller"), Filters: filters,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up KidAction controller: %w", err)
	}

	return op, nil
}

// addProbes serves /healthz, and /readyz once the receiver's caches synced.
func addProbes(mgr ctrl.Manager, receiver *webhookserver.Server, addr string) error {
	if addr == "0" {
		return nil
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("webhook-caches", func(*http.Request) error {
		if !receiver.Ready() {
			return fmt.Errorf("caches not synced")
		}
		return nil
	})
}
