package kidapi

import (
	"math"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// MaxRPS bounds Config.RPS: k-ID's own limit for API calls in live (spec
// §4.1), and the KidProduct API's maximum. It also bounds the memory of a
// limiter, which keeps one start time per call a second allows.
const MaxRPS = 500

// limiter gives the calls of one product their start times. It holds two
// rules at once:
//   - pacing: calls come at the rate, up to burst of them at once (a token
//     bucket, in GCRA's form: the theoretical arrival time of the next call);
//   - the window: at most perSecond calls (the rate rounded down, at least
//     1) start in any one second, sliding. A token bucket alone lets burst
//     plus rate calls into one second (the full bucket, then its refill),
//     and k-ID counts the second, not the bucket.
//
// Under a backlog the window holds calls back once, a second after the
// burst, and the bucket does not refill meanwhile: the backlog then goes on
// evenly at the rate instead of bursting again every second.
//
// Starts are given in time order (each is at or after the one before), so
// the ring of the last perSecond starts is sorted and its oldest entry says
// when the window has room again. A start is never given back: one taken
// by a caller that then gave up (its context ended while it waited) is
// lost, which errs on the side of fewer calls.
type limiter struct {
	mu    sync.Mutex
	clock clock.PassiveClock
	// interval is the time between two calls at the rate, and tolerance
	// how far ahead of it a burst may run: (burst-1) intervals.
	interval, tolerance time.Duration
	// tat is when the next call would come at the rate (GCRA's theoretical
	// arrival time).
	tat time.Time
	// starts holds the last perSecond start times, starts[next] the
	// oldest (zero until the ring has filled once).
	starts []time.Time
	next   int
}

// newLimiter returns a limiter of rps calls a second (0 < rps <= MaxRPS) and
// bursts of up to burst (at least 1).
func newLimiter(clk clock.PassiveClock, rps float64, burst int) *limiter {
	interval := time.Duration(float64(time.Second) / rps)
	return &limiter{
		clock:     clk,
		interval:  interval,
		tolerance: time.Duration(max(burst, 1)-1) * interval,
		starts:    make([]time.Time, max(1, int(rps))),
	}
}

// take gives the caller the next free start if it comes within maxWait:
// the start is then taken and the wait until it returned with true. Past
// maxWait nothing is taken, and the wait it would have been is returned
// with false.
func (l *limiter) take(maxWait time.Duration) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Now is read under the lock, so starts are given in time order.
	now := l.clock.Now()
	at := now
	if paced := l.tat.Add(-l.tolerance); paced.After(at) {
		at = paced
	}
	// held is how long the window holds the start past the pace.
	var held time.Duration
	if oldest := l.starts[l.next]; !oldest.IsZero() && oldest.Add(time.Second).After(at) {
		held = oldest.Add(time.Second).Sub(at)
		at = oldest.Add(time.Second)
	}
	wait := at.Sub(now)
	if wait > maxWait {
		return wait, false
	}
	// The bucket does not refill while the window holds calls back: a
	// backlog that used its burst then goes on at the pace, evenly, rather
	// than burst again each second after a gap (which k-ID, counting
	// arrivals, would see bunched).
	l.tat = later(l.tat.Add(held), at).Add(l.interval)
	l.starts[l.next] = at
	l.next = (l.next + 1) % len(l.starts)
	return wait, true
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// pending is how many of the starts given are still to come past the
// burst: the callers that booked a slot and wait for it (kid_api_backlog).
// It reads the pace alone; the window may hold a start a little later.
func (l *limiter) pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	ahead := l.tat.Sub(l.clock.Now()) - l.tolerance - l.interval
	if ahead <= 0 {
		return 0
	}
	return int(math.Ceil(float64(ahead) / float64(l.interval)))
}
