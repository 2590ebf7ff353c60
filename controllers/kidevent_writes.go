package controllers

import (
	"context"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// A Pending event used to be read from the API server before each fold,
// and each event a batch took with it too (reconcileReread, queuedWith):
// the cache may show Pending an event applied since, and folding it again
// would count it twice. But an event leaves Pending only by this
// controller's own status writes (the receiver creates events and adds to
// their spec; nothing else writes their status), and the controller runs
// in one process at a time (the leader). So the cache can lag behind only
// two kinds of write:
//   - this process's own: each answer carries the new resourceVersion, and
//     ownWrites remembers it until the cache shows that version;
//   - a former leader's, all made before this process took over: a cached
//     copy newer than a list made at the takeover is newer than them.
//
// A cached copy newer than both is what a read would return, as far as
// Pending goes, and is trusted; any other is read from the API server, as
// before. resourceVersions are compared as k8s.io/apimachinery allows for
// one resource (util/resourceversion); one that does not parse is never
// trusted.

// ownWrites is what the KidEvent controller knows of the writes the cache
// may not show yet.
type ownWrites struct {
	mu sync.Mutex
	// on: every KidEvent write of the reconciler goes through record
	// (wrap). Off (specs that build a reconciler by hand), no cached copy
	// is trusted.
	on bool
	// since is the KidEvents' resourceVersion at the takeover: a list's,
	// made by the first pass that asked.
	since string
	// unseen holds, per event, the version the cache must show before its
	// copy is trusted, until it shows it.
	unseen map[types.NamespacedName]writeMark
}

// writeMark is the version of an event a write made, or may have made.
type writeMark struct {
	rv string
	// over: the write's outcome is unknown (its answer was lost); rv is the
	// version it was made over, and only a newer one is trusted.
	over bool
}

// stricter reports whether m asks for a later version than o.
func (m writeMark) stricter(o writeMark) bool {
	c, err := resourceversion.CompareResourceVersion(m.rv, o.rv)
	if err != nil {
		return true
	}
	return c > 0 || c == 0 && m.over && !o.over
}

// shownBy reports whether a cached copy at version rv shows the write.
func (m writeMark) shownBy(rv string) bool {
	c, err := resourceversion.CompareResourceVersion(rv, m.rv)
	return err == nil && (c > 0 || c == 0 && !m.over)
}

// wrap returns c with every KidEvent write recorded, and turns the trust
// in cached copies on.
func (w *ownWrites) wrap(c client.Client) client.Client {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.on = true
	return &recordingClient{Client: c, w: w}
}

// current reports whether a cached copy of a Pending event may be folded
// without reading the event from the API server: it is newer than the
// takeover and shows this process's last write of it.
func (w *ownWrites) current(ctx context.Context, e *kidv1.KidEvent, live client.Reader) bool {
	since := w.takeover(ctx, live, e.Namespace)
	if since == "" {
		return false
	}
	if c, err := resourceversion.CompareResourceVersion(e.ResourceVersion, since); err != nil || c <= 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	key := client.ObjectKeyFromObject(e)
	mark, ok := w.unseen[key]
	if !ok {
		return true
	}
	if !mark.shownBy(e.ResourceVersion) {
		return false
	}
	delete(w.unseen, key)
	return true
}

// takeover returns since, listing the KidEvents of namespace ns for it on
// first use (a resourceVersion is the resource's, whatever the namespace,
// and the manager may list only the namespaces it watches); "" when off or
// when the list failed (the next pass tries again).
func (w *ownWrites) takeover(ctx context.Context, live client.Reader, ns string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.on || w.since != "" {
		return w.since
	}
	// One item: only the list's resourceVersion is wanted. A list with no
	// resourceVersion set is a consistent read: at least as new as every
	// write made before it.
	var list kidv1.KidEventList
	if err := live.List(ctx, &list, client.InNamespace(ns), client.Limit(1)); err != nil {
		return ""
	}
	if _, err := resourceversion.CompareResourceVersion(list.ResourceVersion, list.ResourceVersion); err == nil {
		w.since = list.ResourceVersion
	}
	return w.since
}

// recorded makes write, a write of obj, and records it.
func (w *ownWrites) recorded(obj client.Object, write func() error) error {
	before := obj.GetResourceVersion()
	err := write()
	w.record(obj, before, err)
	return err
}

// record notes a write of obj made over version before. A failed write
// that surely changed nothing (refused, conflicting, of an event gone)
// leaves nothing to wait for.
func (w *ownWrites) record(obj client.Object, before string, err error) {
	if _, ok := obj.(*kidv1.KidEvent); !ok {
		return
	}
	mark := writeMark{rv: obj.GetResourceVersion()}
	switch {
	case err == nil:
	case changedNothing(err):
		return
	default:
		mark = writeMark{rv: before, over: true}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	key := client.ObjectKeyFromObject(obj)
	if old, ok := w.unseen[key]; ok && !mark.stricter(old) {
		return
	}
	if w.unseen == nil {
		w.unseen = map[types.NamespacedName]writeMark{}
	}
	w.unseen[key] = mark
}

// changedNothing reports whether a write's error says it surely changed
// nothing: refused, conflicting (a precondition included), of an object
// gone.
func changedNothing(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsNotFound(err) || apierrors.IsInvalid(err) ||
		apierrors.IsForbidden(err) || apierrors.IsBadRequest(err) || apierrors.IsUnauthorized(err)
}

// recordDelete notes the delete of an event: no cached copy of it is
// trusted until the cache drops it (forget).
func (w *ownWrites) recordDelete(obj client.Object, err error) {
	if _, ok := obj.(*kidv1.KidEvent); !ok || err != nil && changedNothing(err) {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.unseen == nil {
		w.unseen = map[types.NamespacedName]writeMark{}
	}
	// No version is newer than an empty one would need to be: never shown.
	w.unseen[client.ObjectKeyFromObject(obj)] = writeMark{over: true}
}

// seen drops the mark of an event the cache shows at or past it: the
// informer's handler, so that the memory holds only writes the cache has
// not shown yet (a status write wakes no pass that would drop it).
func (w *ownWrites) seen(obj any) {
	e, ok := obj.(*kidv1.KidEvent)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	key := client.ObjectKeyFromObject(e)
	if mark, ok := w.unseen[key]; ok && mark.shownBy(e.ResourceVersion) {
		delete(w.unseen, key)
	}
}

// forget drops the mark of an event gone from the cache.
func (w *ownWrites) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.unseen, key)
}

// marks is how many writes the cache has not shown yet (tests).
func (w *ownWrites) marks() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.unseen)
}

// handler keeps the memory in step with the informer.
func (w *ownWrites) handler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.seen(obj) },
		UpdateFunc: func(_, obj any) { w.seen(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if o, ok := obj.(client.Object); ok {
				w.forget(client.ObjectKeyFromObject(o))
			}
		},
	}
}

// recordingClient is the reconciler's client with its KidEvent writes
// recorded in ownWrites.
type recordingClient struct {
	client.Client
	w *ownWrites
}

func (c *recordingClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	return c.w.recorded(obj, func() error { return c.Client.Update(ctx, obj, opts...) })
}

func (c *recordingClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	return c.w.recorded(obj, func() error { return c.Client.Patch(ctx, obj, patch, opts...) })
}

func (c *recordingClient) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	err := c.Client.Delete(ctx, obj, opts...)
	c.w.recordDelete(obj, err)
	return err
}

func (c *recordingClient) Status() client.SubResourceWriter {
	return c.SubResource("status")
}

func (c *recordingClient) SubResource(sub string) client.SubResourceClient {
	return &recordingSubResource{SubResourceClient: c.Client.SubResource(sub), w: c.w}
}

// recordingSubResource records a subresource's writes (the status).
type recordingSubResource struct {
	client.SubResourceClient
	w *ownWrites
}

func (c *recordingSubResource) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	return c.w.recorded(obj, func() error { return c.SubResourceClient.Update(ctx, obj, opts...) })
}

func (c *recordingSubResource) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	return c.w.recorded(obj, func() error { return c.SubResourceClient.Patch(ctx, obj, patch, opts...) })
}
