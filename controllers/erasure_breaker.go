package controllers

import (
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// The erasure breaker (design.md §3, "Session sync"): one per product, in
// memory, shared by the KidUser controller (which counts the sessions that
// read NOT_FOUND and asks before it erases) and the KidProduct controller
// (which shows it as the ErasuresHeld condition and closes it again when a
// person sets kid.dev/resume-erasures). Anything that makes k-ID answer
// NOT_FOUND to many sessions at once (a key switched from test to live, a
// base URL at another k-ID, a blip at k-ID) would otherwise erase a
// product's players for good. One player's deletion never trips it.

const (
	// erasureWindow is how long a session's NOT_FOUND counts.
	erasureWindow = time.Hour
	// breakerMinCount is the fewest sessions that trip the breaker...
	breakerMinCount = 10
	// breakerSharePercent ...and the share of the product's sessions they
	// must exceed.
	breakerSharePercent = 10
)

// erasureBreakers are the products' breakers.
type erasureBreakers struct {
	mu sync.Mutex
	m  map[types.NamespacedName]*erasureBreaker
	// wakeUsers is the channel the KidUser controller watches: the users
	// whose erasure was held, when a person resumes erasures.
	wakeUsers chan event.GenericEvent
}

type erasureBreaker struct {
	// suspects are the users whose session read NOT_FOUND (or not
	// ACTIVE), with when it first did, within the window.
	suspects map[types.NamespacedName]time.Time
	// open holds erasures; count and sessions are what tripped it.
	open            bool
	count, sessions int
	// held are the users whose confirmed erasure waits for a person.
	held map[types.NamespacedName]struct{}
	// resumedAt is when a person last resumed erasures; an ErasuresHeld
	// condition older than it is a cache that has not caught up.
	resumedAt time.Time
}

func newErasureBreakers() erasureBreakers {
	return erasureBreakers{m: map[types.NamespacedName]*erasureBreaker{}, wakeUsers: make(chan event.GenericEvent, 1024)}
}

func (b *erasureBreakers) get(product types.NamespacedName) *erasureBreaker {
	br, ok := b.m[product]
	if !ok {
		br = &erasureBreaker{suspects: map[types.NamespacedName]time.Time{}, held: map[types.NamespacedName]struct{}{}}
		b.m[product] = br
	}
	return br
}

// suspect counts a user whose session read NOT_FOUND at now, once per
// window. sessions counts the product's sessions; it is called only when
// the count could trip the breaker. It reports whether this read tripped it.
func (b *erasureBreakers) suspect(product, user types.NamespacedName, now time.Time, sessions func() (int, error)) (tripped bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	br := b.get(product)
	for u, at := range br.suspects {
		if now.Sub(at) > erasureWindow || at.Before(br.resumedAt) {
			delete(br.suspects, u)
		}
	}
	if _, seen := br.suspects[user]; !seen {
		br.suspects[user] = now
	}
	n := len(br.suspects)
	if br.open || n < breakerMinCount {
		return false, nil
	}
	total, err := sessions()
	if err != nil {
		return false, err
	}
	if n*100 <= total*breakerSharePercent {
		return false, nil
	}
	br.open, br.count, br.sessions = true, n, total
	return true, nil
}

// hold reports whether erasures of the product are held, given the
// product as the cache shows it; when they are, it remembers the user, to
// wake it when a person resumes them. The condition stands for the breaker
// after a restart, when the memory is empty.
func (b *erasureBreakers) hold(product *kidv1.KidProduct, user types.NamespacedName) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	br := b.get(productKey(product))
	if !br.open {
		c := erasuresHeld(product)
		if c == nil || c.LastTransitionTime.Time.Before(br.resumedAt) {
			return false
		}
	}
	br.held[user] = struct{}{}
	return true
}

// release forgets a held user whose session k-ID answered again.
func (b *erasureBreakers) release(product, user types.NamespacedName) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if br, ok := b.m[product]; ok {
		delete(br.held, user)
	}
}

// state reports whether the breaker is open, and why.
func (b *erasureBreakers) state(product types.NamespacedName) (open bool, count, sessions int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	br, ok := b.m[product]
	if !ok {
		return false, 0, 0
	}
	return br.open, br.count, br.sessions
}

// restore opens the breaker from the product's condition (after a
// restart), unless a person resumed erasures since.
func (b *erasureBreakers) restore(product types.NamespacedName, since time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if br := b.get(product); !br.open && !since.Before(br.resumedAt) {
		br.open = true
	}
}

// resume closes the breaker: the suspects counted so far no longer count,
// and the held users are woken to read their sessions again.
func (b *erasureBreakers) resume(product types.NamespacedName, now time.Time) {
	b.mu.Lock()
	br := b.get(product)
	br.open, br.count, br.sessions, br.resumedAt = false, 0, 0, now
	clear(br.suspects)
	held := br.held
	br.held = map[types.NamespacedName]struct{}{}
	b.mu.Unlock()
	for u := range held {
		obj := &kidv1.KidUser{}
		obj.Namespace, obj.Name = u.Namespace, u.Name
		select {
		case b.wakeUsers <- event.GenericEvent{Object: obj}:
		default:
			// The controller is behind: a held user reads again at
			// its heldRecheck anyway.
		}
	}
}

// forget drops a product's breaker (the product is gone).
func (b *erasureBreakers) forget(product types.NamespacedName) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, product)
}

func breakerMessage(count, sessions int) string {
	return fmt.Sprintf("%d of %d sessions read NOT_FOUND from k-ID's API within %s (more than %d%% and at least %d): erasures learned from the API are held; webhook deletions still erase. Check spec.api (key, environment, baseURL); if k-ID did delete them, set the annotation %s to resume",
		count, sessions, erasureWindow, breakerSharePercent, breakerMinCount, kidv1.ResumeErasuresAnnotation)
}

// resumedSince reports whether a person resumed the product's erasures
// after t.
func (b *erasureBreakers) resumedSince(product types.NamespacedName, t time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	br, ok := b.m[product]
	return ok && br.resumedAt.After(t)
}
