// Package cachemem keeps the manager's informer cache small. The cache holds
// every KidUser of every watched namespace, so what it keeps per player is
// what decides how many players one manager can hold (docs/benchmarks.md,
// "Players at scale"). What cuts it:
//
//   - Transform keeps of a KidUser only its skeleton (Skeleton: the ids and
//     the facts the cache's readers need), in a compact Go type of its own
//     (User: a shape shared by a product's players in one state, times as
//     int64s, the player's strings packed in one), drops what no reader
//     uses (managed fields) from every object, and shares, among all cached
//     objects, one copy of what many of them repeat: label and
//     owner-reference sets, and the strings of conditions and states.
//   - NamespacedIndex registers a field index that stores each value once,
//     where controller-runtime's IndexField stores it twice.
//   - NewInformer strips each page of an informer's initial list as it
//     arrives, so a start without the API server's watch cache never holds
//     the whole list as decoded, and records the KidUser informers' stores
//     (Stores), through which UserCache reads them.
//
// A skeleton is never read as a player: every full read of a KidUser is
// live (the manager's client reads KidUsers around the cache), the cache
// holds Users, which no client can write (no scheme knows the type) and
// which are reached only through UserCache and UserOf, which return names,
// live objects, or views of the skeleton (View), and RefuseSkeletons
// refuses any write of a view. Shared copies are safe because nothing
// writes to a cached object: a User has no setters, controller-runtime
// hands readers of other kinds deep copies, and the few reads with
// client.UnsafeDisableDeepCopy, and the event handlers, only read.
package cachemem

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// maxShared bounds each table of shared label and owner-reference sets. A
// product's players share one of each, so a few thousand is many products;
// past the bound an object keeps its own copy, which costs memory, never
// correctness. Anyone who may label a KidUser can add distinct sets, so the
// table must not grow with them.
const maxShared = 4096

// Transform is the cache's transform for every kind: the transform runs on
// each object the watch decodes, before the informer stores it.
func Transform() toolscache.TransformFunc {
	labels := newShared[map[string]string]()
	owners := newShared[[]metav1.OwnerReference]()
	shapes := newShared[*shape]()
	return func(in any) (any, error) {
		if u, ok := in.(*User); ok {
			// Transformed already (a page, then the store).
			return u, nil
		}
		obj, ok := in.(client.Object)
		if !ok {
			// A tombstone (DeletedFinalStateUnknown) or anything else
			// the watch did not decode: stored as it came.
			return in, nil
		}
		// Managed fields are never read here; they are about as large as
		// the rest of a KidUser.
		obj.SetManagedFields(nil)
		obj.SetNamespace(intern(obj.GetNamespace()))
		stale := false
		if u, ok := obj.(*kidv1.KidUser); ok {
			// Before the labels are shared: a player's id labels are its
			// own, and would leave no set to share.
			stale = splitIDLabels(u)
		}
		if l := obj.GetLabels(); len(l) > 0 {
			obj.SetLabels(labels.get(labelsKey(l), l))
		}
		if o := obj.GetOwnerReferences(); len(o) > 0 {
			obj.SetOwnerReferences(owners.get(ownersKey(o), o))
		}
		switch o := obj.(type) {
		case *kidv1.KidUser:
			return compact(o, shapes, stale), nil
		case *kidv1.KidEvent:
			compactEvent(o)
		}
		return obj, nil
	}
}

// compactEvent does the same for a KidEvent; its payload is its own.
func compactEvent(e *kidv1.KidEvent) {
	internTo(&e.Spec.ProductRef.Name)
	internTo(&e.Spec.EventType)
	internTo(&e.Spec.Source)
	internConditions(e.Status.Conditions)
	internTo(&e.Status.Phase)
	for i := range e.Status.Actions {
		internTo(&e.Status.Actions[i].Name)
		internTo(&e.Status.Actions[i].Phase)
	}
}

func internConditions(cs []metav1.Condition) {
	for i := range cs {
		c := &cs[i]
		internTo(&c.Type)
		internTo(&c.Status)
		internTo(&c.Reason)
		internTo(&c.Message)
	}
}

// intern returns the one shared copy of s. The unique package holds it only
// as long as some handle does, so strings no object uses any more are freed.
func intern(s string) string {
	if s == "" {
		return s
	}
	return unique.Make(s).Value()
}

// internTo interns a string field of any string type in place.
func internTo[S ~string](p *S) { *p = S(intern(string(*p))) }

// shared is a bounded table of values, by a key that says they are equal.
type shared[T any] struct {
	mu sync.Mutex
	m  map[string]T
}

func newShared[T any]() *shared[T] { return &shared[T]{m: map[string]T{}} }

// get returns the table's copy of v, adding v when it is new and there is
// room.
func (s *shared[T]) get(key string, v T) T {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.m[key]; ok {
		return c
	}
	if len(s.m) < maxShared {
		s.m[key] = v
	}
	return v
}

// labelsKey is a key equal for equal label sets: the sorted pairs, each part
// ended by a NUL, which labels cannot contain.
func labelsKey(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(l[k])
		b.WriteByte(0)
	}
	return b.String()
}

// ownersKey is a key equal for equal owner-reference lists, in order.
func ownersKey(refs []metav1.OwnerReference) string {
	var b strings.Builder
	flag := func(p *bool) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprint(*p)
	}
	for _, r := range refs {
		for _, part := range []string{r.APIVersion, r.Kind, r.Name, string(r.UID), flag(r.Controller), flag(r.BlockOwnerDeletion)} {
			b.WriteString(part)
			b.WriteByte(0)
		}
	}
	return b.String()
}

// NamespacedIndex registers a field index on obj's informer that answers
// lookups within one namespace (client.InNamespace with
// client.MatchingFields through the cache), the only ones this operator
// makes. controller-runtime's IndexField also stores every value a second
// time, for lookups across all namespaces: at 100,000 players that copy was
// a fifth of the manager's heap. A lookup without a namespace finds nothing
// in this index.
//
// The index's name and values are those controller-runtime's cache reader
// asks for ("field:" + field, and namespace + "/" + value); the envtest
// specs of every reconciler read through them.
func NamespacedIndex(ctx context.Context, informers cache.Informers, obj client.Object, field string, extract client.IndexerFunc) error {
	informer, err := informers.GetInformer(ctx, obj)
	if err != nil {
		return fmt.Errorf("getting the informer for %T: %w", obj, err)
	}
	return informer.AddIndexers(toolscache.Indexers{"field:" + field: namespacedValues(extract)})
}

// namespacedValues wraps extract into a client-go index function whose
// values carry the object's namespace.
func namespacedValues(extract client.IndexerFunc) toolscache.IndexFunc {
	return func(raw any) ([]string, error) {
		obj, ok := raw.(client.Object)
		if !ok {
			return nil, fmt.Errorf("indexing %T: not a Kubernetes object", raw)
		}
		ns := obj.GetNamespace()
		if ns == "" {
			return nil, fmt.Errorf("indexing %s: a namespaced index of a cluster-scoped object", obj.GetName())
		}
		vals := extract(obj)
		out := make([]string, 0, len(vals))
		for _, v := range vals {
			key := ns + "/" + v
			// An object naming one id twice (a session user's identity
			// is also its session id) indexes it once.
			if !slices.Contains(out, key) {
				out = append(out, key)
			}
		}
		return out, nil
	}
}
