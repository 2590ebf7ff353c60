package controllers

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kid-operator/kid-operator/internal/kidapi"
)

// What a failing k-ID API costs (design.md §3, "Failures"). Two mechanisms
// keep a product whose calls fail from spending its whole rate on them:
//   - per player, a failed call backs off exponentially, with jitter, from
//     failureBackoffBase to failureBackoffMax (failureBackoff; the count of
//     failures lives in pollMemory, so it survives between reconciles);
//   - per product, a circuit breaker (breaker, one per APIClient): when most
//     of the product's calls failed over breakerWindow, its reads pause,
//     APIReady turns False (reason Failing, naming what failed), and the
//     KidProduct controller sends one probe at a time, first after
//     breakerProbeFirst and then at doubling intervals up to
//     breakerProbeMax. The first probe that k-ID answers closes it, and the
//     product's users are woken.

const (
	// failureBackoffBase is a player's wait after its first failed call: a
	// blip passes in a couple of seconds (k-ID's own advice for its
	// propagation delay is to retry a second apart), and a product that is
	// broken for good is not asked again at once by every player.
	failureBackoffBase = 2 * time.Second
	// failureBackoffMax caps a player's wait: once k-ID is back, a player is
	// asked again within about ten minutes, and while it is not, one player
	// costs at most six calls an hour.
	failureBackoffMax = 10 * time.Minute
	// failureJitter is the share of a backoff taken off at random, so
	// players that failed together do not come back together. It is taken
	// off, not added, so no wait exceeds failureBackoffMax.
	failureJitter = 0.1

	// breakerWindow is how far back a product's calls are judged. A minute
	// holds enough calls to judge at the lowest rate (5 per second in the
	// test environment), and an outage is forgotten a minute after it
	// ended.
	breakerWindow = time.Minute
	// breakerBuckets divides the window, so that old calls leave it a
	// tenth of a minute at a time rather than all at once.
	breakerBuckets = 6
	// breakerMinCalls is the fewest calls in the window on which the
	// breaker judges: one or two players failing never pause a product.
	breakerMinCalls = 10
	// breakerFailShare is the share of failed calls above which the
	// breaker opens ("most calls failed").
	breakerFailShare = 0.5
	// breakerProbeFirst is how long an open breaker waits before its first
	// probe; each failed probe doubles the wait, up to breakerProbeMax. A
	// product paused for good thus costs at most one call (three attempts
	// on a 5xx) every five minutes.
	breakerProbeFirst = 30 * time.Second
	breakerProbeMax   = 5 * time.Minute
)

// failureBackoff is a player's wait after its failures-th failed call in a
// row (failures >= 1): failureBackoffBase doubled on each failure, at most
// failureBackoffMax, less up to failureJitter at random.
func failureBackoff(failures int) time.Duration {
	d := failureBackoffMax
	if failures < 1 {
		failures = 1
	}
	if shift := failures - 1; shift < 20 {
		d = min(failureBackoffBase<<shift, failureBackoffMax)
	}
	// wait.Jitter adds up to a share; start from the lower bound so the
	// result stays within [d*(1-failureJitter), d].
	low := d - time.Duration(float64(d)*failureJitter)
	return min(wait.Jitter(low, failureJitter/(1-failureJitter)), d)
}

// breaker is a product's circuit breaker. Calls' outcomes are counted in
// buckets over breakerWindow while it is closed; it opens when at least
// breakerMinCalls were counted and more than breakerFailShare of them
// failed. While open, nothing is counted (calls already on their way when
// it opened land there), the product's reads wait, and probed moves it on.
type breaker struct {
	mu      sync.Mutex
	buckets [breakerBuckets]breakerBucket
	open    bool
	// probeAt is when an open breaker's next probe is due, and probeWait
	// the interval that brought it.
	probeAt   time.Time
	probeWait time.Duration
	// cause names the last failure, for APIReady.
	cause string
}

type breakerBucket struct {
	start       time.Time
	ok, failed  int
	initialized bool
}

// bucketWidth is the span of one bucket.
const bucketWidth = breakerWindow / breakerBuckets

// record counts a call's outcome, and reports whether it opened the
// breaker.
func (b *breaker) record(now time.Time, failed bool, cause string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		return false
	}
	start := now.Truncate(bucketWidth)
	bk := &b.buckets[int(start.UnixNano()/int64(bucketWidth))%breakerBuckets]
	if !bk.initialized || !bk.start.Equal(start) {
		*bk = breakerBucket{start: start, initialized: true}
	}
	if failed {
		bk.failed++
		b.cause = cause
	} else {
		bk.ok++
	}
	var ok, bad int
	for _, c := range b.buckets {
		if c.initialized && !c.start.After(now) && now.Sub(c.start) < breakerWindow {
			ok, bad = ok+c.ok, bad+c.failed
		}
	}
	if ok+bad < breakerMinCalls || float64(bad) <= breakerFailShare*float64(ok+bad) {
		return false
	}
	b.open, b.probeWait = true, breakerProbeFirst
	b.probeAt = now.Add(b.probeWait)
	return true
}

// state reports whether the breaker is open, how long until its next probe
// is due (0: now), and what failed.
func (b *breaker) state(now time.Time) (open bool, untilProbe time.Duration, cause string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return false, 0, b.cause
	}
	return true, max(b.probeAt.Sub(now), 0), b.cause
}

// probed records the outcome of a probe. An answer from k-ID closes an open
// breaker and forgets the window; a failure waits twice as long for the
// next probe. On a closed breaker it counts as any other call.
func (b *breaker) probed(now time.Time, ok bool, cause string) (closed bool) {
	b.mu.Lock()
	if !b.open {
		b.mu.Unlock()
		b.record(now, !ok, cause)
		return false
	}
	defer b.mu.Unlock()
	if ok {
		b.open, b.buckets = false, [breakerBuckets]breakerBucket{}
		return true
	}
	b.cause = cause
	b.probeWait = min(b.probeWait*2, breakerProbeMax)
	b.probeAt = now.Add(b.probeWait)
	return false
}

// failsProduct says whether a failed call counts against the product's
// breaker: k-ID did not answer (a timeout, the network), answered 5xx, or
// answered in a way that is no k-ID answer (a 404, a 2xx that does not
// parse). A 4xx about the request, a 401 (which pauses the product by
// itself), a 429 (Retry-After) and a wait for the rate limiter do not.
func failsProduct(err error) bool {
	var e *kidapi.Error
	if !errors.As(err, &e) {
		return false
	}
	switch {
	case e.Code == kidapi.CodeCanceled, e.Code == kidapi.CodeThrottled, e.Code == kidapi.CodeInvalidRequest:
		return false
	case e.HTTPStatus == 0, e.HTTPStatus >= 500, e.HTTPStatus == 404, e.Code == kidapi.CodeInvalidResponse:
		return true
	}
	return false
}

// describeFailure names a failed call for APIReady and the logs: the
// status and the path, never the query (ids) nor the host.
func describeFailure(err error) string {
	var e *kidapi.Error
	if !errors.As(err, &e) {
		return "the call failed"
	}
	path := "/" + e.Endpoint
	switch {
	case kidapi.IsUnknownPath(err):
		return fmt.Sprintf("404 from %s: does baseURL end in /api/v1?", path)
	case e.HTTPStatus != 0:
		return fmt.Sprintf("%d %s from %s", e.HTTPStatus, e.Code, path)
	case e.Code == kidapi.CodeTimeout:
		return "timeout on " + path
	}
	return fmt.Sprintf("%s on %s: %s", e.Code, path, e.Message)
}

// failingMessage is APIReady's message while the breaker is open.
func failingMessage(cause string) string {
	return fmt.Sprintf("%s; most of the product's calls to k-ID failed over the last %s, so session sync and recovery are paused; one probe goes out every %s to %s and the first that k-ID answers resumes them",
		cause, breakerWindow, breakerProbeFirst, breakerProbeMax)
}
