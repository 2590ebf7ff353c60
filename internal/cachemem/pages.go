package cachemem

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/watchlist"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// NewInformer is the cache's informer constructor (cache.Options.NewInformer):
// client-go's shared index informer, whose initial lists are transformed a
// page at a time.
//
// Why: an informer starts with a list. With the API server's watch cache
// on, client-go streams it (the WatchList feature, on by default since
// client-go 1.35), and its reflector transforms each object as it arrives.
// Without the watch cache the API server refuses the stream, and the
// reflector falls back to a list in pages of 500, which client-go's pager
// gathers into one list of every object, as decoded, before the store's
// transform sees any: at 250,000 players, every player's full status at
// once. Here each page is transformed as it arrives, so what the pager
// gathers are Users. (The store transforms each object again; tf must
// be idempotent, as Transform is.)
//
// The store of each KidUser informer is added to users, which is how the
// controllers read them (Stores.Users): the manager's cache cannot, as it
// holds Users, not KidUsers.
func NewInformer(tf toolscache.TransformFunc, users *Stores) func(toolscache.ListerWatcher, runtime.Object, time.Duration, toolscache.Indexers) toolscache.SharedIndexInformer {
	return func(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
		informer := toolscache.NewSharedIndexInformer(&pagedTransform{inner: toolscache.ToListerWatcherWithContext(lw), raw: lw, tf: tf}, obj, resync, indexers)
		if _, ok := obj.(*kidv1.KidUser); ok && users != nil {
			users.add(informer.GetIndexer())
		}
		return informer
	}
}

// pagedTransform is a ListerWatcher whose lists come back transformed.
type pagedTransform struct {
	inner toolscache.ListerWatcherWithContext
	raw   toolscache.ListerWatcher
	tf    toolscache.TransformFunc
}

func (p *pagedTransform) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	list, err := p.inner.ListWithContext(ctx, opts)
	if err != nil {
		return list, err
	}
	return transformItems(list, p.tf)
}

func (p *pagedTransform) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return p.inner.WatchWithContext(ctx, opts)
}

// List and Watch are the ListerWatcher interface's (deprecated) forms.
func (p *pagedTransform) List(opts metav1.ListOptions) (runtime.Object, error) {
	return p.ListWithContext(context.Background(), opts)
}

func (p *pagedTransform) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return p.WatchWithContext(context.Background(), opts)
}

// IsWatchListSemanticsUnSupported passes on what the wrapped ListerWatcher
// says about streamed lists, so that wrapping it changes nothing there.
func (p *pagedTransform) IsWatchListSemanticsUnSupported() bool {
	return watchlist.DoesClientNotSupportWatchListSemantics(p.raw)
}

// transformItems replaces each item of a list page by its transform. A
// KidUserList's items are KidUser values, which cannot hold a User: the page
// becomes a list of Users (a metainternalversion.List, the type client-go's
// pager gathers pages into), and lets go of everything the decoded players
// held.
func transformItems(list runtime.Object, tf toolscache.TransformFunc) (runtime.Object, error) {
	if users, ok := list.(*kidv1.KidUserList); ok {
		out := &metainternalversion.List{ListMeta: users.ListMeta, Items: make([]runtime.Object, len(users.Items))}
		for i := range users.Items {
			t, err := tf(&users.Items[i])
			if err != nil {
				return nil, err
			}
			u, ok := t.(*User)
			if !ok {
				return nil, fmt.Errorf("the transform of a KidUser returned %T", t)
			}
			out.Items[i] = u
		}
		return out, nil
	}
	// Any other kind: its items are transformed in place where the
	// transform changes them in place (the default for every kind but
	// KidUser).
	return list, meta.EachListItem(list, func(o runtime.Object) error {
		_, err := tf(o)
		return err
	})
}
