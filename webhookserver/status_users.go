package webhookserver

import (
	"context"
	"fmt"
	"sync"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/cachemem"
)

// UserIDIndex is the field index of KidUsers by every k-ID id they hold
// (kidv1.UserIDIndex). The controllers register it; a receiver-only process
// registers it here (BrowserOptions.RegisterUserIndex), from the same
// definition.
const UserIDIndex = kidv1.UserIDIndex

// +kubebuilder:rbac:groups=kid.dev,resources=kidusers,verbs=get;list;watch

// userSource is where the status stream reads KidUsers.
type userSource interface {
	// holders returns the KidUsers of namespace ns that hold key (a
	// kidv1.UserIDKey). They are shared with the cache: read them only.
	holders(ctx context.Context, ns, key string) ([]kidv1.KidUser, error)
	// subscribe returns a channel that receives (coalesced) whenever a
	// KidUser of ns that holds, or held, key changes, until cancel.
	subscribe(ctx context.Context, ns, key string) (wake <-chan struct{}, cancel func(), err error)
}

// cacheUsers reads KidUsers from the manager's informer cache, which the
// controllers share, and wakes subscribers from one event handler on its
// KidUser informer, registered (with the index, if asked) at the first
// subscription: a receiver that serves no status stream never caches
// KidUsers.
type cacheUsers struct {
	cache         cache.Cache
	registerIndex bool

	setupMu sync.Mutex
	set     bool

	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{} // by namespace + "\x00" + key
}

func newCacheUsers(c cache.Cache, registerIndex bool) *cacheUsers {
	return &cacheUsers{cache: c, registerIndex: registerIndex, subs: map[string]map[chan struct{}]struct{}{}}
}

func (c *cacheUsers) holders(ctx context.Context, ns, key string) ([]kidv1.KidUser, error) {
	return cachemem.UsersHolding(ctx, c.cache, ns, key)
}

func (c *cacheUsers) subscribe(ctx context.Context, ns, key string) (<-chan struct{}, func(), error) {
	if err := c.setup(ctx); err != nil {
		return nil, nil, err
	}
	ch := make(chan struct{}, 1)
	sk := ns + "\x00" + key
	c.mu.Lock()
	if c.subs[sk] == nil {
		c.subs[sk] = map[chan struct{}]struct{}{}
	}
	c.subs[sk][ch] = struct{}{}
	c.mu.Unlock()
	cancel := func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.subs[sk], ch)
		if len(c.subs[sk]) == 0 {
			delete(c.subs, sk)
		}
	}
	return ch, cancel, nil
}

// setup registers the index (when asked) and the event handler, once; a
// failure is retried by the next stream.
func (c *cacheUsers) setup(ctx context.Context) error {
	c.setupMu.Lock()
	defer c.setupMu.Unlock()
	if c.set {
		return nil
	}
	if c.registerIndex {
		if err := cachemem.NamespacedIndex(ctx, c.cache, &kidv1.KidUser{}, UserIDIndex, cachemem.UserIDBuckets); err != nil {
			return fmt.Errorf("indexing KidUsers by id: %w", err)
		}
		// Registered: a retry after a later failure must not add it again.
		c.registerIndex = false
	}
	informer, err := c.cache.GetInformer(ctx, &kidv1.KidUser{})
	if err != nil {
		return fmt.Errorf("getting the KidUser informer: %w", err)
	}
	if _, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    c.notify,
		UpdateFunc: func(old, cur any) { c.notify(old); c.notify(cur) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			c.notify(obj)
		},
	}); err != nil {
		return fmt.Errorf("watching KidUsers: %w", err)
	}
	c.set = true
	return nil
}

// notify wakes the subscribers of every id the user holds.
func (c *cacheUsers) notify(obj any) {
	u, ok := obj.(*kidv1.KidUser)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.subs) == 0 {
		return
	}
	for _, key := range u.IDKeys() {
		for ch := range c.subs[u.Namespace+"\x00"+key] {
			select {
			case ch <- struct{}{}:
			default: // a wake is pending already
			}
		}
	}
}
