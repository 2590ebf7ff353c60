package kidsim

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// statuses lists the status of every call the fake recorded, in order.
func statuses(f *Fake) []int {
	var out []int
	for _, r := range f.Requests() {
		out = append(out, r.Status)
	}
	return out
}

func TestWindowLimitCountsWholeSecondsAsKIDDoes(t *testing.T) {
	g := NewWithT(t)
	clk := newClock() // 12:00:00.000
	f := newTestFake(t, FakeOptions{Clock: clk})
	target := "/api/v1/challenge/get-status?challengeId=" + f.StartChallenge()
	g.Expect(f.SetWindowLimit(3)).To(Succeed())

	for range 3 {
		g.Expect(get(f, target).Code).To(Equal(200))
	}
	rec := get(f, target)
	g.Expect(rec.Code).To(Equal(429))
	g.Expect(rec.Header().Get("Retry-After")).To(Equal("1"))
	g.Expect(rec.Body.String()).To(BeEmpty(), "spec §4.1: no body")
	g.Expect(get(f, target, withHeader("Authorization", "Bearer other")).Code).To(Equal(401), "the key is checked before the rate")

	clk.Step(999 * time.Millisecond)
	g.Expect(get(f, target).Code).To(Equal(429), "the same second, refused calls not counted")
	clk.Step(time.Millisecond)
	for range 3 {
		g.Expect(get(f, target).Code).To(Equal(200), "a new second")
	}
	g.Expect(get(f, target).Code).To(Equal(429))

	// The bucket and the window both hold: the bucket's burst of 5 is
	// refused after the window's 3.
	clk.Step(time.Second)
	f.SetRateLimit(100, 5)
	for range 3 {
		g.Expect(get(f, target).Code).To(Equal(200))
	}
	g.Expect(get(f, target).Code).To(Equal(429))

	g.Expect(f.SetWindowLimit(-1)).To(MatchError(ContainSubstring("windowLimit")))
	g.Expect(f.SetWindowLimit(maxWindowLimit + 1)).To(MatchError(ContainSubstring("windowLimit")))
	g.Expect(f.SetWindowLimit(0)).To(Succeed())
	f.SetRateLimit(0, 0)
	for range 10 {
		g.Expect(get(f, target).Code).To(Equal(200), "off")
	}
	g.Expect(statuses(f)).To(Equal([]int{
		200, 200, 200, 429, 401, 429, 200, 200, 200, 429, 200, 200, 200, 429,
		200, 200, 200, 200, 200, 200, 200, 200, 200, 200,
	}))
}

func TestAPIFaultAnswers5xxPerEndpointOrForAll(t *testing.T) {
	g := NewWithT(t)
	f := newTestFake(t, FakeOptions{})
	c := f.StartChallenge()
	sid, err := f.ApproveChallenge(c, Approval{})
	g.Expect(err).NotTo(HaveOccurred())
	session := "/api/v1/session/get?sessionId=" + sid
	challenge := "/api/v1/challenge/get-status?challengeId=" + c

	g.Expect(f.SetAPIFault(EndpointSessionGet, APIFault{Status: 503, Calls: 2})).To(Succeed())
	for range 2 {
		rec := get(f, session)
		g.Expect(rec.Code).To(Equal(503))
		g.Expect(rec.Body.String()).To(BeEmpty(), "a gateway's 503, not k-ID's body")
	}
	g.Expect(get(f, session).Code).To(Equal(200), "two calls, then the fault is spent")
	g.Expect(f.APIFaults()).To(BeEmpty())

	g.Expect(f.SetAPIFault(AllEndpoints, APIFault{Status: 500})).To(Succeed())
	g.Expect(f.SetAPIFault(EndpointSessionGet, APIFault{Status: 502})).To(Succeed())
	rec := get(f, challenge)
	g.Expect(rec.Code).To(Equal(500))
	g.Expect(rec.Body.String()).To(MatchJSON(`{"error":"INTERNAL_ERROR","errorMessage":"An internal error occurred."}`))
	g.Expect(get(f, session).Code).To(Equal(502), "an endpoint's own fault wins over *")
	g.Expect(get(f, session, withHeader("Authorization", "")).Code).To(Equal(401), "the key is checked first")
	g.Expect(get(f, "/api/v1/nope").Code).To(Equal(404), "an unknown method is not faulted")

	g.Expect(f.SetAPIFault(AllEndpoints, APIFault{})).To(Succeed())
	g.Expect(f.SetAPIFault(EndpointSessionGet, APIFault{})).To(Succeed())
	g.Expect(get(f, challenge).Code).To(Equal(200), "cleared")
	g.Expect(statuses(f)).To(Equal([]int{503, 503, 200, 500, 502, 401, 404, 200}))

	for name, err := range map[string]error{
		"a status under 500":  f.SetAPIFault(EndpointSessionGet, APIFault{Status: 404}),
		"an unknown endpoint": f.SetAPIFault("session/list", APIFault{Status: 500}),
		"too many calls":      f.SetAPIFault(EndpointSessionGet, APIFault{Status: 500, Calls: maxFaultCalls + 1}),
		"too long a latency":  f.SetAPIFault(EndpointSessionGet, APIFault{Latency: 2 * maxLatency}),
	} {
		g.Expect(err).To(HaveOccurred(), name)
	}
	g.Expect(f.APIFaults()).To(BeEmpty(), "a refused fault sets nothing")
}

// callServed calls a served fake with a client of the given timeout.
func callServed(url string, timeout time.Duration) (int, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Accept", "application/json")
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

func TestAPIFaultSlowsOrHoldsCallsPastTheClientsTimeout(t *testing.T) {
	g := NewWithT(t)
	f := newTestFake(t, FakeOptions{})
	srv := httptest.NewServer(f.Handler())
	t.Cleanup(srv.Close)
	url := srv.URL + "/api/v1/challenge/get-status?challengeId=" + f.StartChallenge()
	timeout := func(err error) bool {
		var ne interface{ Timeout() bool }
		return errors.As(err, &ne) && ne.Timeout()
	}

	// A latency past the client's timeout times it out; the same client
	// gets its answer once the latency is gone.
	g.Expect(f.SetAPIFault(EndpointChallengeGetStatus, APIFault{Latency: time.Minute, Calls: 1})).To(Succeed())
	_, err := callServed(url, 200*time.Millisecond)
	g.Expect(timeout(err)).To(BeTrue(), "%v", err)
	g.Expect(callServed(url, 5*time.Second)).To(Equal(200))
	// A slow k-ID is slow for a wrong key too.
	g.Expect(f.SetAPIFault(EndpointChallengeGetStatus, APIFault{Latency: time.Minute, Calls: 1})).To(Succeed())
	_, err = (&http.Client{Timeout: 200 * time.Millisecond}).Get(url)
	g.Expect(timeout(err)).To(BeTrue(), "%v", err)

	// A hang holds the call until the client gives up: no answer, and the
	// fake records it with status 0.
	g.Expect(f.SetAPIFault(AllEndpoints, APIFault{Hang: true})).To(Succeed())
	_, err = callServed(url, 200*time.Millisecond)
	g.Expect(timeout(err)).To(BeTrue(), "%v", err)

	// Closing the fake lets a call that would hang for ever go, without an
	// answer.
	done := make(chan error, 1)
	go func() {
		_, err := callServed(url, 0)
		done <- err
	}()
	g.Eventually(func() int { return len(f.Requests()) }).Should(Equal(5))
	f.Close()
	g.Eventually(done, 10*time.Second).Should(Receive(HaveOccurred()))
	g.Expect(statuses(f)).To(Equal([]int{200, 200, 401, 0, 0}), "the latency's calls were answered (too late), the hung ones not at all")
}

func TestPropagationAnswers404Or400ForAsLongAsSet(t *testing.T) {
	g := NewWithT(t)
	clk := newClock()
	f := newTestFake(t, FakeOptions{Clock: clk})
	sid, err := f.ApproveChallenge(f.StartChallenge(), Approval{})
	g.Expect(err).NotTo(HaveOccurred())
	target := "/api/v1/session/get?sessionId=" + sid
	g.Expect(get(f, target).Code).To(Equal(200), "no delay by default")

	f.SetPropagationDelay(2 * time.Second)
	rec := get(f, target)
	g.Expect(rec.Code).To(Equal(404), "the delay applies to a session created before it was set")
	g.Expect(rec.Body.String()).To(MatchJSON(`{"error":"NOT_FOUND","errorMessage":"The session could not be found."}`))

	g.Expect(f.SetPropagationStatus(400)).To(Succeed())
	rec = get(f, target)
	g.Expect(rec.Code).To(Equal(400), "as the docs answer a deleted session")
	g.Expect(rec.Body.String()).To(MatchJSON(`{"error":"NOT_FOUND","errorMessage":"The session could not be found."}`))
	g.Expect(f.SetPropagationStatus(500)).To(MatchError(ContainSubstring("404 or 400")))

	clk.Step(2 * time.Second)
	g.Expect(get(f, target).Code).To(Equal(200), "propagated")
	g.Expect(statuses(f)).To(Equal([]int{200, 404, 400, 200}))
}

func TestChallengesPendingAnswersPendingUntilTheDecision(t *testing.T) {
	g := NewWithT(t)
	f, rc := deliveringFake(t, FakeOptions{})
	f.SetChallengesPending(true)
	open, passed, failed := f.StartChallenge(), f.StartChallenge(), f.StartChallenge()
	_, err := f.ApproveChallenge(passed, Approval{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.DenyChallenge(failed)).To(Succeed())
	status := func(c string) string {
		return get(f, "/api/v1/challenge/get-status?challengeId="+c).Body.String()
	}
	g.Expect(status(open)).To(MatchJSON(`{"challengeId":"` + open + `","status":"PENDING"}`))
	g.Expect(status(passed)).To(ContainSubstring(`"status":"PASS"`))
	g.Expect(status(failed)).To(ContainSubstring(`"status":"FAIL"`))
	g.Eventually(rc.received).Should(HaveLen(5))
	g.Expect(rc.received()).To(HaveEach(Not(ContainSubstring("PENDING"))), "the webhooks still say IN_PROGRESS")

	f.SetChallengesPending(false)
	g.Expect(status(open)).To(ContainSubstring(`"status":"IN_PROGRESS"`))
}

func TestRequestLogIsBoundedAndCountsEveryCall(t *testing.T) {
	g := NewWithT(t)
	const kept, calls = 50, 1000
	f, _ := deliveringFake(t, FakeOptions{MaxRecords: kept})
	for i := range calls {
		get(f, fmt.Sprintf("/api/v1/challenge/get-status?challengeId=c-%d", i))
	}
	got := f.Requests()
	g.Expect(got).To(HaveLen(kept))
	for i, r := range got {
		g.Expect(r.Query.Get("challengeId")).To(Equal(fmt.Sprintf("c-%d", calls-kept+i)), "the last %d, oldest first", kept)
	}
	g.Expect(f.RequestCount()).To(Equal(calls))
	f.mu.Lock()
	capacity := cap(f.requests.items)
	f.mu.Unlock()
	g.Expect(capacity).To(Equal(kept), "the ring never grew past its bound")

	// The admin API serves what is kept, and the count of all.
	rec := httptest.NewRecorder()
	f.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/kidsim/requests", nil))
	g.Expect(rec.Header().Get("X-Total-Count")).To(Equal("1000"))
	g.Expect(strings.Count(rec.Body.String(), `"endpoint"`)).To(Equal(kept))

	// Deliveries are bounded the same way.
	for range kept + 10 {
		f.StartChallenge()
	}
	g.Eventually(f.DeliveryCount, 10*time.Second).Should(Equal(kept + 10))
	g.Expect(f.Deliveries()).To(HaveLen(kept))

	// Without a bound, tests see every record.
	all := newTestFake(t, FakeOptions{})
	for range 3 * kept {
		get(all, "/api/v1/challenge/get-status?challengeId=x")
	}
	g.Expect(all.Requests()).To(HaveLen(3 * kept))
	g.Expect(all.RequestCount()).To(Equal(3 * kept))
}
