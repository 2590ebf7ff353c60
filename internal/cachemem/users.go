package cachemem

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// UserCache reads the manager's cache of KidUsers, which holds Users
// (their skeletons). It is the only way the controllers reach that cache:
// their client reads every KidUser live, and what UserCache returns is a
// UserRef (names and a few facts, never an object that could be written
// back), a live object, or, to a function that only looks, the skeleton
// itself.
type UserCache struct {
	stores *Stores
	r      client.Reader
}

// NewUserCache reads the KidUsers of a reader that holds whole KidUsers with
// the user-id index: a fake client in tests, or a cache without Transform.
// The manager's cache is read through its Stores (Stores.Users).
func NewUserCache(r client.Reader) UserCache { return UserCache{r: r} }

// Stores are the stores of the KidUser informers NewInformer made: one, or
// one per namespace when the cache watches a few namespaces.
type Stores struct {
	mu   sync.Mutex
	list []toolscache.Indexer
}

// add records the store of a KidUser informer.
func (s *Stores) add(i toolscache.Indexer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, i)
}

func (s *Stores) all() []toolscache.Indexer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.list)
}

// Users reads the users of the stores.
func (s *Stores) Users() UserCache { return UserCache{stores: s} }

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
		// The id is a copy: the view's shares the User's packed strings.
		UID: u.UID, Identity: kidv1.UserIdentity{Kind: u.Spec.Identity.Kind, ID: strings.Clone(u.Spec.Identity.ID)},
		InFlightEvents: slices.Clone(u.Status.InFlightEvents),
	}
}

// Holding returns the KidUsers of namespace ns that the cache shows holding
// the id key (a kidv1.UserIDKey), read through kidv1.UserIDIndex.
func (c UserCache) Holding(ctx context.Context, ns, key string) ([]UserRef, error) {
	if c.stores != nil {
		var out []UserRef
		var v View
		for _, store := range c.stores.all() {
			objs, err := store.ByIndex("field:"+kidv1.UserIDIndex, ns+"/"+idBucket(key))
			if err != nil {
				return nil, fmt.Errorf("listing users by id: %w", err)
			}
			for _, o := range objs {
				if u, ok := o.(*User); ok && slices.Contains(v.Of(u).IDKeys(), key) {
					out = append(out, refOf(&v.u))
				}
			}
		}
		return out, nil
	}
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

// Peek calls fn with the cache's skeleton of the KidUser key (a view of
// its User), and reports whether the cache holds it. fn only looks, as for
// EachOfProduct. A reconcile peeks before it reads a user live: a user the
// cache no longer holds was deleted (or is not in the cache yet, and its
// arrival wakes it again), so it costs the API server no read.
func (c UserCache) Peek(ctx context.Context, key types.NamespacedName, fn func(s *kidv1.KidUser)) (bool, error) {
	if c.stores != nil {
		for _, store := range c.stores.all() {
			o, found, err := store.GetByKey(key.String())
			if err != nil {
				return false, fmt.Errorf("reading a user's skeleton: %w", err)
			}
			if u, ok := o.(*User); found && ok {
				if fn != nil {
					fn(UserOf(u))
				}
				return true, nil
			}
		}
		return false, nil
	}
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
// product in namespace ns, in no order. fn only looks: the skeleton is a
// view of the cache's User (View), which shares its strings with it and is
// reused for the next user, so it must neither be changed nor kept past the
// call (RefuseSkeletons refuses any write of it). Each user is read into
// one view, so a pass over a quarter of a million players allocates
// nothing per player.
func (c UserCache) EachOfProduct(ctx context.Context, ns, product string, fn func(s *kidv1.KidUser)) error {
	each := func(u *kidv1.KidUser) {
		if u.Namespace == ns && u.Spec.ProductRef.Name == product {
			fn(u)
		}
	}
	if c.stores != nil {
		var v View
		for _, store := range c.stores.all() {
			objs, err := store.ByIndex(toolscache.NamespaceIndex, ns)
			if err != nil {
				return fmt.Errorf("listing the users of a product: %w", err)
			}
			for _, o := range objs {
				// The product is the shape's: only its users are read
				// into the view.
				if u, ok := o.(*User); ok && u.shape.product == product {
					each(v.Of(u))
				}
			}
		}
		return nil
	}
	if c.r == nil {
		return fmt.Errorf("listing the users of a product: no cache")
	}
	// A reader of whole KidUsers (tests): its list copies each user.
	var list kidv1.KidUserList
	if err := c.r.List(ctx, &list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing the users of a product: %w", err)
	}
	for i := range list.Items {
		each(&list.Items[i])
	}
	return nil
}

// Each calls fn with the skeleton of every cached KidUser, in no order; fn
// only looks, as for EachOfProduct. It reports false when c reads no
// stores (a reader of whole KidUsers), and then calls fn with none.
func (c UserCache) Each(fn func(s *kidv1.KidUser)) bool {
	if c.stores == nil {
		return false
	}
	var v View
	for _, store := range c.stores.all() {
		for _, o := range store.List() {
			if u, ok := o.(*User); ok {
				fn(v.Of(u))
			}
		}
	}
	return true
}

// IsZero reports whether c reads nothing (a UserCache never made).
func (c UserCache) IsZero() bool { return c.r == nil && c.stores == nil }
