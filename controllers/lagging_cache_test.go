package controllers_test

import (
	"context"
	"reflect"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/kid-operator/kid-operator/internal/scheme"
)

// laggingCache is a client whose reads lag on purpose, as a controller's
// informer cache does behind the API server: Hold freezes what Get and List
// show of one object (its stored copy then, or its absence), and Hide hides
// one, until Release.
// Writes go straight to the API server (the wrapped client), which stays
// the reconciler's APIReader. A hold is a switch, not a delay, so a race
// that needs one cache to lag another's write happens every time.
//
// A held copy only replaces the object where the API server's answer has
// it: List never shows an object the API server has deleted. What the
// specs need is a cache that has not seen a create or an update yet.
type laggingCache struct {
	client.Client

	mu   sync.Mutex
	held map[heldKey]client.Object // nil: the cache has not seen it yet
}

type heldKey struct {
	gvk schema.GroupVersionKind
	key client.ObjectKey
}

func newLaggingCache(api client.Client) *laggingCache {
	return &laggingCache{Client: api, held: map[heldKey]client.Object{}}
}

func (l *laggingCache) keyOf(obj client.Object) heldKey {
	gvk, err := apiutil.GVKForObject(obj, scheme.Scheme)
	if err != nil {
		panic(err)
	}
	return heldKey{gvk: gvk, key: client.ObjectKeyFromObject(obj)}
}

// Hold freezes what reads show of obj (its kind, namespace and name): the
// API server's copy now, or nothing if it has none yet.
func (l *laggingCache) Hold(ctx context.Context, obj client.Object) {
	k := l.keyOf(obj)
	live := obj.DeepCopyObject().(client.Object)
	var frozen client.Object
	if err := l.Client.Get(ctx, k.key, live); err == nil {
		frozen = live
	} else if !apierrors.IsNotFound(err) {
		panic(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held[k] = frozen
}

// Hide makes reads show no obj (its kind, namespace and name), whatever the
// API server has: a cache that has not seen its create yet.
func (l *laggingCache) Hide(obj client.Object) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held[l.keyOf(obj)] = nil
}

// Release lets reads see obj as the API server has it again.
func (l *laggingCache) Release(obj client.Object) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.held, l.keyOf(obj))
}

func (l *laggingCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	l.mu.Lock()
	frozen, ok := l.held[heldKey{gvk: l.keyOf(obj).gvk, key: key}]
	l.mu.Unlock()
	switch {
	case !ok:
		return l.Client.Get(ctx, key, obj, opts...)
	case frozen == nil:
		gvk := l.keyOf(obj).gvk
		return apierrors.NewNotFound(schema.GroupResource{Group: gvk.Group, Resource: gvk.Kind}, key.Name)
	}
	reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(frozen.DeepCopyObject()).Elem())
	return nil
}

func (l *laggingCache) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := l.Client.List(ctx, list, opts...); err != nil {
		return err
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	kept := items[:0]
	for _, item := range items {
		o := item.(client.Object)
		frozen, ok := l.held[l.keyOf(o)]
		switch {
		case !ok:
			kept = append(kept, o)
		case frozen != nil:
			kept = append(kept, frozen.DeepCopyObject())
		}
	}
	return meta.SetList(list, kept)
}
