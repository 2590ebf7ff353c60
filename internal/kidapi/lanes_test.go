package kidapi

import (
	"fmt"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// laneCaller is one user of the simulation: it books when it has no slot,
// takes when its slot has come, and otherwise waits as it was told, as the
// KidUser controller's requeues do.
type laneCaller struct {
	key      string
	lane     Lane
	arrives  time.Time
	at       time.Time // when it comes back
	booked   bool
	calledAt time.Time // zero until it called
	visits   int       // its reconciles
}

// simulate runs the callers over the product's lanes on a fake clock, in
// steps of 5 ms, until every caller called or the time runs out. Each step
// serves the resync callers that are due before the urgent ones, the order
// least kind to the urgent lane. It returns the times of the calls.
func simulate(clk *testingclock.FakeClock, lanes *Lanes, callers []*laneCaller, limit time.Duration) []time.Time {
	var calls []time.Time
	end := clk.Now().Add(limit)
	for clk.Now().Before(end) {
		now := clk.Now()
		pending := 0
		for _, lane := range []Lane{Resync, Urgent} {
			for _, c := range callers {
				if c.lane != lane || !c.calledAt.IsZero() || now.Before(c.arrives) || now.Before(c.at) {
					continue
				}
				c.visits++
				if !c.booked {
					c.booked = true
					if d := lanes.Book(c.lane, c.key); d > 0 {
						c.at = now.Add(d)
						continue
					}
				}
				if d := lanes.Take(c.lane, c.key); d > 0 {
					c.at = now.Add(d)
					continue
				}
				c.calledAt = now
				calls = append(calls, now)
			}
		}
		for _, c := range callers {
			if c.calledAt.IsZero() {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		clk.Step(5 * time.Millisecond)
	}
	return calls
}

func newLanes(rps float64, burst int) (*testingclock.FakeClock, *Lanes) {
	clk := testingclock.NewFakeClock(time.Unix(1764000000, 0))
	c := New(Config{BaseURL: "http://127.0.0.1:1/api/v1", APIKey: testKey, RPS: rps, Burst: burst, Clock: clk, HTTPClient: loopbackClient})
	return clk, NewLanes(c, rps, burst, clk)
}

func TestAnUrgentCallIsServedBeforeTheResyncBacklog(t *testing.T) {
	g := NewWithT(t)
	clk, lanes := newLanes(50, 5)
	start := clk.Now()
	var callers []*laneCaller
	for i := range 300 {
		callers = append(callers, &laneCaller{key: fmt.Sprintf("resync-%d", i), lane: Resync, arrives: start})
	}
	urgent := &laneCaller{key: "urgent", lane: Urgent, arrives: start.Add(time.Second)}
	callers = append(callers, urgent)

	calls := simulate(clk, lanes, callers, time.Minute)

	g.Expect(calls).To(HaveLen(301), "every caller called")
	g.Expect(urgent.calledAt.Sub(urgent.arrives)).To(BeNumerically("<=", 60*time.Millisecond),
		"the urgent call waited at most a few rate-intervals, not behind 250 resyncs (5 s)")
	g.Expect(kidsim.MaxInWindow(calls, time.Second)).To(BeNumerically("<=", 50), "the product's rate held, in every second")
	last := slices.MaxFunc(callers, func(a, b *laneCaller) int { return a.calledAt.Compare(b.calledAt) })
	g.Expect(last.calledAt.Sub(start)).To(BeNumerically("<", 7*time.Second), "the backlog went at the rate: 301 calls at 50/s")
	visits := 0
	for _, c := range callers {
		visits += c.visits
	}
	g.Expect(visits).To(BeNumerically("<=", 2*len(callers)+10), "a caller comes back once for its slot; the one that gave way, once more")
}

func TestTheResyncLaneGetsTheTokensTheUrgentLaneLeaves(t *testing.T) {
	g := NewWithT(t)
	clk, lanes := newLanes(50, 5)
	start := clk.Now()
	var callers, urgent []*laneCaller
	for i := range 200 {
		callers = append(callers, &laneCaller{key: fmt.Sprintf("resync-%d", i), lane: Resync, arrives: start})
	}
	// Twenty urgent calls a second for three seconds, while the backlog
	// lasts.
	for i := range 60 {
		u := &laneCaller{key: fmt.Sprintf("urgent-%d", i), lane: Urgent, arrives: start.Add(time.Duration(i) * 50 * time.Millisecond)}
		urgent = append(urgent, u)
		callers = append(callers, u)
	}

	calls := simulate(clk, lanes, callers, time.Minute)

	g.Expect(calls).To(HaveLen(260))
	// The limiter lets no more than the rate into any second: the burst
	// the backlog took at the start leaves a gap of a burst's worth of
	// rate-intervals (5 × 20 ms) before the second is over, which an
	// urgent call arriving then waits out, as k-ID's count requires.
	for _, u := range urgent {
		g.Expect(u.calledAt.Sub(u.arrives)).To(BeNumerically("<=", 110*time.Millisecond), u.key)
	}
	g.Expect(kidsim.MaxInWindow(calls, time.Second)).To(BeNumerically("<=", 50))
	last := slices.MaxFunc(callers, func(a, b *laneCaller) int { return a.calledAt.Compare(b.calledAt) })
	g.Expect(last.calledAt.Sub(start)).To(BeNumerically("<", 6500*time.Millisecond),
		"no token was lost to the lanes: 260 calls at 50/s take 5.2 s")
	visits := 0
	for _, c := range callers {
		visits += c.visits
	}
	g.Expect(visits).To(BeNumerically("<=", 3*len(callers)), "the resync calls that gave way booked again, rather than come back at every token")
}

func TestAnUrgentClaimEndsWhenItsCallerTakesItsToken(t *testing.T) {
	g := NewWithT(t)
	clk, lanes := newLanes(10, 1)
	g.Expect(lanes.Take(Resync, "r-1")).To(BeZero(), "the burst's token")
	g.Expect(lanes.Book(Urgent, "u-1")).To(BeZero(), "the urgent lane has no backlog")
	g.Expect(lanes.Take(Urgent, "u-1")).To(Equal(100*time.Millisecond), "the next token is 100 ms away, and u-1 claims it")
	clk.Step(100 * time.Millisecond)
	g.Expect(lanes.Take(Resync, "r-2")).To(Equal(100*time.Millisecond), "a resync call gives way to the claim")
	g.Expect(lanes.Take(Urgent, "u-1")).To(BeZero())
	clk.Step(100 * time.Millisecond)
	g.Expect(lanes.Take(Resync, "r-2")).To(BeZero(), "the claim ended with u-1's call")

	g.Expect(lanes.Book(Urgent, "u-2")).To(BeZero())
	g.Expect(lanes.Take(Urgent, "u-2")).To(Equal(100 * time.Millisecond))
	clk.Step(100*time.Millisecond + claimSlack)
	g.Expect(lanes.Take(Resync, "r-3")).To(BeZero(), "a claim whose caller never came back runs out")
}

// A resync caller comes at its slot, but the limiter counts each call when
// it is made, and the caller before it came a little late (a reconcile's
// queue and round trip): the token is a few milliseconds away. It keeps
// its place and waits for it; sent to the back of the lane, as it was,
// one player of the breaker spec lost its token five times in a row.
func TestAResyncCallerBehindALateOneKeepsItsPlace(t *testing.T) {
	g := NewWithT(t)
	clk, lanes := newLanes(5, 1)
	start := clk.Now()
	g.Expect(lanes.Book(Resync, "first")).To(BeZero())
	g.Expect(lanes.Book(Resync, "second")).To(Equal(200 * time.Millisecond))
	g.Expect(lanes.Book(Resync, "third")).To(Equal(400 * time.Millisecond))

	// first takes its token 30 ms late; second and third come on time.
	clk.Step(30 * time.Millisecond)
	g.Expect(lanes.Take(Resync, "first")).To(BeZero())
	clk.SetTime(start.Add(200 * time.Millisecond))
	g.Expect(lanes.Take(Resync, "second")).To(Equal(30*time.Millisecond), "its token, 30 ms away: it waits, in its place")
	clk.Step(30 * time.Millisecond)
	g.Expect(lanes.Take(Resync, "second")).To(BeZero())
	clk.SetTime(start.Add(400 * time.Millisecond))
	g.Expect(lanes.Take(Resync, "third")).To(Equal(30 * time.Millisecond))

	// A caller whose token another took (here one that took without a
	// slot) books again at the back: a slot at 600 ms, and the next
	// token, 200 ms away at 630 ms.
	clk.Step(30 * time.Millisecond)
	g.Expect(lanes.Take(Resync, "no-slot")).To(BeZero())
	g.Expect(lanes.Take(Resync, "third")).To(Equal(200*time.Millisecond), "the back of the lane")
	g.Expect(lanes.Book(Resync, "fourth")).To(Equal(370*time.Millisecond), "third took the slot at 600 ms")
}
