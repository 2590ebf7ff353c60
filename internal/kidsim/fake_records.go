package kidsim

import "slices"

// records is a log that keeps every record, or only the last max of them (a
// ring) while it counts them all: tests count every call, and a fake that
// runs for days (kidsim serve, make run) must not grow without end.
type records[T any] struct {
	max   int // 0 keeps every record
	items []T
	start int // the oldest record, once the ring is full
	total int
}

func (r *records[T]) add(x T) {
	r.total++
	if r.max <= 0 {
		r.items = append(r.items, x)
		return
	}
	if len(r.items) < r.max {
		if len(r.items) == cap(r.items) {
			// Grown by hand: append's doubling would pass the bound.
			grown := make([]T, len(r.items), min(max(2*len(r.items), 16), r.max))
			copy(grown, r.items)
			r.items = grown
		}
		r.items = append(r.items, x)
		return
	}
	r.items[r.start] = x
	r.start = (r.start + 1) % r.max
}

// all returns the records kept, oldest first.
func (r *records[T]) all() []T {
	return slices.Concat(r.items[r.start:], r.items[:r.start])
}

// RequestCount returns how many REST API calls the fake has received,
// including those Requests no longer holds (FakeOptions.MaxRecords).
func (f *Fake) RequestCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests.total
}

// DeliveryCount returns how many delivery attempts have ended, including
// those Deliveries no longer holds (FakeOptions.MaxRecords).
func (f *Fake) DeliveryCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deliveries.total
}
