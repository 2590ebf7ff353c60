package cachemem

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"

	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// EventIDIndex is the field index of KidEvents by the ids they name, in
// buckets as kidv1.UserIDIndex is of KidUsers.
const EventIDIndex = "kid.dev/event-id"

// idBuckets is how many buckets the id indexes spread a namespace's ids
// over. client-go keeps, for every value of an index, a set of the objects
// that have it: a player's four ids were four sets, about 1.8 KB of the
// manager's heap per player, as much as the player itself. Indexed by
// bucket, an id costs one entry in a bucket's set, and a lookup reads the
// bucket's objects and keeps those holding the id: at 250,000 players of
// one namespace (a million ids), about 60 objects, compared in
// microseconds; at 10,000, two or three.
const idBuckets = 1 << 14

// idBucket is the bucket of an id key.
func idBucket(key string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return strconv.FormatUint(uint64(h.Sum32()%idBuckets), 16)
}

// buckets maps id keys to their buckets.
func buckets(keys []string) []string {
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, idBucket(k))
	}
	return out
}

// UserIDBuckets is the extract function of kidv1.UserIDIndex.
// It reads a User, or a whole KidUser (a fake client's index).
func UserIDBuckets(o client.Object) []string { return buckets(UserOf(o).IDKeys()) }

// EventIDBuckets is the extract function of EventIDIndex.
func EventIDBuckets(o client.Object) []string { return buckets(o.(*kidv1.KidEvent).IDKeys()) }

// EventsNaming returns the KidEvents of namespace ns that name the id key,
// read through EventIDIndex.
func EventsNaming(ctx context.Context, r client.Reader, ns, key string) ([]kidv1.KidEvent, error) {
	var list kidv1.KidEventList
	if err := r.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{EventIDIndex: idBucket(key)}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing events by id: %w", err)
	}
	var out []kidv1.KidEvent
	for i := range list.Items {
		if e := &list.Items[i]; slices.Contains(e.IDKeys(), key) {
			out = append(out, *e.DeepCopy())
		}
	}
	return out, nil
}
