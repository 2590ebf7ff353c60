//go:build faults && linux

package faults

import (
	"context"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// eventLedger follows one namespace's KidEvents through a watch of its own
// and records, per event, what the controllers wrote and when the test first
// saw it: whether it was stored, the last phase and user it showed, and
// when its notify run was first seen Succeeded. Retention may delete an
// event later; its record stays.
type eventLedger struct {
	mu     sync.Mutex
	events map[string]*eventRecord
}

// eventRecord is what the ledger saw of one KidEvent.
type eventRecord struct {
	phase   kidv1.EventPhase
	userRef string
	// notified is when the event's notify run was first seen Succeeded:
	// after the write that recorded it, so a POST its target received
	// later was sent after the run was recorded done.
	notified time.Time
}

// watchEvents starts a ledger of ns's KidEvents; it stops with the spec.
func watchEvents(ns string) *eventLedger {
	l := &eventLedger{events: map[string]*eventRecord{}}
	c, err := cache.New(h.Config, cache.Options{Scheme: h.Client.Scheme(), DefaultNamespaces: map[string]cache.Config{ns: {}}})
	Expect(err).NotTo(HaveOccurred())
	wctx, cancel := context.WithCancel(context.Background())
	DeferCleanup(cancel)
	inf, err := c.GetInformer(wctx, &kidv1.KidEvent{})
	Expect(err).NotTo(HaveOccurred())
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    l.see,
		UpdateFunc: func(_, obj any) { l.see(obj) },
	})
	Expect(err).NotTo(HaveOccurred())
	go func() { _ = c.Start(wctx) }()
	Expect(c.WaitForCacheSync(wctx)).To(BeTrue())
	return l
}

func (l *eventLedger) see(obj any) {
	e, ok := obj.(*kidv1.KidEvent)
	if !ok {
		return
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.events[e.Name]
	if r == nil {
		r = &eventRecord{}
		l.events[e.Name] = r
	}
	r.phase = e.Status.Phase
	if e.Status.UserRef != nil {
		r.userRef = e.Status.UserRef.Name
	}
	for _, run := range e.Status.Actions {
		if run.Name == notifyName && run.Phase == kidv1.RunSucceeded && r.notified.IsZero() {
			r.notified = now
		}
	}
}

// record returns what the ledger saw of the event named name, if anything.
func (l *eventLedger) record(name string) (eventRecord, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.events[name]
	if !ok {
		return eventRecord{}, false
	}
	return *r, true
}
