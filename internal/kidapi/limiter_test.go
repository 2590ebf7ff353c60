package kidapi

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// TestNoSecondHoldsMoreCallsThanTheRate drives a client through every way
// the reconcilers call it (Reserve and a reserved call, Book then Reserve at
// the slot, a blocking call that waits on the limiter, and retries), with
// idle gaps that fill a token bucket, on a fake clock. The server stamps
// each request with that clock, and no one-second window, sliding, may hold
// more than the rate rounded down. A token bucket alone fails it whenever
// the burst is above 1: its full bucket and then its refill both land in
// one second.
func TestNoSecondHoldsMoreCallsThanTheRate(t *testing.T) {
	cases := []struct {
		name  string
		rps   float64
		burst int
		// most is the calls one second may hold: the rate rounded down,
		// unless set.
		most int
	}{
		{name: "10 a second, the default burst", rps: 10},
		{name: "10 a second, a burst of 10", rps: 10, burst: 10},
		{name: "2.5 a second is at most 2 in a second, a burst of 3", rps: 2.5, burst: 3},
		{name: "50 a second, a burst of 50", rps: 50, burst: 50},
		{name: "k-ID's live limit, a burst of 100", rps: MaxRPS, burst: 100},
		// The CRD refuses a rate over 500; an object stored before that
		// bound, or a caller that skips it, is held to it here.
		{name: "a rate past k-ID's live limit is held to it", rps: 5000, burst: 100, most: MaxRPS},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			clock := newStepClock()
			var (
				mu    sync.Mutex
				stamp []time.Time
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				mu.Lock()
				n := len(stamp)
				stamp = append(stamp, clock.Now())
				mu.Unlock()
				if n%7 == 3 && clock.Now().Unix()%5 == 0 {
					// Now and then a failure the client retries in the
					// call, one second in five (a retry's backoff leaves
					// the rest of that second idle).
					w.WriteHeader(http.StatusInternalServerError)
					return
				}
				_, _ = io.WriteString(w, `{"status":"PASS"}`)
			}))
			t.Cleanup(srv.Close)
			c := New(Config{BaseURL: srv.URL, HTTPClient: loopbackClient, RPS: tc.rps, Burst: tc.burst, Clock: clock})
			ctx := context.Background()
			perSecond := max(1, int(tc.rps))
			if tc.most > 0 {
				perSecond = tc.most
			}
			rng := rand.New(rand.NewPCG(1, uint64(perSecond)))

			// Twenty seconds' worth of calls at the rate, at most 4,000
			// (some fail and are retried).
			calls := func() int {
				mu.Lock()
				defer mu.Unlock()
				return len(stamp)
			}
			for calls() < min(20*perSecond, 4000) {
				if rng.IntN(5*perSecond) == 0 {
					// Idle now and then: the bucket fills, a burst follows.
					clock.Step(time.Duration(rng.Int64N(int64(1500 * time.Millisecond))))
				}
				switch rng.IntN(4) {
				case 0:
					// A blocking call waits on the limiter (the step clock
					// passes the wait at once).
					_, _ = c.ChallengeStatus(ctx, "c-1")
				case 1, 2:
					// A reconciler's Reserve: call now, or come back a part
					// of the way, or all of it, to the delay.
					if d := c.Reserve(); d > 0 {
						clock.Step(time.Duration(rng.Int64N(int64(d))) + 1)
						continue
					}
					_, _ = c.WithReservation().ChallengeStatus(ctx, "c-1")
				case 3:
					// A reconciler's slot, then Reserve when it comes.
					if d := c.Book(); d > 0 {
						clock.Step(d)
					}
					if c.Reserve() == 0 {
						_, _ = c.WithReservation().ChallengeStatus(ctx, "c-1")
					}
				}
			}

			mu.Lock()
			defer mu.Unlock()
			most, end := 0, 0
			for i, at := range stamp {
				// The server saw the calls one by one on a clock that only
				// moves forward: the stamps are in order. A window starts
				// at each, and ends before the first stamp a second on.
				g.Expect(at).NotTo(BeTemporally("<", stamp[max(i-1, 0)]))
				for end < len(stamp) && stamp[end].Sub(at) < time.Second {
					end++
				}
				in := end - i
				g.Expect(in).To(BeNumerically("<=", perSecond), "call %d of %d, at %s: %d calls in the second from it", i, len(stamp), at.Format(time.StampMicro), in)
				most = max(most, in)
			}
			g.Expect(most).To(Equal(perSecond), "the rate was reached, so the bound was tested")
		})
	}
}

func TestDefaultBurstIsWellUnderTheRate(t *testing.T) {
	cases := []struct {
		name string
		rps  float64
		want int
	}{
		{name: "a rate under 20 has a burst of 1", rps: 5, want: 1},
		{name: "k-ID's test limit has a burst of 1", rps: 10, want: 1},
		{name: "100 has a burst of 10", rps: 100, want: 10},
		{name: "k-ID's live limit has a burst of 50", rps: MaxRPS, want: 50},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(DefaultBurst(tc.rps)).To(Equal(tc.want))
		})
	}
}

// TestABacklogGoesOnEvenlyAfterItsBurst: callers always waiting take their
// starts one after another. The first second opens with the burst, and
// the window holds the backlog back before the second is over; from then
// on the starts come one rate-interval apart, never a burst again
// (which k-ID, stamping arrivals that the network jitters, would count
// bunched into one second with the calls before it).
func TestABacklogGoesOnEvenlyAfterItsBurst(t *testing.T) {
	g := NewWithT(t)
	clock := newStepClock()
	const rps, burst = 50, 10
	l := newLimiter(clock, rps, burst)
	start := clock.Now()
	var starts []time.Time
	for range 5 * rps {
		d, ok := l.take(forever)
		g.Expect(ok).To(BeTrue())
		clock.Step(d)
		starts = append(starts, clock.Now())
	}
	interval := time.Second / rps
	for i, at := range starts {
		switch {
		case i < burst:
			g.Expect(at).To(Equal(start), "start %d: the burst", i)
		case at.Sub(start) > time.Second:
			// After the window's one hold, a second after the burst.
			g.Expect(at.Sub(starts[i-1])).To(Equal(interval), "start %d, at %s: one rate-interval after the one before", i, at.Sub(start))
		}
	}
	g.Expect(starts[len(starts)-1].Sub(start)).To(BeNumerically("<", 5*time.Second), "the rate was kept up")
}
