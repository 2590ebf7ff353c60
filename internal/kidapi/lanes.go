package kidapi

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/clock"
)

// Lane is the lane of a call in its product's schedule (Lanes).
type Lane uint8

const (
	// Resync is the lane of calls made on a timer: a session's periodic
	// resync, recovery's polls, an erasure's confirming reads. It gets
	// the tokens the urgent lane leaves.
	Resync Lane = iota
	// Urgent is the lane of calls that something which just happened
	// asks for: a new session's first read (a consent PASS), a read after
	// a permission change, a kid.dev/requested-at. Its calls are served
	// before any of the resync lane.
	Urgent
)

func (l Lane) String() string {
	if l == Urgent {
		return "urgent"
	}
	return "resync"
}

// Slots is what Lanes needs of a product's rate limiter; *Client has it.
// Book gives a slot in the product's schedule (the resync lane's), Reserve
// takes a token now or says how long until one.
type Slots interface {
	Book() time.Duration
	Reserve() time.Duration
}

// claimSlack is how long past its slot an urgent call keeps its claim on
// the next token, for the time its reconcile takes to come back. A call
// that takes its token ends its claim at once; the slack only bounds the
// claim of one that never comes back.
const claimSlack = time.Second

// Lanes books one product's calls in two lanes, so that a backlog of
// resyncs (after a restart, every session of the product) never holds up a
// read someone is waiting for. Both lanes book slots, so callers that must
// wait come back one by one; the urgent lane has a schedule of its own, at
// the product's rate, so an urgent call never books behind the resync
// backlog; and while an urgent call waits for its token, it claims it: a
// resync call whose slot comes then gives way and books again at the back
// of its lane. The resync lane therefore gets exactly the tokens the urgent
// lane leaves, and either lane takes its token from the product's one rate
// limiter, at the moment of the call.
//
// A caller keeps its own slot (when it comes) and calls Book when it has
// none, then Take when it has come; key names the caller (a user), so that
// its claim ends when it takes its token. Lanes is safe for concurrent use.
type Lanes struct {
	slots    Slots
	clock    clock.PassiveClock
	interval time.Duration // one rate-interval: the least a resync call that gave way waits

	mu     sync.Mutex
	urgent *rate.Limiter // the urgent lane's schedule
	// claims are the urgent calls waiting for a token, and until when
	// each claim holds.
	claims map[string]time.Time
}

// NewLanes returns the lanes of a product whose limiter is slots, at rps
// calls per second with burst. A nil clk is the real clock; it must be the
// limiter's.
func NewLanes(slots Slots, rps float64, burst int, clk clock.PassiveClock) *Lanes {
	if rps <= 0 {
		rps = DefaultRPS
	}
	if burst <= 0 {
		burst = max(1, int(rps))
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Lanes{
		slots: slots, clock: clk, interval: time.Duration(float64(time.Second) / rps),
		urgent: rate.NewLimiter(rate.Limit(rps), burst), claims: map[string]time.Time{},
	}
}

// Book gives the caller key a slot in lane and returns how long until it
// comes (0: now, and the caller goes on to Take).
func (l *Lanes) Book(lane Lane, key string) time.Duration {
	if lane == Resync {
		return l.slots.Book()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	d := l.urgent.ReserveN(now, 1).DelayFrom(now)
	if d > 0 {
		l.claim(key, now.Add(d))
	}
	return d
}

// Take is called when the caller's slot has come. It returns 0 when a
// token was taken (the caller makes its one call now, through
// WithReservation), or the wait until the caller's next slot:
//   - an urgent call keeps its place and claims the next token;
//   - a resync call gives way while an urgent call claims a token, waits
//     for a token less than half a rate-interval away (its own, delayed
//     by a late caller before it), and goes to the back of its lane when
//     the token it came for is gone.
func (l *Lanes) Take(lane Lane, key string) time.Duration {
	if lane == Resync {
		if l.claimed() {
			return max(l.slots.Book(), l.interval)
		}
	}
	d := l.slots.Reserve()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case d == 0 && lane == Urgent:
		delete(l.claims, key)
		return 0
	case d == 0:
		return 0
	case lane == Urgent:
		l.claim(key, l.clock.Now().Add(d))
		return d
	}
	if d <= l.interval/2 {
		// The token its slot was booked for is a moment away: the call
		// before it came a few milliseconds late (a reconcile's queue
		// and round trip), and the limiter counts calls when they are
		// made. It waits for it. Sent to the back of the lane instead,
		// an on-time caller behind a late one lost its place at slot
		// after slot (TestAResyncCallerBehindALateOneKeepsItsPlace).
		return d
	}
	// The resync call's token went to an urgent call or to a caller
	// that came late: it books again, rather than wait for the next
	// token with every other caller that missed one (a herd).
	return max(l.slots.Book(), d)
}

// claim holds the token due at t for the urgent caller key (l.mu held).
func (l *Lanes) claim(key string, t time.Time) {
	l.claims[key] = t.Add(claimSlack)
}

// claimed reports whether an urgent call claims a token now, forgetting
// the claims that ran out.
func (l *Lanes) claimed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	for key, until := range l.claims {
		if now.Before(until) {
			return true
		}
		delete(l.claims, key)
	}
	return false
}
