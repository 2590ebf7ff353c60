package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/kid-operator/kid-operator/internal/kidapi"
)

func TestFailureBackoffGrowsWithJitterAndNeverExceedsTheCap(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failures int
		low, max time.Duration
	}{
		{name: "the first failure waits about the base", failures: 1, low: failureBackoffBase * 9 / 10, max: failureBackoffBase},
		{name: "a count below one is the first failure", failures: 0, low: failureBackoffBase * 9 / 10, max: failureBackoffBase},
		{name: "the second failure waits about twice the base", failures: 2, low: 2 * failureBackoffBase * 9 / 10, max: 2 * failureBackoffBase},
		{name: "the tenth failure reaches the cap", failures: 10, low: failureBackoffMax * 9 / 10, max: failureBackoffMax},
		{name: "a thousand failures stay at the cap", failures: 1000, low: failureBackoffMax * 9 / 10, max: failureBackoffMax},
		{name: "a count past any shift stays at the cap", failures: int(^uint(0) >> 1), low: failureBackoffMax * 9 / 10, max: failureBackoffMax},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			seen := map[time.Duration]bool{}
			for range 200 {
				d := failureBackoff(tc.failures)
				g.Expect(d).To(BeNumerically(">=", tc.low))
				g.Expect(d).To(BeNumerically("<=", tc.max))
				seen[d] = true
			}
			g.Expect(len(seen)).To(BeNumerically(">", 1), "jittered")
		})
	}
}

func notFoundPath() error {
	return &kidapi.Error{Endpoint: kidapi.EndpointChallengeStatus, HTTPStatus: 404, Code: kidapi.CodeUnknownPath}
}

func TestBreakerStateMachine(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cause := describeFailure(notFoundPath())

	t.Run("a few failures never open it", func(t *testing.T) {
		g := NewWithT(t)
		var b breaker
		for i := range breakerMinCalls - 1 {
			g.Expect(b.record(t0.Add(time.Duration(i)*time.Second), true, cause)).To(BeFalse())
		}
		open, _, _ := b.state(t0.Add(10 * time.Second))
		g.Expect(open).To(BeFalse())
	})

	t.Run("half failed is not most", func(t *testing.T) {
		g := NewWithT(t)
		var b breaker
		for i := range 20 {
			g.Expect(b.record(t0, i%2 == 1, cause)).To(BeFalse())
		}
	})

	t.Run("most of the window failing opens it once, naming the failure", func(t *testing.T) {
		g := NewWithT(t)
		var b breaker
		opened := 0
		for i := range 30 {
			if b.record(t0.Add(time.Duration(i)*100*time.Millisecond), i%3 != 0, cause) {
				opened++
			}
		}
		g.Expect(opened).To(Equal(1))
		open, until, got := b.state(t0.Add(3 * time.Second))
		g.Expect(open).To(BeTrue())
		g.Expect(until).To(BeNumerically("~", breakerProbeFirst, 3*time.Second))
		g.Expect(got).To(Equal("404 from /challenge/get-status: does baseURL end in /api/v1?"))
	})

	t.Run("failures older than the window are forgotten", func(t *testing.T) {
		g := NewWithT(t)
		var b breaker
		for range breakerMinCalls - 1 {
			b.record(t0, true, cause)
		}
		g.Expect(b.record(t0.Add(breakerWindow+bucketWidth), true, cause)).To(BeFalse(), "the first nine left the window")
	})

	t.Run("while open, probes back off to the cap; an answer closes it and clears the window", func(t *testing.T) {
		g := NewWithT(t)
		var b breaker
		for range breakerMinCalls {
			b.record(t0, true, cause)
		}
		now, waits := t0, []time.Duration{}
		for range 8 {
			_, until, _ := b.state(now)
			waits = append(waits, until)
			now = now.Add(until)
			_, due, _ := b.state(now)
			g.Expect(due).To(BeZero(), "the probe is due")
			g.Expect(b.probed(now, false, "timeout on /session/get")).To(BeFalse())
		}
		g.Expect(waits[:5]).To(Equal([]time.Duration{breakerProbeFirst, 2 * breakerProbeFirst, 4 * breakerProbeFirst, 8 * breakerProbeFirst, breakerProbeMax}))
		for _, w := range waits {
			g.Expect(w).To(BeNumerically("<=", breakerProbeMax))
		}
		_, _, got := b.state(now)
		g.Expect(got).To(Equal("timeout on /session/get"), "the message follows the last probe")
		g.Expect(b.record(now, true, cause)).To(BeFalse(), "calls in flight while open are not counted")

		g.Expect(b.probed(now, true, "")).To(BeTrue())
		open, _, _ := b.state(now)
		g.Expect(open).To(BeFalse())
		for range breakerMinCalls - 1 {
			g.Expect(b.record(now, true, cause)).To(BeFalse(), "the window starts afresh")
		}
	})
}

func TestWhatCountsAgainstTheProduct(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
		msg  string
	}{
		{name: "an unknown path counts, and asks about /api/v1", err: notFoundPath(), want: true, msg: "404 from /challenge/get-status: does baseURL end in /api/v1?"},
		{name: "a 5xx counts", err: &kidapi.Error{Endpoint: kidapi.EndpointSession, HTTPStatus: 503, Code: "HTTP_503"}, want: true, msg: "503 HTTP_503 from /session/get"},
		{name: "a timeout counts", err: &kidapi.Error{Endpoint: kidapi.EndpointSession, Code: kidapi.CodeTimeout}, want: true, msg: "timeout on /session/get"},
		{name: "k-ID's 404 NOT_FOUND counts (the caller keeps propagation apart)", err: &kidapi.Error{Endpoint: kidapi.EndpointSession, HTTPStatus: 404, Code: kidapi.CodeNotFound}, want: true},
		{name: "a 400 is k-ID answering", err: &kidapi.Error{Endpoint: kidapi.EndpointSession, HTTPStatus: 400, Code: kidapi.CodeInvalidInput}},
		{name: "a 401 pauses the product by itself", err: &kidapi.Error{Endpoint: kidapi.EndpointSession, HTTPStatus: 401, Code: kidapi.CodeUnauthorized}},
		{name: "a 429 is k-ID's Retry-After", err: &kidapi.Error{Endpoint: kidapi.EndpointSession, HTTPStatus: 429, Code: kidapi.CodeRateLimited}},
		{name: "the product's own rate limiter is no failure", err: &kidapi.Error{Endpoint: kidapi.EndpointSession, Code: kidapi.CodeThrottled}},
		{name: "a shutdown is no failure", err: &kidapi.Error{Endpoint: kidapi.EndpointSession, Code: kidapi.CodeCanceled}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(failsProduct(tc.err)).To(Equal(tc.want))
			if tc.msg != "" {
				g.Expect(describeFailure(tc.err)).To(Equal(tc.msg))
			}
		})
	}
}
