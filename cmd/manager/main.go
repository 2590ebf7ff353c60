// Command manager runs kid-operator: the KidProduct, KidEvent and KidUser
// controllers, and the k-ID webhook receiver.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/kid-operator/kid-operator/cmd/manager/operator"
	"github.com/kid-operator/kid-operator/controllers"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/kidapi"
	"github.com/kid-operator/kid-operator/internal/outbound"
	"github.com/kid-operator/kid-operator/internal/secrets"
	"github.com/kid-operator/kid-operator/internal/version"
	"github.com/kid-operator/kid-operator/webhookserver"
)

func main() {
	var opts operator.Options
	var qps float64
	flag.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8443", "address of the /metrics endpoint (0 turns it off); HTTPS with TokenReview/SubjectAccessReview checks unless it is a loopback address, where it is plain HTTP")
	flag.StringVar(&opts.MetricsCertDir, "metrics-cert-dir", "", "directory holding tls.crt and tls.key for the metrics endpoint (default: a self-signed certificate)")
	flag.StringVar(&opts.ProbeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	flag.StringVar(&opts.PprofAddr, "pprof-bind-address", "0", "address of the /debug/pprof endpoints (0 turns them off)")
	flag.BoolVar(&opts.ReceiverOnly, "receiver-only", false, "run only the webhook receiver, no controllers (a receiving tier that scales on its own)")
	flag.BoolVar(&opts.LeaderElection, "leader-elect", false, "run the controllers on one replica at a time (the receiver runs on every replica)")
	flag.StringVar(&opts.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader election Lease (default: the pod's own namespace; required outside a cluster)")
	flag.DurationVar(&opts.LeaseDuration, "leader-elect-lease-duration", 15*time.Second, "how long a leader that stopped renewing holds the lease: the longest the controllers pause when the leader dies hard")
	flag.DurationVar(&opts.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader tries to renew before it gives up leading (less than the lease duration)")
	flag.DurationVar(&opts.CacheSyncTimeout, "cache-sync-timeout", operator.DefaultCacheSyncTimeout, "how long the controllers wait for their caches' first lists at start before the manager exits; a large cluster's first list of every KidUser takes minutes")
	flag.DurationVar(&opts.RetryPeriod, "leader-elect-retry-period", 2*time.Second, "how often replicas try to acquire or renew the lease")
	flag.DurationVar(&opts.Webhook.DrainPeriod, "webhook-drain-period", webhookserver.DefaultDrainPeriod, "after SIGTERM, how long the receiver keeps serving while its readiness fails, so that the Service stops sending to it first; the pod's terminationGracePeriodSeconds must exceed this plus 15s")
	flag.StringVar(&opts.Webhook.Addr, "webhook-bind-address", envOr("KID_LISTEN_ADDR", ":8080"), "address the k-ID webhook receiver listens on (default $KID_LISTEN_ADDR); 0 runs no receiver (controllers only, beside a --receiver-only tier)")
	var watchNamespaces string
	flag.StringVar(&watchNamespaces, "watch-namespaces", "", "comma-separated namespaces the operator serves (its cache, controllers and receiver see only these; Roles in them suffice, see config/rbac/namespaced); empty: every namespace")
	flag.DurationVar(&opts.SecretTTL, "secret-ttl", secrets.DefaultTTL, "how long a Secret a product names is used before it is read again (a rotation also takes effect at the first delivery no cached key verifies)")
	flag.DurationVar(&opts.SecretLastGoodFor, "secret-last-good-for", time.Hour, "how long past --secret-ttl the last copy of a Secret read is still used while the API server fails or does not answer within a second, so that deliveries are still verified during an outage (0: never)")
	flag.StringVar(&opts.Webhook.Spool.Dir, "spool-dir", "", "directory of the receiver's spool: a verified delivery the API server cannot store within --webhook-store-timeout is kept there (fsynced) and answered 200, and stored once the API server answers; empty: no spool, such a delivery gets 503")
	flag.Int64Var(&opts.Webhook.Spool.MaxBytes, "spool-max-bytes", webhookserver.DefaultSpoolMaxBytes, "bytes the spool may hold; past it, deliveries the API server cannot store get 503")
	flag.DurationVar(&opts.Webhook.Spool.MaxAge, "spool-max-age", webhookserver.DefaultSpoolMaxAge, "age of the spool's oldest entry past which the spool is full: deliveries the API server cannot store get 503")
	flag.Float64Var(&opts.Webhook.Spool.DrainRate, "spool-drain-rate", webhookserver.DefaultSpoolDrainRate, "spooled events per second the receiver replays once the API server answers")
	flag.Int64Var(&opts.Webhook.MaxBodyBytes, "webhook-max-body-bytes", webhookserver.DefaultMaxBodyBytes, "largest webhook body accepted; larger ones get 413")
	flag.DurationVar(&opts.Webhook.StoreTimeout, "webhook-store-timeout", webhookserver.DefaultStoreTimeout, "how long a delivery waits for the API server before it gets 503")
	flag.IntVar(&opts.Webhook.Browser.MaxStreams, "browser-max-streams", webhookserver.DefaultMaxStreams, "status streams one replica serves at once, across products (each holds a watch or two on the API server); past it a page gets 429")
	flag.Float64Var(&qps, "kube-api-qps", operator.DefaultQPS, "API client requests per second")
	flag.IntVar(&opts.Burst, "kube-api-burst", operator.DefaultBurst, "API client burst")
	flag.IntVar(&opts.APIReadConcurrency, "api-read-concurrency", controllers.DefaultReadConcurrency, "reads of k-ID's REST API in flight at once, every product together (each product's requestsPerSecond still bounds its own); reads per second are at most this over k-ID's round trip")
	flag.DurationVar(&opts.ActionFilterBudget, "action-filter-budget", actions.DefaultFilterBudget, "wall-clock time all of a namespace's KidAction filters share for one event; the actions left are not evaluated, and the event's FiltersEvaluated condition names them (FilterBudgetExceeded)")
	flag.IntVar(&opts.MaxActionsPerNamespace, "max-actions-per-namespace", actions.DefaultMaxActions, "how many of a namespace's KidActions, in name order, one event evaluates; the rest are Ready=False, reason ActionLimitExceeded, and never run")
	flag.IntVar(&opts.ActionFilterLanes, "action-filter-lanes", controllers.DefaultFilterLanes, "how many of one namespace's events evaluate their KidAction filters at once, of the KidEvent controller's 16 workers; more wait in the queue behind other namespaces' events")
	var allowCIDRs, allowHosts, denyCIDRs string
	flag.StringVar(&allowCIDRs, "outbound-allow-cidrs", "", "comma-separated address ranges that KidActions and the k-ID API client may call although they are loopback, link-local, private, reserved or cluster ranges (refused by default), e.g. 10.20.0.0/16; RANGE@NAMESPACE allows the range for that namespace's KidActions only (repeat the entry for more namespaces)")
	flag.StringVar(&allowHosts, "outbound-allow-hosts", "", "comma-separated host names that may be called whatever they resolve to, e.g. backend.games.svc.cluster.local; HOST@NAMESPACE allows the host for that namespace's KidActions only (repeat the entry for more namespaces), e.g. backend.games.svc.cluster.local@games")
	flag.StringVar(&opts.DefaultActionServiceAccount, "default-action-service-account", "", "ServiceAccount (in each KidAction's namespace) that resource actions naming none create their objects as; empty: each must name one")
	flag.BoolVar(&opts.AllowInsecureAPIURLs, "allow-insecure-api-urls", false, "let a KidProduct's spec.api.baseURL be plain http://, which sends its k-ID API key unencrypted (make run and tests against the fake k-ID); otherwise such a product's APIReady is False, reason InsecureBaseURL")
	var apiAllowHosts string
	flag.StringVar(&apiAllowHosts, "api-allow-hosts", "", "comma-separated hosts, beyond k-ID's own (game-api.k-id.com, game-api.test.k-id.com), that a KidProduct's spec.api.baseURL may name, and so receive its API key: host names, IP addresses or ranges (127.0.0.0/8); HOST@NAMESPACE allows it for that namespace's products only (repeat the entry for more namespaces); otherwise such a product's APIReady is False, reason BaseURLNotAllowed")
	flag.StringVar(&denyCIDRs, "outbound-deny-cidrs", "", "comma-separated address ranges refused on top of the defaults (the cluster's pod and service ranges when they are public)")
	printVersion := flag.Bool("version", false, "print the version and the commit this binary was built from, and exit")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *printVersion {
		fmt.Println(version.Get())
		return
	}
	opts.QPS = float32(qps)
	opts.WatchNamespaces = strings.Split(watchNamespaces, ",")
	opts.APIAllowHosts = strings.Split(apiAllowHosts, ",")
	if _, err := kidapi.ParseAllowedHosts(opts.APIAllowHosts); err != nil {
		fmt.Fprintln(os.Stderr, "--api-allow-hosts:", err)
		os.Exit(2)
	}
	var err error
	if err = opts.Outbound.AddAllowCIDRs(allowCIDRs); err != nil {
		fmt.Fprintln(os.Stderr, "--outbound-allow-cidrs:", err)
		os.Exit(2)
	}
	if err = opts.Outbound.AddAllowHosts(allowHosts); err != nil {
		fmt.Fprintln(os.Stderr, "--outbound-allow-hosts:", err)
		os.Exit(2)
	}
	if opts.Outbound.Deny, err = outbound.ParsePrefixes(denyCIDRs); err != nil {
		fmt.Fprintln(os.Stderr, "--outbound-deny-cidrs:", err)
		os.Exit(2)
	}
	if err = checkFlagBounds(&opts); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if sa := opts.DefaultActionServiceAccount; sa != "" {
		if errs := validation.IsDNS1123Subdomain(sa); len(errs) > 0 {
			fmt.Fprintln(os.Stderr, "--default-action-service-account:", strings.Join(errs, "; "))
			os.Exit(2)
		}
	}

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")
	log.Info("starting", "version", version.Get().Version, "revision", version.Get().Revision)
	metrics.Registry.MustRegister(version.BuildInfoCollector())

	mgr, err := operator.New(ctrl.GetConfigOrDie(), opts)
	if err != nil {
		log.Error(err, "building the manager")
		os.Exit(1)
	}
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "running the manager")
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
