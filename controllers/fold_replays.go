package controllers

import (
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/types"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// foldReplays tells a fold replayed after a crash from a fold repeated by
// the process that made it. A fold writes the KidUser (with the event's
// name in its inFlightEvents), then the KidEvent's phase; a process stopped
// between the two leaves the event Pending, and the next leader folds it
// again into a user that already holds it: a replay, counted in
// kid_fold_replays_total. The process that made a fold may repeat it too
// (its phase write failed, or a permission change waits for its read), and
// that is no replay, so each process remembers the Pending events it folded
// until their phase is written or they are gone. In memory: a restart
// forgets it, which is the point.
type foldReplays struct {
	mu     sync.Mutex
	folded map[types.NamespacedName]struct{}
}

// fold records that this process folds e into a user whose status, before
// the fold, is st, and counts a replay when st holds e from a fold this
// process did not make. An uncounted fold (a refold) replays nothing.
func (f *foldReplays) fold(e *kidv1.KidEvent, st *kidv1.KidUserStatus, uncounted bool) {
	key := types.NamespacedName{Namespace: e.Namespace, Name: e.Name}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.folded == nil {
		f.folded = map[types.NamespacedName]struct{}{}
	}
	if _, mine := f.folded[key]; !mine && !uncounted && slices.Contains(st.InFlightEvents, e.Name) {
		foldReplaysTotal.Inc()
	}
	f.folded[key] = struct{}{}
}

// forget drops an event whose phase was written or that is gone.
func (f *foldReplays) forget(key types.NamespacedName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.folded, key)
}
