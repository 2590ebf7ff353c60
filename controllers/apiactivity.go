package controllers

import (
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// What a product's status.api shows (design.md §3, "Session sync"): when a
// session of the product was last read from k-ID, when the next periodic
// read is due, and how many pending challenges and verifications recovery
// gave up on. The KidUser controller knows each player's part in its memory
// (pollMemory), and keeps a per-product sum here as that memory changes; the
// KidProduct controller reads the sums. Nothing lists a product's players:
// at 250,000 of them a pass over the product must stay cheap.
//
// Times are kept to the minute, so that a product with many players is
// written at most about once a minute for them (and woken no more often).

// apiActivity holds the products' sums, shared by the KidUser and KidProduct
// controllers through APIClients.
type apiActivity struct {
	mu sync.Mutex
	m  map[types.NamespacedName]*productActivity
	// wake wakes a product whose summary changed.
	wake func(types.NamespacedName)
}

type productActivity struct {
	// lastRead is the minute of the newest session read k-ID answered.
	lastRead int64
	// due counts the product's sessions by the minute (rounded up) their
	// periodic read is due, and next is the smallest such minute (0 when
	// none).
	due  map[int64]int32
	next int64
	// givenUp counts the users whose pending challenge or verification
	// passed its recovery horizon without a decision.
	givenUp int32
}

func newAPIActivity(wake func(types.NamespacedName)) apiActivity {
	return apiActivity{m: map[types.NamespacedName]*productActivity{}, wake: wake}
}

func (a *apiActivity) get(product types.NamespacedName) *productActivity {
	pa, ok := a.m[product]
	if !ok {
		pa = &productActivity{due: map[int64]int32{}}
		a.m[product] = pa
	}
	return pa
}

// minuteOf is t's minute, rounded down or up; 0 for the zero time.
func minuteOf(t time.Time, up bool) int64 {
	if t.IsZero() {
		return 0
	}
	m := t.Unix() / 60
	if up && t.Unix()%60 != 0 {
		m++
	}
	return m
}

// read records a session read k-ID answered at t.
func (a *apiActivity) read(product types.NamespacedName, t time.Time) {
	a.mu.Lock()
	pa := a.get(product)
	m := minuteOf(t, false)
	changed := m > pa.lastRead
	if changed {
		pa.lastRead = m
	}
	a.mu.Unlock()
	if changed && a.wake != nil {
		a.wake(product)
	}
}

// userPart is what one user adds to its product's sums.
type userPart struct {
	product string // the product's name, in the user's namespace
	due     int64  // the minute its session's periodic read is due; 0 none
	givenUp bool
}

// move replaces a user's part in its product's sums (from, which may be
// zero, by to).
func (a *apiActivity) move(namespace string, from, to userPart) {
	if from == to {
		return
	}
	a.mu.Lock()
	var woken []types.NamespacedName
	for _, c := range []struct {
		part userPart
		sign int32
	}{{from, -1}, {to, 1}} {
		if c.part.product == "" {
			continue
		}
		product := types.NamespacedName{Namespace: namespace, Name: c.part.product}
		pa, ok := a.m[product]
		if !ok && c.sign < 0 {
			// Forgotten with its product: nothing to take from.
			continue
		}
		if !ok {
			pa = a.get(product)
		}
		if pa.add(c.part, c.sign) {
			woken = append(woken, product)
		}
	}
	a.mu.Unlock()
	if a.wake != nil {
		for _, p := range woken {
			a.wake(p)
		}
	}
}

// add adds (sign 1) or takes away (-1) a user's part, and reports whether
// the product's summary changed.
func (pa *productActivity) add(part userPart, sign int32) bool {
	changed := false
	if part.givenUp {
		pa.givenUp += sign
		changed = true
	}
	if part.due == 0 {
		return changed
	}
	pa.due[part.due] += sign
	if pa.due[part.due] <= 0 {
		delete(pa.due, part.due)
	}
	next := pa.next
	switch {
	case sign > 0 && (next == 0 || part.due < next):
		next = part.due
	case sign < 0 && part.due == next && pa.due[next] == 0:
		// The soonest minute emptied: the next is the smallest left (a
		// scan of at most a minute per resync interval's minute).
		next = 0
		for m := range pa.due {
			if next == 0 || m < next {
				next = m
			}
		}
	}
	if next != pa.next {
		pa.next = next
		changed = true
	}
	return changed
}

// status is the product's status.api, or nil when there is nothing to show.
func (a *apiActivity) status(product types.NamespacedName) *kidv1.APIStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	pa, ok := a.m[product]
	if !ok || (pa.lastRead == 0 && pa.next == 0 && pa.givenUp == 0) {
		return nil
	}
	st := &kidv1.APIStatus{RecoveriesGivenUp: max(0, pa.givenUp)}
	if pa.lastRead != 0 {
		st.LastResyncTime = &metav1.Time{Time: time.Unix(pa.lastRead*60, 0)}
	}
	if pa.next != 0 {
		st.NextResyncTime = &metav1.Time{Time: time.Unix(pa.next*60, 0)}
	}
	return st
}

// forget drops a deleted product's sums (its users' parts go with them).
func (a *apiActivity) forget(product types.NamespacedName) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.m, product)
}
