package cachemem

import (
	"context"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// UserCache reads the manager's cache of KidUser skeletons (Skeleton). It is
// the only way the controllers reach that cache: their client reads every
// KidUser live, and what UserCache returns is a UserRef (names and a few
// facts, never an object that could be written back), a live object, or,
// to a function that only looks, the skeleton itself.
type UserCache struct {
	r client.Reader
}

// NewUserCache reads the KidUsers of r: the manager's cache (mgr.GetCache()),
// or in tests any reader whose KidUsers carry the user-id index.
func NewUserCache(r client.Reader) UserCache { return UserCache{r: r} }

// UserRef is a KidUser as a lookup names it: enough to choose among users
// and to read one live, nothing to write.
type UserRef struct {
	types.NamespacedName
	UID      types.UID
	Identity kidv1.UserIdentity
	// InFlightEvents are the user's status.inFlightEvents (a fold's
	// retry asks whether the user holds its event).
	InFlightEvents []string
}

func refOf(u *kidv1.KidUser) UserRef {
	return UserRef{
		NamespacedName: types.NamespacedName{Namespace: u.Namespace, Name: u.Name},
		UID:            u.UID, Identity: u.Spec.Identity,
		InFlightEvents: slices.Clone(u.Status.InFlightEvents),
	}
}

// Holding returns the KidUsers of namespace ns that the cache shows holding
// the id key (a kidv1.UserIDKey), read through kidv1.UserIDIndex.
func (c UserCache) Holding(ctx context.Context, ns, key string) ([]UserRef, error) {
	if c.r == nil {
		return nil, fmt.Errorf("listing users by id: no cache")
	}
	var list kidv1.KidUserList
	// The bucket's other objects are only looked at: nothing is copied
	// but the matches' refs.
	if err := c.r.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{kidv1.UserIDIndex: idBucket(key)}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing users by id: %w", err)
	}
	var out []UserRef
	for i := range list.Items {
		if u := &list.Items[i]; slices.Contains(u.IDKeys(), key) {
			out = append(out, refOf(u))
		}
	}
	return out, nil
}

// HoldingLive returns the KidUsers that hold the id key and that keep
// chooses (nil: all), as the API server has them: the cache names them
// (Holding), live reads them one GET each, and only those kept. A user gone
// since, or no longer holding the key, is left out.
func (c UserCache) HoldingLive(ctx context.Context, live client.Reader, ns, key string, keep func(UserRef) bool) ([]kidv1.KidUser, error) {
	refs, err := c.Holding(ctx, ns, key)
	if err != nil {
		return nil, err
	}
	var out []kidv1.KidUser
	for _, ref := range refs {
		if keep != nil && !keep(ref) {
			continue
		}
		u := kidv1.KidUser{}
		err := live.Get(ctx, ref.NamespacedName, &u)
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			return nil, fmt.Errorf("reading a user holding an id: %w", err)
		case IsSkeleton(&u):
			return nil, fmt.Errorf("reading user %s: the reader is the cache, not the API server", ref.Name)
		}
		if slices.Contains(u.IDKeys(), key) {
			out = append(out, u)
		}
	}
	return out, nil
}

// Peek calls fn with the cache's skeleton of the KidUser key, without a
// copy, and reports whether the cache holds it. fn only looks, as for
// EachOfProduct. A reconcile peeks before it reads a user live: a user the
// cache no longer holds was deleted (or is not in the cache yet, and its
// arrival wakes it again), so it costs the API server no read.
func (c UserCache) Peek(ctx context.Context, key types.NamespacedName, fn func(s *kidv1.KidUser)) (bool, error) {
	if c.r == nil {
		return false, fmt.Errorf("reading a user's skeleton: no cache")
	}
	var u kidv1.KidUser
	// The struct is copied, what it points to is the cache's.
	err := c.r.Get(ctx, key, &u, client.UnsafeDisableDeepCopy)
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading a user's skeleton: %w", err)
	}
	if fn != nil {
		fn(&u)
	}
	return true, nil
}

// EachOfProduct calls fn with the skeleton of each cached KidUser of
// product in namespace ns, in no order. fn only looks: the skeleton is the
// cache's own, shared with every other reader, and must neither be changed
// nor kept past the call (RefuseSkeletons refuses any write of it). No
// player is copied, so a pass over a quarter of a million players
// allocates nothing per player.
func (c UserCache) EachOfProduct(ctx context.Context, ns, product string, fn func(s *kidv1.KidUser)) error {
	if c.r == nil {
		return fmt.Errorf("listing the users of a product: no cache")
	}
	each := func(u *kidv1.KidUser) {
		if u.Namespace == ns && u.Spec.ProductRef.Name == product {
			fn(u)
		}
	}
	if indexer, err := userIndexer(ctx, c.r); err != nil {
		return err
	} else if indexer != nil {
		objs, err := indexer.ByIndex(toolscache.NamespaceIndex, ns)
		if err != nil {
			return fmt.Errorf("listing the users of a product: %w", err)
		}
		for _, o := range objs {
			if u, ok := o.(*kidv1.KidUser); ok {
				each(u)
			}
		}
		return nil
	}
	// A reader without an informer (tests): its list copies each user.
	var list kidv1.KidUserList
	if err := c.r.List(ctx, &list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing the users of a product: %w", err)
	}
	for i := range list.Items {
		each(&list.Items[i])
	}
	return nil
}

// userIndexer is the KidUser informer's store when r is an informer cache
// (controller-runtime's informers are client-go's shared index informers),
// or nil. controller-runtime's List would copy every user of the namespace
// into one slice: at 250,000 players, 180 MB for a moment.
func userIndexer(ctx context.Context, r client.Reader) (toolscache.Indexer, error) {
	informers, ok := r.(cache.Informers)
	if !ok {
		return nil, nil
	}
	informer, err := informers.GetInformer(ctx, &kidv1.KidUser{})
	if err != nil {
		return nil, fmt.Errorf("getting the KidUser informer: %w", err)
	}
	if withIndexer, ok := informer.(interface{ GetIndexer() toolscache.Indexer }); ok {
		return withIndexer.GetIndexer(), nil
	}
	return nil, nil
}

// IsZero reports whether c reads nothing (a UserCache never made).
func (c UserCache) IsZero() bool { return c.r == nil }
