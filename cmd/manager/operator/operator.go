// Package operator assembles kid-operator's manager: the informer cache, the
// controllers and the webhook receiver. The manager command, `make run` and
// the integration tests all build it here, so that they run the same thing.
package operator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsfilters "sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/controllers"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/cachemem"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/kidapi"
	"github.com/kid-operator/kid-operator/internal/outbound"
	"github.com/kid-operator/kid-operator/internal/scheme"
	"github.com/kid-operator/kid-operator/internal/secrets"
	"github.com/kid-operator/kid-operator/webhookserver"
)

// Options configure the manager.
type Options struct {
	// MetricsAddr serves /metrics; "0" turns it off. On a loopback address
	// it is plain HTTP for whoever can reach it (tests, `make run`, a
	// scraping sidecar); on any other address it is HTTPS, and a scrape
	// must carry a bearer token that the API server authenticates
	// (TokenReview) and authorises for GET /metrics (SubjectAccessReview).
	MetricsAddr string
	// MetricsCertDir holds tls.crt and tls.key for the HTTPS metrics
	// endpoint; empty means a self-signed certificate made at start.
	MetricsCertDir string
	// ProbeAddr serves /healthz and /readyz; "0" turns it off.
	ProbeAddr string
	// PprofAddr serves /debug/pprof; "" or "0" turns it off.
	PprofAddr string
	// LeaderElection makes only one replica run the controllers; every
	// replica receives webhooks.
	LeaderElection          bool
	LeaderElectionNamespace string
	// LeaseDuration, RenewDeadline and RetryPeriod time the election
	// (zero: controller-runtime's 15 s, 10 s and 2 s). A leader that dies
	// hard is replaced within LeaseDuration and a RetryPeriod; one that
	// stops on SIGTERM releases its lease, and is replaced within a
	// RetryPeriod.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// CacheSyncTimeout is how long each controller waits for its informers'
	// first lists before the manager gives up and exits (zero:
	// DefaultCacheSyncTimeout). controller-runtime's own 2 minutes is less
	// than a start takes at a quarter of a million players, and a manager
	// that exits there restarts into the same wait: a crash loop.
	CacheSyncTimeout time.Duration
	// Webhook configures the receiver.
	Webhook webhookserver.Options
	// QPS and Burst of the API client. The receiver creates one object per
	// delivery and the controllers write four more per event (docs/
	// benchmarks.md), so the client-go defaults (5 and 10) would throttle at
	// one or two events per second.
	QPS   float32
	Burst int
	// Clock is the controllers' clock; nil means the real clock. The
	// receiver's is Webhook.Clock.
	Clock clock.PassiveClock
	// Outbound configures the one outbound HTTP client, which KidActions
	// and the k-ID API client share: timeouts, no redirects, and the
	// address guard (loopback, link-local, private and cluster ranges are
	// refused unless allowed here).
	Outbound outbound.Options
	// HTTPClient, if set, replaces the outbound client (tests).
	HTTPClient *http.Client
	// AllowInsecureAPIURLs lets a product's spec.api.baseURL be plain
	// http://, which sends its API key unencrypted: for `make run` and the
	// tests, whose fake k-ID serves on loopback. Off, such a product's
	// APIReady is False (InsecureBaseURL).
	AllowInsecureAPIURLs bool
	// APIAllowHosts are hosts beyond k-ID's own that a product's
	// spec.api.baseURL may name (kidapi.ParseAllowedHosts: names, IP
	// addresses or ranges, each ENTRY or ENTRY@NAMESPACE); empty allows
	// k-ID's hosts only. `make run` and the tests allow loopback, where
	// their fake k-ID listens.
	APIAllowHosts []string
	// DefaultActionServiceAccount is the ServiceAccount (in each action's
	// namespace) that resource actions naming none create their objects
	// as; empty means every resource action must name one.
	DefaultActionServiceAccount string
	// ReceiverOnly runs the webhook receiver without the controllers: a
	// receiving tier that scales apart from the one that reconciles.
	ReceiverOnly bool
	// WatchNamespaces, if set, are the only namespaces the operator sees:
	// its informer cache holds their objects only, the receiver answers
	// 404 for products elsewhere, and Roles in those namespaces are all
	// the RBAC it needs (config/rbac/namespaced). Empty means every
	// namespace.
	WatchNamespaces []string
	// SecretTTL is how long a Secret a product names is used before it is
	// read again; 0 means secrets.DefaultTTL.
	SecretTTL time.Duration
	// SecretLastGoodFor is how long past SecretTTL the last copy of a
	// Secret read is still used while the API server fails or hangs
	// (secrets.Options.LastGoodFor); 0 means never.
	SecretLastGoodFor time.Duration
	// SecretRecheck is how often, at the least, the controllers read the
	// Secrets products name again (with jitter up to as much again); 0
	// means controllers.DefaultSecretRecheck.
	SecretRecheck time.Duration
	// APIReadConcurrency is how many reads of k-ID's API may be in flight
	// at once, every product together (the kiduser-api controller's
	// workers, apart from the KidUser controller's own); 0 means
	// controllers.DefaultReadConcurrency. Each product's rate still
	// bounds its own reads.
	APIReadConcurrency int
	// UserSweep is how often the KidUser controllers' sweep enqueues the
	// players due before the next one; 0 means
	// controllers.DefaultUserSweep. The tests sweep every few seconds.
	UserSweep time.Duration
	// ActionFilterBudget is the wall-clock time all of a namespace's
	// KidAction filters share for one event; 0 means
	// actions.DefaultFilterBudget.
	ActionFilterBudget time.Duration
	// MaxActionsPerNamespace is how many of a namespace's KidActions, in
	// name order, one event evaluates; 0 means actions.DefaultMaxActions.
	MaxActionsPerNamespace int
	// ActionFilterLanes is how many of one namespace's events evaluate
	// their filters at once; 0 means controllers.DefaultFilterLanes.
	ActionFilterLanes int
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
	// Receiver is the webhook receiver the manager runs; nil when the
	// webhook address is "0".
	Receiver *webhookserver.Server
	// Secrets is the cache of the Secrets products name, which the
	// receiver and the controllers share.
	Secrets *secrets.Cache
	// Users reads the cache's KidUsers (cachemem.User): the manager's
	// cache itself cannot, as it holds no KidUser type.
	Users cachemem.UserCache
}

// Leader election: its Lease, and the core Events it records about it
// (config/namespaced grants these in the operator's own namespace only).
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

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
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	noReceiver := opts.Webhook.Addr == "0"
	if noReceiver && opts.ReceiverOnly {
		return nil, errors.New("a receiver-only manager needs a webhook address")
	}
	namespaces, err := watchNamespaces(opts.WatchNamespaces)
	if err != nil {
		return nil, err
	}
	apiHosts, err := kidapi.ParseAllowedHosts(opts.APIAllowHosts)
	if err != nil {
		return nil, fmt.Errorf("API allow hosts: %w", err)
	}
	transform := cachemem.Transform()
	userStores := &cachemem.Stores{}
	cacheOpts := cache.Options{
		// Keeps of each KidUser its skeleton as a compact cachemem.User,
		// drops managed fields and shares what cached objects repeat:
		// the cache holds every player (internal/cachemem).
		DefaultTransform: transform,
		// Transforms each page of an initial list as it arrives: without
		// the API server's watch cache, client-go gathers every page
		// before the store's transform runs. Records the KidUser stores
		// in userStores, through which the controllers read them.
		NewInformer: cachemem.NewInformer(transform, userStores),
	}
	if len(namespaces) > 0 {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			cacheOpts.DefaultNamespaces[ns] = cache.Config{}
		}
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme.Scheme,
		Metrics:                metricsOptions(opts),
		HealthProbeBindAddress: opts.ProbeAddr,
		PprofBindAddress:       opts.PprofAddr,
		// A receiver-only replica has nothing to lead.
		LeaderElection:          opts.LeaderElection && !opts.ReceiverOnly,
		LeaderElectionID:        "kid-operator.kid.dev",
		LeaderElectionNamespace: opts.LeaderElectionNamespace,
		LeaseDuration:           nonZero(opts.LeaseDuration),
		RenewDeadline:           nonZero(opts.RenewDeadline),
		RetryPeriod:             nonZero(opts.RetryPeriod),
		// The process exits once the manager stops, so the lease can be
		// given up at once rather than left to expire: a rolling restart
		// moves the controllers in a RetryPeriod, not a LeaseDuration.
		LeaderElectionReleaseOnCancel: true,
		// The receiver drains first, then the controllers finish their
		// reconciles (controller-runtime stops them in that order).
		GracefulShutdownTimeout: ptr.To(opts.Webhook.DrainPeriod + webhookserver.ShutdownTimeout + 15*time.Second),
		Controller:              config.Controller{SkipNameValidation: &opts.SkipControllerNameValidation, CacheSyncTimeout: cacheSyncTimeout(opts.CacheSyncTimeout)},
		Cache:                   cacheOpts,
		// No informer ever holds Secrets: the few that products name are
		// read one get at a time (internal/secrets), and anything else
		// that reads a Secret through the client reads it live. The
		// informer holds only KidUsers' skeletons (cachemem.User, a type
		// the client could not read), so the client reads every KidUser
		// live too; the cache of skeletons is read through
		// cachemem.UserCache alone.
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}, &kidv1.KidUser{}}}},
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}

	sec := secrets.New(mgr.GetAPIReader(), secrets.Options{TTL: opts.SecretTTL, LastGoodFor: opts.SecretLastGoodFor})
	op := &Operator{Manager: mgr, Secrets: sec, Users: userStores.Users()}
	if !noReceiver {
		store, err := inbox.RESTStore(cfg)
		if err != nil {
			return nil, err
		}
		opts.Webhook.Namespaces = namespaces
		// The status stream watches the few KidUsers a page follows on
		// the API server, never through the cache (which, without the
		// controllers, holds no KidUser at all).
		if opts.Webhook.Browser.Users, err = client.NewWithWatch(cfg, client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()}); err != nil {
			return nil, fmt.Errorf("creating the status stream's client: %w", err)
		}
		if op.Receiver, err = webhookserver.New(mgr.GetCache(), sec, store, opts.Webhook); err != nil {
			return nil, err
		}
		if err := mgr.Add(op.Receiver); err != nil {
			return nil, fmt.Errorf("adding webhook receiver: %w", err)
		}
	}
	if err := addProbes(mgr, op.Receiver, opts.ProbeAddr); err != nil {
		return nil, err
	}
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
	apiClients.Secrets = sec
	apiClients.AllowInsecureURLs = opts.AllowInsecureAPIURLs
	apiClients.AllowedHosts = apiHosts
	ctx := context.Background()
	if err := controllers.SetupIndexes(ctx, mgr); err != nil {
		return nil, err
	}
	// The controllers' client refuses any write of a KidUser skeleton;
	// users is the one reader of the cache's skeletons.
	writer := cachemem.RefuseSkeletons(mgr.GetClient())
	users := op.Users
	if err := (&controllers.KidProductReconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("kidproduct-controller"), Clock: opts.Clock, APIClients: apiClients,
		Secrets: sec, SecretRecheck: opts.SecretRecheck,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up KidProduct controller: %w", err)
	}
	filters := actions.NewFilters()
	impersonator := actions.NewImpersonator(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()}, opts.DefaultActionServiceAccount)
	if err := (&controllers.KidEventReconciler{
		Client: writer, Users: users, Recorder: mgr.GetEventRecorder("kidevent-controller"), Clock: opts.Clock,
		Filters: filters, HTTPClient: httpClient, APIReader: mgr.GetAPIReader(), Impersonator: impersonator,
		MatchLimits:  actions.MatchLimits{Budget: opts.ActionFilterBudget, MaxActions: opts.MaxActionsPerNamespace},
		FilterLanes:  opts.ActionFilterLanes,
		APIClients:   apiClients,
		StandInDelay: controllers.DefaultStandInDelay,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up KidEvent controller: %w", err)
	}
	if err := (&controllers.KidUserReconciler{
		Client: writer, Users: users, APIReader: mgr.GetAPIReader(), APIClients: apiClients, Clock: opts.Clock,
		ReadConcurrency: opts.APIReadConcurrency, SweepInterval: opts.UserSweep,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up KidUser controller: %w", err)
	}

	if err := (&controllers.KidActionReconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("kidaction-controller"), Filters: filters, Impersonator: impersonator,
		MaxActions: opts.MaxActionsPerNamespace,
		Secrets:    sec,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up KidAction controller: %w", err)
	}
	// The gauges only the leader's cache can answer: its first lists'
	// time, players per product.
	if err := mgr.Add(&controllers.LeaderMetrics{Cache: mgr.GetCache()}); err != nil {
		return nil, fmt.Errorf("adding the leader's metrics: %w", err)
	}

	return op, nil
}

// DefaultCacheSyncTimeout is the default of Options.CacheSyncTimeout: the
// first list of 250,000 KidUsers took minutes on a 2-core machine without
// the API server's watch cache (docs/benchmarks.md), and ten minutes leaves
// room for that while still ending a start that can never finish (RBAC
// refusing a list, a CRD missing).
const DefaultCacheSyncTimeout = 10 * time.Minute

// MinCacheSyncTimeout and MaxCacheSyncTimeout bound --cache-sync-timeout.
const (
	MinCacheSyncTimeout = 30 * time.Second
	MaxCacheSyncTimeout = time.Hour
)

// cacheSyncTimeout is d, or DefaultCacheSyncTimeout when d is zero.
func cacheSyncTimeout(d time.Duration) time.Duration {
	if d <= 0 {
		return DefaultCacheSyncTimeout
	}
	return d
}

// nonZero is a pointer to d, or nil (the default) when d is zero.
func nonZero(d time.Duration) *time.Duration {
	if d == 0 {
		return nil
	}
	return &d
}

// watchNamespaces returns the namespaces named, trimmed and without
// duplicates.
func watchNamespaces(names []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, ns := range names {
		ns = strings.TrimSpace(ns)
		if ns == "" || seen[ns] {
			continue
		}
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("watch namespace %q: %s", ns, strings.Join(errs, "; "))
		}
		seen[ns] = true
		out = append(out, ns)
	}
	return out, nil
}

// metricsOptions serves /metrics as plain HTTP on a loopback address, and
// otherwise as HTTPS behind controller-runtime's filter: the scraper's
// bearer token is checked with a TokenReview and its right to GET /metrics
// with a SubjectAccessReview (config/rbac/metrics_auth_role.yaml lets the
// operator ask; metrics_reader_role.yaml is the scraper's).
func metricsOptions(opts Options) metricsserver.Options {
	m := metricsserver.Options{BindAddress: opts.MetricsAddr}
	if opts.MetricsAddr == "0" || IsLoopback(opts.MetricsAddr) {
		return m
	}
	m.SecureServing = true
	m.FilterProvider = metricsfilters.WithAuthenticationAndAuthorization
	if opts.MetricsCertDir != "" {
		m.CertDir = filepath.Clean(opts.MetricsCertDir)
		m.CertName, m.KeyName = "tls.crt", "tls.key"
	}
	return m
}

// IsLoopback reports whether a listen address (host:port) binds a loopback
// address only. An empty host (":8443") binds every address, so it is not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// addProbes serves /healthz, and /readyz once the receiver's caches synced
// and until it starts draining (at once when there is no receiver).
func addProbes(mgr ctrl.Manager, receiver *webhookserver.Server, addr string) error {
	if addr == "0" {
		return nil
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if receiver == nil {
		return mgr.AddReadyzCheck("ping", healthz.Ping)
	}
	return mgr.AddReadyzCheck("webhook-receiver", func(*http.Request) error {
		if !receiver.Ready() {
			return fmt.Errorf("caches not synced, or draining before a stop")
		}
		return nil
	})
}
