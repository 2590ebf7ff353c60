package webhookserver

import (
	"context"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// The status stream's view of KidUsers: a watch of the few users that hold
// one page's subject, selected by the API server, never a cache of every
// player. An informer over every KidUser (as the controllers have) would
// cost the receiver about 3 KB per player, whoever's page asked, and would
// put every player's record into the pod that faces the internet; a watch
// of one subject's users costs the same at 0 players as at 100,000.
//
// Which users hold a subject, by the selectable fields of KidUser:
//   - the user known by it: spec.identity (kind and id) in its product. A
//     session is always its own user; a challenge or a verification is a
//     stand-in the controllers made, or a user the game registered, under
//     any name;
//   - for a challenge, also the user whose consent is about it
//     (status.consent.challengeId): the session's user, once k-ID's PASS
//     (or FAIL) linked them; the stand-in is then merged into it and
//     deleted.
//
// A session's user that holds the challenge among its status.challengeIds
// while its consent is about a later challenge is not followed: that
// consent is not this page's. (A list is not a selectable field.) No k-ID
// event names a verification and a session together, so a verification is
// held by the user known by it.

// +kubebuilder:rbac:groups=kid.dev,resources=kidusers,verbs=list;watch

// userSource is where the status stream follows the KidUsers holding a
// subject.
type userSource interface {
	// follow starts following the users that hold the subject and returns
	// once their present state is known (or ctx ends).
	follow(ctx context.Context, s subjectRef) (userFollower, error)
}

// userFollower is one stream's view of the users holding its subject.
type userFollower interface {
	// wake receives (coalesced) whenever one of them changed, appeared or
	// went.
	wake() <-chan struct{}
	// holders returns them, as last seen.
	holders() []kidv1.KidUser
	// stop ends the watches.
	stop()
}

// subjectRef is the subject of a relay token in its product.
type subjectRef struct {
	Namespace, Product string
	Kind               kidv1.IdentityKind
	ID                 string
}

// selectors are the field selectors of the users that hold the subject.
func (s subjectRef) selectors() []fields.Selector {
	sels := []fields.Selector{fields.SelectorFromSet(fields.Set{
		kidv1.UserProductField:      s.Product,
		kidv1.UserIdentityKindField: string(s.Kind),
		kidv1.UserIdentityIDField:   s.ID,
	})}
	if s.Kind == kidv1.IdentityChallenge {
		sels = append(sels, fields.SelectorFromSet(fields.Set{
			kidv1.UserProductField:          s.Product,
			kidv1.UserConsentChallengeField: s.ID,
		}))
	}
	return sels
}

// DefaultFollowSyncTimeout bounds the first list of a stream's users: the
// stream answers 503 past it, and the page retries.
const DefaultFollowSyncTimeout = 10 * time.Second

// watchUsers follows users with watches on the API server, one per
// selector, each with a store of the few users it selects.
type watchUsers struct {
	client client.WithWatch
	// syncTimeout is DefaultFollowSyncTimeout but in tests.
	syncTimeout time.Duration
}

func (w *watchUsers) follow(ctx context.Context, s subjectRef) (userFollower, error) {
	if w.client == nil {
		return nil, fmt.Errorf("no client to watch KidUsers with")
	}
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f := &watchFollower{wakeCh: make(chan struct{}, 1), cancel: cancel}
	notify := func(any) { f.notify() }
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, cur any) { notify(cur) },
		DeleteFunc: notify,
	}
	var synced []toolscache.InformerSynced
	for _, sel := range s.selectors() {
		store, ctrl := toolscache.NewInformerWithOptions(toolscache.InformerOptions{
			ListerWatcher: w.listWatch(s.Namespace, sel),
			ObjectType:    &kidv1.KidUser{},
			Handler:       handler,
			Transform:     statusOnly,
		})
		f.stores = append(f.stores, store)
		synced = append(synced, ctrl.HasSynced)
		f.running.Add(1)
		go func() {
			defer f.running.Done()
			ctrl.RunWithContext(fctx)
		}()
	}
	timeout := w.syncTimeout
	if timeout <= 0 {
		timeout = DefaultFollowSyncTimeout
	}
	wait, done := context.WithTimeout(ctx, timeout)
	defer done()
	if !toolscache.WaitForCacheSync(wait.Done(), synced...) {
		f.stop()
		return nil, fmt.Errorf("listing the users of a status stream: %w", context.Cause(wait))
	}
	return f, nil
}

// listWatch lists and watches the users of ns that sel selects.
func (w *watchUsers) listWatch(ns string, sel fields.Selector) *toolscache.ListWatch {
	opts := func(raw metav1.ListOptions) *client.ListOptions {
		return &client.ListOptions{Namespace: ns, FieldSelector: sel, Raw: &raw}
	}
	return &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, raw metav1.ListOptions) (runtime.Object, error) {
			list := &kidv1.KidUserList{}
			err := w.client.List(ctx, list, opts(raw))
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, raw metav1.ListOptions) (watch.Interface, error) {
			return w.client.Watch(ctx, &kidv1.KidUserList{}, opts(raw))
		},
	}
}

// statusOnly drops what the stream never reads before a user is stored:
// personal data and managed fields.
func statusOnly(obj any) (any, error) {
	if u, ok := obj.(*kidv1.KidUser); ok {
		u.ManagedFields = nil
		u.Status.PersonalData = nil
	}
	return obj, nil
}

// watchFollower is one stream's watches.
type watchFollower struct {
	stores   []toolscache.Store
	wakeCh   chan struct{}
	cancel   context.CancelFunc
	running  sync.WaitGroup
	stopOnce sync.Once
}

func (f *watchFollower) notify() {
	select {
	case f.wakeCh <- struct{}{}:
	default: // a wake is pending already
	}
}

func (f *watchFollower) wake() <-chan struct{} { return f.wakeCh }

func (f *watchFollower) holders() []kidv1.KidUser {
	var out []kidv1.KidUser
	seen := map[string]bool{}
	for _, store := range f.stores {
		for _, obj := range store.List() {
			u, ok := obj.(*kidv1.KidUser)
			if !ok || seen[u.Name] {
				continue
			}
			seen[u.Name] = true
			out = append(out, *u)
		}
	}
	return out
}

// stop ends the watches and waits for them to end.
func (f *watchFollower) stop() {
	f.stopOnce.Do(func() {
		f.cancel()
		f.running.Wait()
	})
}
