package controllers

import (
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/cachemem"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

// countedPlayers makes n players of four products in namespace "game",
// counted as the informer's handler counts them, and a collector that
// reads those counts and the four products.
func countedPlayers(tb testing.TB, n int) (*playerCounts, *playersCollector) {
	tb.Helper()
	counts := &playerCounts{n: map[typesKey]int{}}
	h := counts.handler()
	b := fake.NewClientBuilder().WithScheme(scheme.Scheme)
	for i := range 4 {
		b = b.WithObjects(&kidv1.KidProduct{ObjectMeta: metav1.ObjectMeta{Namespace: "game", Name: "p" + strconv.Itoa(i)}})
	}
	for i := range n {
		h.OnAdd(&kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{Namespace: "game", Name: "u" + strconv.Itoa(i)},
			Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "p" + strconv.Itoa(i%4)}},
		}, true)
	}
	c := &playersCollector{}
	c.publish(counts, func() bool { return true }, b.Build())
	return counts, c
}

type typesKey = types.NamespacedName

// The counts follow creates, moves between products and deletes (also
// as a tombstone, a delete the informer missed).
func TestPlayerCounts(t *testing.T) {
	counts, _ := countedPlayers(t, 8)
	h := counts.handler()
	key := func(p string) typesKey { return typesKey{Namespace: "game", Name: p} }
	if got := counts.get(key("p0")); got != 2 {
		t.Fatalf("p0 has %d players, want 2", got)
	}
	u := &kidv1.KidUser{ObjectMeta: metav1.ObjectMeta{Namespace: "game", Name: "u0"}, Spec: kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "p0"}}}
	moved := u.DeepCopy()
	moved.Spec.ProductRef.Name = "p1"
	h.OnUpdate(u, moved)
	h.OnUpdate(moved, moved) // a status change: no move
	if counts.get(key("p0")) != 1 || counts.get(key("p1")) != 3 {
		t.Errorf("after a move: p0 %d, p1 %d; want 1, 3", counts.get(key("p0")), counts.get(key("p1")))
	}
	h.OnDelete(toolscache.DeletedFinalStateUnknown{Key: "game/u0", Obj: moved})
	h.OnDelete(&kidv1.KidUser{ObjectMeta: metav1.ObjectMeta{Namespace: "game", Name: "u4"}, Spec: kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "p0"}}})
	if counts.get(key("p0")) != 0 || counts.get(key("p1")) != 2 {
		t.Errorf("after deletes: p0 %d, p1 %d; want 0, 2", counts.get(key("p0")), counts.get(key("p1")))
	}
	if _, ok := counts.n[key("p0")]; ok {
		t.Error("a product without players keeps an entry")
	}

	// The manager's informer holds the cache's compact form, not KidUsers.
	compact, err := cachemem.Transform()(&kidv1.KidUser{ObjectMeta: metav1.ObjectMeta{Namespace: "game", Name: "u9"}, Spec: kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "p1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, isUser := compact.(*kidv1.KidUser); isUser {
		t.Fatal("the transform kept a KidUser: this case tests nothing")
	}
	h.OnAdd(compact, false)
	if got := counts.get(key("p1")); got != 3 {
		t.Errorf("after a cached player's add: p1 %d, want 3", got)
	}
}

// BenchmarkPlayersGauge is what kid_product_players costs: per scrape,
// with 250,000 players counted (a read of each product's count, four
// products, listed from a cache), and per KidUser created (the informer's
// handler). A pass over the informer's store at each scrape, the first
// design, took 0.54 s at 250,000 players on the shared 2-core machine.
func BenchmarkPlayersGauge(b *testing.B) {
	b.Run("scrape", func(b *testing.B) {
		_, c := countedPlayers(b, 250000)
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := reg.Gather(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("create", func(b *testing.B) {
		counts, _ := countedPlayers(b, 0)
		h := counts.handler()
		u := &kidv1.KidUser{ObjectMeta: metav1.ObjectMeta{Namespace: "game", Name: "u"}, Spec: kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "p0"}}}
		b.ReportAllocs()
		for b.Loop() {
			h.OnAdd(u, false)
		}
	})
}
