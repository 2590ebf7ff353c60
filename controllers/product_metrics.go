package controllers

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/cachemem"
)

// The gauges of a product's health are labelled namespace and name apart,
// as kube-state-metrics and Flux label theirs, so that they join with
// kube_* series and route by namespace in Alertmanager. (The older kid_*
// series carry a joined product="namespace/name".) Prometheus must keep
// the metric's namespace over the target's: honorLabels in the chart's
// ServiceMonitor.
var (
	productReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kid_product_ready",
		Help: "1 when the KidProduct's Ready condition is True (its webhook Secret is usable), else 0, by namespace and name, as of the product's last pass.",
	}, []string{"namespace", "name"})

	// Counted in the product's pass over its events, which the events'
	// phase changes wake (an event settles Failed once its runs are done,
	// and a redrive puts it back): no read of its own.
	productFailedRuns = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kid_product_failed_runs",
		Help: "KidAction runs that failed for good on the product's stored KidEvents and wait for a redrive (kubectl kid redrive, or the kid.dev/redrive annotation), or for retention to delete their event, by namespace and name, as of the product's last pass.",
	}, []string{"namespace", "name"})

	// A time rather than an age, as kid_events_oldest_pending_timestamp_seconds:
	// time() minus it grows while the lists take, whatever else happens.
	cacheSyncingSince = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kid_cache_syncing_since_timestamp_seconds",
		Help: "When this manager, leading, began to wait for its cache's first lists of KidProducts, KidEvents, KidUsers and KidActions (Unix seconds); 0 once they are synced, and on a replica that does not lead.",
	})

	cacheSyncDuration = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kid_cache_sync_duration_seconds",
		Help: "How long this manager's cache took to list every KidProduct, KidEvent, KidUser and KidAction when it took the lead; 0 until it has.",
	})

	players = &playersCollector{}
)

func init() {
	metrics.Registry.MustRegister(productReady, productFailedRuns, cacheSyncingSince, cacheSyncDuration, players)
}

// forgetProductGauges drops a deleted product's health gauges.
func forgetProductGauges(key types.NamespacedName) {
	productReady.DeleteLabelValues(key.Namespace, key.Name)
	productFailedRuns.DeleteLabelValues(key.Namespace, key.Name)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// LeaderMetrics computes, while this replica leads, the gauges that need
// the controllers' cache: how long its first lists took
// (kid_cache_syncing_since_timestamp_seconds, kid_cache_sync_duration_seconds),
// then the players of each product (kid_product_players). It is a
// manager.Runnable that runs only on the leader, as the controllers do:
// the cache of every KidUser exists only there.
type LeaderMetrics struct {
	// Cache is the manager's cache (mgr.GetCache()).
	Cache cache.Cache
}

// NeedLeaderElection makes the manager start it only while leading.
func (m *LeaderMetrics) NeedLeaderElection() bool { return true }

// syncedKinds are the kinds the controllers' first lists read.
var syncedKinds = []client.Object{&kidv1.KidProduct{}, &kidv1.KidEvent{}, &kidv1.KidUser{}, &kidv1.KidAction{}}

// Start times the cache's first lists, then keeps the players' counts
// until ctx ends.
func (m *LeaderMetrics) Start(ctx context.Context) error {
	began := time.Now()
	cacheSyncingSince.Set(float64(began.UnixNano()) / 1e9)
	defer cacheSyncingSince.Set(0)
	var synced []toolscache.InformerSynced
	var users cache.Informer
	for _, obj := range syncedKinds {
		// The same informers the controllers start: asking for them
		// does not block, so the wait below is the lists' own.
		inf, err := m.Cache.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
		if err != nil {
			return err
		}
		synced = append(synced, inf.HasSynced)
		if _, ok := obj.(*kidv1.KidUser); ok {
			users = inf
		}
	}
	// A start past --cache-sync-timeout stops the manager (ctx ends).
	if !toolscache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil
	}
	cacheSyncDuration.Set(time.Since(began).Seconds())
	cacheSyncingSince.Set(0)

	counts := &playerCounts{n: map[types.NamespacedName]int{}}
	reg, err := users.AddEventHandler(counts.handler())
	if err != nil {
		return err
	}
	players.publish(counts, reg.HasSynced, m.Cache)
	<-ctx.Done()
	players.publish(nil, nil, nil)
	return users.RemoveEventHandler(reg)
}

// playerCounts counts the cached KidUsers by product, kept by the
// informer's event handler: one map update per create or delete (and per
// update that moves a user to another product), so that a scrape costs
// one read per product, not a pass over every player. A pass over the
// store at each scrape was measured first: about half a second at 250,000
// players on the shared 2-core machine (docs/design.md, "Monitoring, as
// built").
type playerCounts struct {
	mu sync.Mutex
	n  map[types.NamespacedName]int
}

func (c *playerCounts) add(obj any, d int) {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	// The informer holds cachemem.Users (the cache's compact form), or
	// whole KidUsers where no transform runs.
	ns, product, ok := cachemem.ProductOf(obj)
	if !ok {
		return
	}
	key := types.NamespacedName{Namespace: ns, Name: product}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] += d; c.n[key] <= 0 {
		delete(c.n, key)
	}
}

func (c *playerCounts) get(key types.NamespacedName) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

// handler is the informer's handler. An informer hands a handler added
// late a create for each object it holds, and on a relist the creates,
// updates and deletes that bring the store to the list: the counts are
// the store's.
func (c *playerCounts) handler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.add(obj, 1) },
		UpdateFunc: func(oldObj, newObj any) {
			_, was, ok1 := cachemem.ProductOf(oldObj)
			_, is, ok2 := cachemem.ProductOf(newObj)
			if ok1 && ok2 && was != is {
				c.add(oldObj, -1)
				c.add(newObj, 1)
			}
		},
		DeleteFunc: func(obj any) { c.add(obj, -1) },
	}
}

// playersDesc is kid_product_players.
var playersDesc = prometheus.NewDesc("kid_product_players",
	"KidUsers (players) of the product, by namespace and name, from the leading manager's cache; only the leader exports it.",
	[]string{"namespace", "name"}, nil)

// playersCollector exports kid_product_players at each scrape from the
// counts of the LeaderMetrics running on this replica: one series for
// each KidProduct the cache holds, 0 for one without players, none for a
// product deleted (its players' series would outlive it otherwise). Before
// the counts have seen every cached user, it exports nothing rather than
// a part.
type playersCollector struct {
	mu       sync.Mutex
	counts   *playerCounts
	synced   func() bool
	products client.Reader
}

func (p *playersCollector) publish(counts *playerCounts, synced func() bool, products client.Reader) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts, p.synced, p.products = counts, synced, products
}

// Describe implements prometheus.Collector.
func (p *playersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- playersDesc }

// Collect implements prometheus.Collector.
func (p *playersCollector) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	counts, synced, products := p.counts, p.synced, p.products
	p.mu.Unlock()
	if counts == nil || !synced() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var list kidv1.KidProductList
	if err := products.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return
	}
	for i := range list.Items {
		pr := &list.Items[i]
		n := counts.get(types.NamespacedName{Namespace: pr.Namespace, Name: pr.Name})
		ch <- prometheus.MustNewConstMetric(playersDesc, prometheus.GaugeValue, float64(n), pr.Namespace, pr.Name)
	}
}
