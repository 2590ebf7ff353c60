package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// DefaultFilterLanes is how many of one namespace's events may evaluate
// their filters at once, of the KidEvent controller's 16 workers.
const DefaultFilterLanes = 4

// MaxFilterLanes bounds --action-filter-lanes: half the workers, so that
// one namespace never holds more than half of them with its filters.
const MaxFilterLanes = 8

// filterLaneWait is how long an event whose namespace has every lane busy
// waits before it is tried again (with jitter up to as much again).
const filterLaneWait = 500 * time.Millisecond

// filterLanes bounds how many of one namespace's events evaluate filters at
// once. The workers are shared by every namespace, and each event's
// filters may take up to the filter budget: a namespace whose filters are
// costly, sending a burst of events, would otherwise hold every worker, and
// another namespace's delivery would wait behind the burst. An event that
// finds its namespace's lanes full does not wait on a worker: it goes back
// to the queue (kidevent_controller.go, reconcileFilterLane), and the other
// namespaces' events go first. A lane is held only while filters run, so
// a namespace whose filters are cheap (microseconds) hardly ever finds its
// lanes full, and one with no KidAction never does.
type filterLanes struct {
	mu   sync.Mutex
	per  int
	busy map[string]int
}

func newFilterLanes(per int) *filterLanes {
	return &filterLanes{per: per, busy: map[string]int{}}
}

// full reports whether every lane of the namespace is busy.
func (l *filterLanes) full(ns string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.busy[ns] >= l.per
}

// enter takes a lane of the namespace, if one is free; leave gives it back.
func (l *filterLanes) enter(ns string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.busy[ns] >= l.per {
		return false
	}
	l.busy[ns]++
	return true
}

func (l *filterLanes) leave(ns string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.busy[ns]--; l.busy[ns] <= 0 {
		delete(l.busy, ns)
	}
}

// laneWait is the wait of an event whose namespace's lanes are full: the
// jitter spreads a burst's retries.
func laneWait() time.Duration {
	return wait.Jitter(filterLaneWait, 1)
}
