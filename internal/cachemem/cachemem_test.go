package cachemem

import (
	"fmt"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsjson "sigs.k8s.io/json"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// playerJSON is the i-th player as the API server sends it to a watch: the
// player of `make bench-scale` (consent Granted, age-verified, a session
// with four permissions, three conditions), from testdata/player.json.
func playerJSON(t testing.TB, i int) []byte {
	t.Helper()
	tmpl, err := os.ReadFile("testdata/player.json")
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.ReplaceAll(string(tmpl), "{{i}}", fmt.Sprintf("%012d", i)))
}

// decode decodes as the watch does (case-sensitive, as apimachinery's JSON
// serializer).
func decode(t testing.TB, body []byte) *kidv1.KidUser {
	t.Helper()
	u := &kidv1.KidUser{}
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(body, u); err != nil {
		t.Fatal(err)
	}
	return u
}

func transformed(t testing.TB, tf toolscache.TransformFunc, body []byte) *kidv1.KidUser {
	t.Helper()
	out, err := tf(decode(t, body))
	if err != nil {
		t.Fatal(err)
	}
	return UserOf(out.(*User))
}

// The transform keeps of a player its skeleton, and marks it.
func TestTransformKeepsTheSkeleton(t *testing.T) {
	tf := Transform()
	for i := range 3 {
		body := playerJSON(t, i)
		want := Skeleton(decode(t, body))
		u := decode(t, body)
		if IsSkeleton(u) {
			t.Fatal("a player as the API server sends it reads as a skeleton")
		}
		u.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kid-operator", Operation: metav1.ManagedFieldsOperationUpdate}}
		out, err := tf(u)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := out.(*User); !ok {
			t.Fatalf("player %d: the transform returned %T, want a *User", i, out)
		}
		got := UserOf(out)
		if !IsSkeleton(out.(*User)) || !IsSkeleton(got) || !IsSkeleton(got.DeepCopy()) {
			t.Errorf("player %d: the skeleton, or its copy, is not marked: %v", i, got.ManagedFields)
		}
		if !equality.Semantic.DeepEqual(got, want) {
			t.Errorf("player %d:\ngot  %+v\nwant %+v", i, got, want)
		}
		// Transformed twice (a page, then the store), it is the same.
		again, _ := tf(out)
		if again != out {
			t.Errorf("player %d changed by a second transform", i)
		}
	}
}

func TestTransformSharesWhatPlayersRepeat(t *testing.T) {
	tf := Transform()
	a, b := transformed(t, tf, playerJSON(t, 1)), transformed(t, tf, playerJSON(t, 2))
	if reflect.ValueOf(a.Labels).UnsafePointer() != reflect.ValueOf(b.Labels).UnsafePointer() {
		t.Error("two players of one product keep two label maps")
	}
	if &a.OwnerReferences[0] != &b.OwnerReferences[0] {
		t.Error("two players of one product keep two owner references")
	}
	same := func(what, x, y string) {
		if x != y || len(x) == 0 {
			t.Fatalf("%s: %q and %q, want one non-empty value", what, x, y)
		}
		if unsafe.StringData(x) != unsafe.StringData(y) {
			t.Errorf("%s %q is stored twice", what, x)
		}
	}
	same("consent state", string(a.Status.Consent.State), string(b.Status.Consent.State))
	same("verification state", string(a.Status.Verification.State), string(b.Status.Verification.State))
	same("session state", string(a.Status.Session.State), string(b.Status.Session.State))
	same("identity kind", string(a.Spec.Identity.Kind), string(b.Spec.Identity.Kind))
	same("product", a.Spec.ProductRef.Name, b.Spec.ProductRef.Name)
	same("namespace", a.Namespace, b.Namespace)
	// All of that is one shape, which the two players share.
	x, _ := tf(decode(t, playerJSON(t, 4)))
	y, _ := tf(decode(t, playerJSON(t, 5)))
	if x.(*User).shape != y.(*User).shape {
		t.Error("two players of one product in one state keep two shapes")
	}

	// A player's own labels stay its own: a label added to one is not
	// seen on the other.
	c := decode(t, playerJSON(t, 3))
	c.Labels["team"] = "red"
	out, _ := tf(c)
	if _, ok := a.Labels["team"]; ok || UserOf(out).Labels["team"] != "red" {
		t.Errorf("labels mixed up: a %v, c %v", a.Labels, UserOf(out).Labels)
	}
}

// Anyone who may label KidUsers can make distinct label sets: the table of
// shared sets stops at maxShared, and the objects past it keep their own.
func TestSharedTablesAreBounded(t *testing.T) {
	s := newShared[map[string]string]()
	for i := range maxShared + 100 {
		l := map[string]string{"n": fmt.Sprint(i)}
		if got := s.get(labelsKey(l), l); got["n"] != fmt.Sprint(i) {
			t.Fatalf("set %d came back as %v", i, got)
		}
	}
	if len(s.m) != maxShared {
		t.Errorf("table holds %d sets, want the bound %d", len(s.m), maxShared)
	}
	// One seen before the bound is still shared.
	first := map[string]string{"n": "0"}
	if reflect.ValueOf(s.get(labelsKey(first), first)).UnsafePointer() == reflect.ValueOf(first).UnsafePointer() {
		t.Error("a set added before the bound is no longer shared")
	}
}

func TestKeysTellSetsApart(t *testing.T) {
	// No two different label sets may share a key, or one object would
	// get another's labels.
	pairs := [][2]map[string]string{
		{{"a": "b=c"}, {"a=b": "c"}},
		{{"a": "bc"}, {"ab": "c"}},
		{{"a": "", "b": ""}, {"a": "b"}},
	}
	for _, p := range pairs {
		if labelsKey(p[0]) == labelsKey(p[1]) {
			t.Errorf("%v and %v have one key", p[0], p[1])
		}
	}
	yes, no := true, false
	refs := [][]metav1.OwnerReference{
		{{Kind: "KidProduct", Name: "a", Controller: &yes}},
		{{Kind: "KidProduct", Name: "a", Controller: &no}},
		{{Kind: "KidProduct", Name: "a"}},
	}
	for i := range refs {
		for j := range i {
			if ownersKey(refs[i]) == ownersKey(refs[j]) {
				t.Errorf("%v and %v have one key", refs[i], refs[j])
			}
		}
	}
}

func TestTransformPassesOtherThingsThrough(t *testing.T) {
	tomb := toolscache.DeletedFinalStateUnknown{Key: "ns/gone"}
	out, err := Transform()(tomb)
	if err != nil || out != tomb {
		t.Errorf("tombstone: %v, %v", out, err)
	}
}

func TestNamespacedValues(t *testing.T) {
	u := decode(t, playerJSON(t, 7))
	got, err := namespacedValues(func(o client.Object) []string { return UserOf(o).IDKeys() })(u)
	if err != nil {
		t.Fatal(err)
	}
	// The identity and the session are one id: indexed once.
	want := []string{
		"bench/bench/Session/s-scale-000000000007",
		"bench/bench/Account/k-scale-000000000007",
		"bench/bench/Challenge/c-scale-000000000007",
		"bench/bench/Verification/v-scale-000000000007",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("values %q, want %q", got, want)
	}
	u.Namespace = ""
	if _, err := namespacedValues(func(client.Object) []string { return []string{"x"} })(u); err == nil {
		t.Error("a cluster-scoped object was indexed")
	}
	if _, err := namespacedValues(func(client.Object) []string { return nil })("not an object"); err == nil {
		t.Error("a non-object was indexed")
	}
}

// How the user-id index stores a player's ids, for cachedBytes.
type indexMode int

const (
	twice    indexMode = iota // controller-runtime's IndexField: namespaced and across namespaces
	once                      // NamespacedIndex of the ids themselves
	bucketed                  // NamespacedIndex of their buckets (UserIDBuckets): what the manager does
)

// cachedBytes is the Go heap that n players take in a client-go store as
// the manager's cache keeps them: with the namespace index the cache always
// has, the user-id index stored as mode says, and the transform.
func cachedBytes(t testing.TB, n int, tf toolscache.TransformFunc, mode indexMode) float64 {
	t.Helper()
	ids := func(o client.Object) []string { return UserOf(o).IDKeys() }
	var index toolscache.IndexFunc
	switch mode {
	case twice:
		index = func(raw any) ([]string, error) {
			u := UserOf(raw)
			var out []string
			for _, ns := range []string{u.Namespace, "__all_namespaces"} {
				for _, k := range ids(u) {
					out = append(out, ns+"/"+k)
				}
			}
			return out, nil
		}
	case once:
		index = namespacedValues(ids)
	case bucketed:
		index = namespacedValues(UserIDBuckets)
	}
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = playerJSON(t, i)
	}
	store := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{
		toolscache.NamespaceIndex:    toolscache.MetaNamespaceIndexFunc,
		"field:" + kidv1.UserIDIndex: index,
	})
	before := heapInUse()
	for _, b := range bodies {
		var obj any = decode(t, b)
		var err error
		if obj, err = tf(obj); err != nil {
			t.Fatal(err)
		}
		if err := store.Add(obj); err != nil {
			t.Fatal(err)
		}
	}
	after := heapInUse()
	// Both stay reachable until the second reading: the bodies are not
	// part of the cache, and were counted in the first.
	runtime.KeepAlive(store)
	runtime.KeepAlive(bodies)
	return float64(after-before) / float64(n)
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// stripOnly is what the cache did before this package: managed fields
// dropped, nothing shared.
func stripOnly(in any) (any, error) { in.(client.Object).SetManagedFields(nil); return in, nil }

// What the manager holds per player falls to under a seventh (0.13
// measured: compact Users, buckets), and within the budget that fits
// 250,000 players and 10,000 events in 512 MiB resident: 900 bytes, the
// whole of what the store retains (the object, its strings, the store's
// and the indexes' entries). The measured figures are in
// docs/benchmarks.md (BenchmarkCachedPlayer).
func TestCachedPlayerIsSmaller(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap of 20,000 players")
	}
	const n = 20000
	before := cachedBytes(t, n, stripOnly, twice)
	after := cachedBytes(t, n, Transform(), bucketed)
	t.Logf("per player: %.0f bytes before, %.0f after (%.2f)", before, after, after/before)
	if after > 900 {
		t.Errorf("per player %.0f bytes, want at most 900 (%.0f before)", after, before)
	}
}

// BenchmarkCachedPlayer reports the heap per cached player (bytes/player)
// for what controller-runtime does by default and for each cut here.
func BenchmarkCachedPlayer(b *testing.B) {
	for _, c := range []struct {
		name string
		tf   toolscache.TransformFunc
		mode indexMode
	}{
		{"default", stripOnly, twice},
		{"index-once", stripOnly, once},
		{"index-buckets", stripOnly, bucketed},
		{"transform", Transform(), twice},
		{"transform+buckets", Transform(), bucketed},
	} {
		b.Run(c.name, func(b *testing.B) {
			var per float64
			for b.Loop() {
				per = cachedBytes(b, 20000, c.tf, c.mode)
			}
			b.ReportMetric(per, "bytes/player")
		})
	}
}
