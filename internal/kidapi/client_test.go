package kidapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kid-operator/kid-operator/internal/outbound"
)

const testKey = "test-key-123"

var loopbackClient = outbound.New(outbound.Options{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})

// stepClock is the library's FakeClock for a client, on which a wait passes
// at once and is recorded: the client waits on timers (so that ctx can cut a
// wait short), and a timer started here steps the clock to its end, as
// FakeClock.Sleep does. Waits are asserted without being waited.
type stepClock struct {
	*testingclock.FakeClock
	mu    sync.Mutex
	waits []time.Duration
}

func newStepClock() *stepClock {
	return &stepClock{FakeClock: testingclock.NewFakeClock(time.Unix(1764000000, 0))}
}

// NewTimer returns a timer that has already fired, the clock stepped past it.
func (c *stepClock) NewTimer(d time.Duration) clock.Timer {
	t := c.FakeClock.NewTimer(d)
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	c.Sleep(d)
	return t
}

// Sleeps lists the waits the client made, in order.
func (c *stepClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// answer is one scripted response of the fake k-ID.
type answer struct {
	status int
	header map[string]string
	body   string
}

// fakeKID answers with the script in order, repeating the last answer, and
// records every request.
type fakeKID struct {
	mu       sync.Mutex
	script   []answer
	requests []*http.Request
	srv      *httptest.Server
}

func newFakeKID(t *testing.T, script ...answer) *fakeKID {
	f := &fakeKID{script: script}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		n := len(f.requests)
		f.requests = append(f.requests, r.Clone(context.Background()))
		a := f.script[min(n, len(f.script)-1)]
		f.mu.Unlock()
		for k, v := range a.header {
			w.Header().Set(k, v)
		}
		if a.body != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeKID) hits() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

func (f *fakeKID) request(i int) *http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[i]
}

func newTestClient(f *fakeKID, clock *stepClock) *Client {
	return New(Config{
		BaseURL:    f.srv.URL + "/api/v1/",
		APIKey:     testKey,
		Product:    "default/demo",
		HTTPClient: loopbackClient,
		Clock:      clock,
	})
}

const sessionBody = `{"session":{"ageStatus":"LEGAL_ADULT","dateOfBirth":"2005-04-15","etag":"6d9d24fc","jurisdiction":"US-CA","kuid":"123456","permissions":[{"enabled":true,"managedBy":"PLAYER","name":"ai-generated-avatars"},{"enabled":false,"managedBy":"GUARDIAN","name":"text-chat-private","verifiedAgeThreshold":"16"}],"allowances":[],"sessionId":"608616da-4fd2-4742-82bf-ec1d4ffd8187","status":"ACTIVE"},"status":"PASS"}`

func TestRequests(t *testing.T) {
	cases := []struct {
		name      string
		call      func(*Client) error
		body      string
		wantPath  string
		wantQuery url.Values
	}{
		{
			name:      "session/get sends sessionId and etag",
			call:      func(c *Client) error { _, err := c.GetSession(context.Background(), "s-1", "e-1"); return err },
			body:      sessionBody,
			wantPath:  "/api/v1/session/get",
			wantQuery: url.Values{"sessionId": {"s-1"}, "etag": {"e-1"}},
		},
		{
			name:      "session/get without an etag sends none",
			call:      func(c *Client) error { _, err := c.GetSession(context.Background(), "s-1", ""); return err },
			body:      sessionBody,
			wantPath:  "/api/v1/session/get",
			wantQuery: url.Values{"sessionId": {"s-1"}},
		},
		{
			name:      "session/get by kuid sends kuid",
			call:      func(c *Client) error { _, err := c.GetSessionByKUID(context.Background(), "k-1", ""); return err },
			body:      sessionBody,
			wantPath:  "/api/v1/session/get",
			wantQuery: url.Values{"kuid": {"k-1"}},
		},
		{
			name:      "challenge/get-status sends challengeId",
			call:      func(c *Client) error { _, err := c.ChallengeStatus(context.Background(), "c-1"); return err },
			body:      `{"status":"PASS"}`,
			wantPath:  "/api/v1/challenge/get-status",
			wantQuery: url.Values{"challengeId": {"c-1"}},
		},
		{
			name:      "age-verification/get-status sends id, not verificationId",
			call:      func(c *Client) error { _, err := c.VerificationStatus(context.Background(), "v-1"); return err },
			body:      `{"status":"PASS"}`,
			wantPath:  "/api/v1/age-verification/get-status",
			wantQuery: url.Values{"id": {"v-1"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFakeKID(t, answer{status: 200, body: tc.body})
			g.Expect(tc.call(newTestClient(f, newStepClock()))).To(Succeed())
			g.Expect(f.hits()).To(Equal(1))
			r := f.request(0)
			g.Expect(r.Method).To(Equal(http.MethodGet))
			g.Expect(r.URL.Path).To(Equal(tc.wantPath))
			g.Expect(r.URL.Query()).To(Equal(tc.wantQuery))
			g.Expect(r.Header.Get("Authorization")).To(Equal("Bearer " + testKey))
			g.Expect(r.Header.Get("Accept")).To(Equal("application/json"))
		})
	}
}

func TestGetSessionDecodes(t *testing.T) {
	g := NewWithT(t)
	f := newFakeKID(t, answer{status: 200, body: sessionBody})
	s, err := newTestClient(f, newStepClock()).GetSession(context.Background(), "608616da-4fd2-4742-82bf-ec1d4ffd8187", "")
	g.Expect(err).NotTo(HaveOccurred())
	sixteen := int32(16)
	g.Expect(s).To(Equal(&Session{
		SessionID: "608616da-4fd2-4742-82bf-ec1d4ffd8187", KUID: "123456", AgeStatus: "LEGAL_ADULT",
		Jurisdiction: "US-CA", Status: "ACTIVE", ETag: "6d9d24fc", DateOfBirth: "2005-04-15",
		Permissions: []Permission{
			{Name: "ai-generated-avatars", Enabled: true, ManagedBy: "PLAYER"},
			{Name: "text-chat-private", Enabled: false, ManagedBy: "GUARDIAN", VerifiedAgeThreshold: &sixteen},
		},
	}))
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name        string
		script      []answer
		call        func(*Client) error
		wantHits    int
		check       func(g *WithT, err error)
		wantSleeps  int
		wantMessage string
	}{
		{
			name:   "304 is ErrNotModified, not retried",
			script: []answer{{status: 304}},
			call:   getSession, wantHits: 1,
			check: func(g *WithT, err error) { g.Expect(err).To(MatchError(ErrNotModified)) },
		},
		{
			name:   "400 NOT_FOUND is a deleted session, not retried",
			script: []answer{{status: 400, body: `{"error":"NOT_FOUND","errorMessage":"Session not found"}`}},
			call:   getSession, wantHits: 1,
			check: func(g *WithT, err error) {
				g.Expect(IsNotFound(err)).To(BeTrue())
				g.Expect(IsPropagating(err)).To(BeFalse())
				_, retry := RetryAfter(err)
				g.Expect(retry).To(BeFalse())
			},
			wantMessage: "k-ID session/get: HTTP 400 NOT_FOUND: Session not found",
		},
		{
			name:   "the old errorMsg field is read as the message",
			script: []answer{{status: 400, body: `{"error":"INVALID_INPUT","errorMsg":"Bad challenge"}`}},
			call:   challengeStatus, wantHits: 1,
			check: func(g *WithT, err error) {
				var e *Error
				g.Expect(errors.As(err, &e)).To(BeTrue())
				g.Expect(e.Code).To(Equal(CodeInvalidInput))
				g.Expect(e.Message).To(Equal("Bad challenge"))
			},
			wantMessage: "k-ID challenge/get-status: HTTP 400 INVALID_INPUT: Bad challenge",
		},
		{
			name:   "k-ID's 404 NOT_FOUND from session/get is retried, then reported as propagating with a backoff",
			script: []answer{{status: 404, body: `{"error":"NOT_FOUND","errorMessage":"The session could not be found."}`}},
			call:   getSession, wantHits: 3, wantSleeps: 2,
			check: func(g *WithT, err error) {
				g.Expect(IsPropagating(err)).To(BeTrue())
				g.Expect(IsUnknownPath(err)).To(BeFalse())
				g.Expect(IsNotFound(err)).To(BeFalse())
				d, retry := RetryAfter(err)
				g.Expect(retry).To(BeTrue())
				g.Expect(d).To(BeNumerically("~", time.Second, 200*time.Millisecond))
			},
		},
		{
			name:   "k-ID's 404 NOT_FOUND from challenge/get-status is never propagation",
			script: []answer{{status: 404, body: `{"error":"NOT_FOUND","errorMessage":"Unknown API method."}`}},
			call:   challengeStatus, wantHits: 3, wantSleeps: 2,
			check: func(g *WithT, err error) {
				g.Expect(IsPropagating(err)).To(BeFalse())
				g.Expect(IsUnknownPath(err)).To(BeFalse())
			},
		},
		{
			name:   "a 404 without k-ID's body is an unknown path: not propagation, not retried",
			script: []answer{{status: 404, body: "404 page not found\n"}},
			call:   getSession, wantHits: 1,
			check: func(g *WithT, err error) {
				g.Expect(IsUnknownPath(err)).To(BeTrue())
				g.Expect(IsPropagating(err)).To(BeFalse())
				g.Expect(IsNotFound(err)).To(BeFalse())
				_, retry := RetryAfter(err)
				g.Expect(retry).To(BeFalse())
			},
			wantMessage: "k-ID session/get: HTTP 404 UNKNOWN_PATH: no such path; does the base URL end in /api/v1?",
		},
		{
			name:   "a 404 with no body at all is an unknown path",
			script: []answer{{status: 404}},
			call:   challengeStatus, wantHits: 1,
			check: func(g *WithT, err error) { g.Expect(IsUnknownPath(err)).To(BeTrue()) },
		},
		{
			name:   "401 is unauthorized, not retried",
			script: []answer{{status: 401, body: `{"error":"UNAUTHORIZED","errorMessage":"Invalid API key"}`}},
			call:   verificationStatus, wantHits: 1,
			check: func(g *WithT, err error) {
				g.Expect(IsUnauthorized(err)).To(BeTrue())
				_, retry := RetryAfter(err)
				g.Expect(retry).To(BeFalse())
			},
		},
		{
			name:   "403 is not retried",
			script: []answer{{status: 403}},
			call:   getSession, wantHits: 1,
			check: func(g *WithT, err error) {
				_, retry := RetryAfter(err)
				g.Expect(retry).To(BeFalse())
			},
			wantMessage: "k-ID session/get: HTTP 403 HTTP_403",
		},
		{
			name:   "429 with Retry-After 120 returns at once with the wait",
			script: []answer{{status: 429, header: map[string]string{"Retry-After": "120"}}},
			call:   getSession, wantHits: 1,
			check: func(g *WithT, err error) {
				var e *Error
				g.Expect(errors.As(err, &e)).To(BeTrue())
				g.Expect(e.Code).To(Equal(CodeRateLimited))
				d, retry := RetryAfter(err)
				g.Expect(retry).To(BeTrue())
				g.Expect(d).To(Equal(120 * time.Second))
			},
		},
		{
			name:   "429 with a Retry-After of a day is capped at an hour",
			script: []answer{{status: 429, header: map[string]string{"Retry-After": "86400"}}},
			call:   getSession, wantHits: 1,
			check: func(g *WithT, err error) {
				d, _ := RetryAfter(err)
				g.Expect(d).To(Equal(time.Hour))
			},
		},
		{
			name:   "500 three times is INTERNAL_ERROR after three attempts",
			script: []answer{{status: 500, body: `{"error":"INTERNAL_ERROR","errorMessage":"oops"}`}},
			call:   challengeStatus, wantHits: 3, wantSleeps: 2,
			check: func(g *WithT, err error) {
				var e *Error
				g.Expect(errors.As(err, &e)).To(BeTrue())
				g.Expect(e.Code).To(Equal(CodeInternalError))
				g.Expect(e.Retryable).To(BeTrue())
			},
		},
		{
			name:   "personal data in k-ID's message never reaches the error text",
			script: []answer{{status: 400, body: `{"error":"INVALID_INPUT","errorMessage":"approver parent@example.com born 2011-07-12 kuid 7a1f2c3d-4e5f-6789-abcd-ef0123456789 or 1234567 is wrong"}`}},
			call:   getSession, wantHits: 1,
			wantMessage: "k-ID session/get: HTTP 400 INVALID_INPUT: approver [email] born [date] kuid [id] or [id] is wrong",
		},
		{
			name:   "a long message is cut to 200 bytes",
			script: []answer{{status: 400, body: `{"error":"INVALID_INPUT","errorMessage":"` + strings.Repeat("é", 300) + `"}`}},
			call:   getSession, wantHits: 1,
			check: func(g *WithT, err error) {
				var e *Error
				g.Expect(errors.As(err, &e)).To(BeTrue())
				g.Expect(len(e.Message)).To(Equal(200))
				g.Expect(e.Message).To(Equal(strings.Repeat("é", 100)))
			},
		},
		{
			name:   "an error body that is not JSON leaves the code to the status",
			script: []answer{{status: 502, body: `<html>bad gateway</html>`}},
			call:   getSession, wantHits: 3, wantSleeps: 2,
			wantMessage: "k-ID session/get: HTTP 502 HTTP_502",
		},
		{
			name:   "a success body that does not parse is an invalid response, not retried",
			script: []answer{{status: 200, body: `not json`}},
			call:   getSession, wantHits: 1,
			check: func(g *WithT, err error) {
				var e *Error
				g.Expect(errors.As(err, &e)).To(BeTrue())
				g.Expect(e.Code).To(Equal(CodeInvalidResponse))
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFakeKID(t, tc.script...)
			clock := newStepClock()
			err := tc.call(newTestClient(f, clock))
			g.Expect(err).To(HaveOccurred())
			g.Expect(f.hits()).To(Equal(tc.wantHits))
			g.Expect(clock.Sleeps()).To(HaveLen(tc.wantSleeps))
			// The query string holds ids; the target's address is internal.
			g.Expect(err.Error()).NotTo(ContainSubstring("the-id"))
			g.Expect(err.Error()).NotTo(ContainSubstring("127.0.0.1"))
			if tc.check != nil {
				tc.check(g, err)
			}
			if tc.wantMessage != "" {
				g.Expect(err.Error()).To(Equal(tc.wantMessage))
			}
		})
	}
}

func getSession(c *Client) error {
	_, err := c.GetSession(context.Background(), "the-id", "")
	return err
}

func challengeStatus(c *Client) error {
	_, err := c.ChallengeStatus(context.Background(), "the-id")
	return err
}

func verificationStatus(c *Client) error {
	_, err := c.VerificationStatus(context.Background(), "the-id")
	return err
}

func TestRetriesThatSucceed(t *testing.T) {
	cases := []struct {
		name       string
		script     []answer
		wantSleeps []time.Duration
		tolerance  time.Duration
	}{
		{
			name:       "429 with Retry-After 1 waits a second, then succeeds",
			script:     []answer{{status: 429, header: map[string]string{"Retry-After": "1"}}, {status: 200, body: `{"status":"PASS"}`}},
			wantSleeps: []time.Duration{time.Second},
		},
		{
			name:       "429 without Retry-After waits a second, then succeeds",
			script:     []answer{{status: 429}, {status: 200, body: `{"status":"PASS"}`}},
			wantSleeps: []time.Duration{time.Second},
		},
		{
			name:       "500 then 200 succeeds after one backoff",
			script:     []answer{{status: 500, body: `{"error":"INTERNAL_ERROR","errorMessage":"x"}`}, {status: 200, body: `{"status":"PASS"}`}},
			wantSleeps: []time.Duration{BaseBackoff},
			tolerance:  BaseBackoff / 5,
		},
		{
			name:       "404 twice then 200 succeeds after two growing backoffs",
			script:     []answer{{status: 404, body: `{"error":"NOT_FOUND"}`}, {status: 404, body: `{"error":"NOT_FOUND"}`}, {status: 200, body: `{"status":"PASS"}`}},
			wantSleeps: []time.Duration{BaseBackoff, 2 * BaseBackoff},
			tolerance:  2 * BaseBackoff / 5,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFakeKID(t, tc.script...)
			clock := newStepClock()
			st, err := newTestClient(f, clock).ChallengeStatus(context.Background(), "c-1")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(st.Status).To(Equal(StatusPass))
			g.Expect(f.hits()).To(Equal(len(tc.script)))
			sleeps := clock.Sleeps()
			g.Expect(sleeps).To(HaveLen(len(tc.wantSleeps)))
			for i, want := range tc.wantSleeps {
				g.Expect(sleeps[i]).To(BeNumerically("~", want, tc.tolerance))
			}
		})
	}
}

func TestEveryRetryTakesAToken(t *testing.T) {
	g := NewWithT(t)
	f := newFakeKID(t, answer{status: 500}, answer{status: 200, body: `{"status":"PASS"}`})
	clock := newStepClock()
	c := New(Config{BaseURL: f.srv.URL, HTTPClient: loopbackClient, RPS: 1, Burst: 1, Clock: clock})
	_, err := c.ChallengeStatus(context.Background(), "c-1")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.hits()).To(Equal(2))
	// The backoff, then the rest of the second the retry's token needs.
	sleeps := clock.Sleeps()
	g.Expect(sleeps).To(HaveLen(2))
	g.Expect(sleeps[0]).To(BeNumerically("~", BaseBackoff, BaseBackoff/5))
	g.Expect(sleeps[0] + sleeps[1]).To(BeNumerically("~", time.Second, time.Millisecond))
}

func TestTransportFailures(t *testing.T) {
	cases := []struct {
		name          string
		client        func(*fakeKID) *http.Client
		wantHits      int
		wantCode      string
		wantRetryable bool
		wantCause     error
		wantMessage   string
	}{
		{
			name:          "the default client refuses loopback: not retried, never sent",
			client:        func(*fakeKID) *http.Client { return nil },
			wantCode:      CodeNetwork,
			wantCause:     outbound.ErrAddressRefused,
			wantMessage:   "k-ID session/get: NETWORK: address refused by the outbound guard",
			wantRetryable: false,
		},
		{
			name: "a closed server is a retryable network error without its address",
			client: func(f *fakeKID) *http.Client {
				f.srv.Close()
				return loopbackClient
			},
			wantCode:      CodeNetwork,
			wantMessage:   "k-ID session/get: NETWORK: connection refused",
			wantRetryable: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFakeKID(t, answer{status: 200, body: sessionBody})
			clock := newStepClock()
			c := New(Config{BaseURL: f.srv.URL, APIKey: testKey, HTTPClient: tc.client(f), Clock: clock})
			_, err := c.GetSession(context.Background(), "the-id", "")
			var e *Error
			g.Expect(errors.As(err, &e)).To(BeTrue())
			g.Expect(e.Code).To(Equal(tc.wantCode))
			g.Expect(e.Retryable).To(Equal(tc.wantRetryable))
			g.Expect(err.Error()).To(Equal(tc.wantMessage))
			if tc.wantCause != nil {
				g.Expect(err).To(MatchError(tc.wantCause))
			}
			g.Expect(f.hits()).To(Equal(tc.wantHits))
		})
	}
}

func TestCancelledContextStopsTheCall(t *testing.T) {
	g := NewWithT(t)
	f := newFakeKID(t, answer{status: 500})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := newTestClient(f, newStepClock()).GetSession(ctx, "the-id", "")
	g.Expect(err).To(MatchError(context.Canceled))
	_, retry := RetryAfter(err)
	g.Expect(retry).To(BeFalse())
	g.Expect(f.hits()).To(BeZero())
}

func TestChallengeStatusShapes(t *testing.T) {
	cases := []struct {
		name string
		body string
		want ChallengeStatus
	}{
		{name: "a plain status is read", body: `{"status":"PASS","sessionId":"s-1","kuid":"k-1","approverEmail":"parent@example.com","dob":"2011-07-12"}`,
			want: ChallengeStatus{ChallengeID: "c-1", Status: "PASS", SessionID: "s-1", KUID: "k-1", ApproverEmail: "parent@example.com", DOB: "2011-07-12"}},
		{name: "a status object's state is read", body: `{"status":{"state":"PASS"},"sessionId":"s-1"}`,
			want: ChallengeStatus{ChallengeID: "c-1", Status: "PASS", SessionID: "s-1"}},
		{name: "lower case is upper-cased", body: `{"status":"fail"}`,
			want: ChallengeStatus{ChallengeID: "c-1", Status: "FAIL"}},
		{name: "PENDING is read as IN_PROGRESS", body: `{"status":"PENDING"}`,
			want: ChallengeStatus{ChallengeID: "c-1", Status: "IN_PROGRESS"}},
		{name: "IN_PROGRESS stays", body: `{"status":"IN_PROGRESS"}`,
			want: ChallengeStatus{ChallengeID: "c-1", Status: "IN_PROGRESS"}},
		{name: "challengeId in the answer wins", body: `{"challengeId":"c-9","id":"c-8","status":"PASS"}`,
			want: ChallengeStatus{ChallengeID: "c-9", Status: "PASS"}},
		{name: "id is read when challengeId is absent", body: `{"id":"c-8","status":"PASS"}`,
			want: ChallengeStatus{ChallengeID: "c-8", Status: "PASS"}},
		{name: "a numeric kuid is read as text", body: `{"status":"PASS","kuid":123456}`,
			want: ChallengeStatus{ChallengeID: "c-1", Status: "PASS", KUID: "123456"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFakeKID(t, answer{status: 200, body: tc.body})
			got, err := newTestClient(f, newStepClock()).ChallengeStatus(context.Background(), "c-1")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(*got).To(Equal(tc.want))
		})
	}
}

func TestChallengeStatusWithoutStatusIsAnInvalidResponse(t *testing.T) {
	g := NewWithT(t)
	f := newFakeKID(t, answer{status: 200, body: `{"sessionId":"s-1"}`})
	_, err := newTestClient(f, newStepClock()).ChallengeStatus(context.Background(), "c-1")
	var e *Error
	g.Expect(errors.As(err, &e)).To(BeTrue())
	g.Expect(e.Code).To(Equal(CodeInvalidResponse))
}

func TestVerificationStatusShapes(t *testing.T) {
	i := func(v int32) *int32 { return &v }
	cases := []struct {
		name string
		body string
		want VerificationStatus
	}{
		{name: "the webhook's shape is read", body: `{"id":"v-1","status":"PASS","method":"id-document","ageCategory":"adult","age":{"low":43,"high":43},"dob":"1981-06-20"}`,
			want: VerificationStatus{ID: "v-1", Status: "PASS", Method: "id-document", AgeCategory: "adult", DOB: "1981-06-20", AgeLow: i(43), AgeHigh: i(43)}},
		{name: "numbers as strings are read", body: `{"status":"FAIL","failureReason":"age-criteria-not-met","age":{"low":"13","high":"17"}}`,
			want: VerificationStatus{ID: "v-1", Status: "FAIL", FailureReason: "age-criteria-not-met", AgeLow: i(13), AgeHigh: i(17)}},
		{name: "PENDING stays PENDING", body: `{"status":"pending"}`,
			want: VerificationStatus{ID: "v-1", Status: "PENDING"}},
		{name: "an age that is not a number is absent, not a failure", body: `{"status":"PASS","age":{"low":"unknown","high":null}}`,
			want: VerificationStatus{ID: "v-1", Status: "PASS"}},
		{name: "one number is an exact age", body: `{"status":"PASS","age":21}`,
			want: VerificationStatus{ID: "v-1", Status: "PASS", AgeLow: i(21), AgeHigh: i(21)}},
		{name: "a status object's state is read", body: `{"status":{"state":"IN_PROGRESS"}}`,
			want: VerificationStatus{ID: "v-1", Status: "IN_PROGRESS"}},
		{name: "a status revoked, in any case, is a revocation with its reason", body: `{"id":"v-1","status":"Revoked","revokedReason":"fraudulent-activity-detected"}`,
			want: VerificationStatus{ID: "v-1", Status: "REVOKED", Revoked: true, RevokedReason: "fraudulent-activity-detected"}},
		{name: "a revoked flag on a PASS is a revocation", body: `{"status":"PASS","revoked":"true","reason":"provider-reported-error"}`,
			want: VerificationStatus{ID: "v-1", Status: "PASS", Revoked: true, RevokedReason: "provider-reported-error"}},
		{name: "a revokedAt is a revocation without a reason", body: `{"status":"PASS","revokedAt":"2026-01-02T03:04:05Z"}`,
			want: VerificationStatus{ID: "v-1", Status: "PASS", Revoked: true}},
		{name: "a reason alone, or revoked false, is no revocation", body: `{"status":"PASS","revoked":false,"reason":"x"}`,
			want: VerificationStatus{ID: "v-1", Status: "PASS"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFakeKID(t, answer{status: 200, body: tc.body})
			got, err := newTestClient(f, newStepClock()).VerificationStatus(context.Background(), "v-1")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(*got).To(Equal(tc.want))
		})
	}
}

func TestReserve(t *testing.T) {
	g := NewWithT(t)
	f := newFakeKID(t, answer{status: 200, body: sessionBody})
	clock := newStepClock()
	c := New(Config{BaseURL: f.srv.URL, HTTPClient: loopbackClient, RPS: 2, Burst: 1, Clock: clock})

	g.Expect(c.Reserve()).To(BeZero(), "a full bucket gives its token")
	g.Expect(c.Reserve()).To(Equal(500*time.Millisecond), "an empty bucket gives a delay")
	g.Expect(c.Reserve()).To(Equal(500*time.Millisecond), "a refused Reserve took no token")

	_, err := c.WithReservation().GetSession(context.Background(), "s-1", "")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.hits()).To(Equal(1))
	g.Expect(clock.Sleeps()).To(BeEmpty(), "the reserved call did not wait")
	g.Expect(c.Reserve()).To(Equal(500*time.Millisecond), "the reserved call took no second token")

	clock.Step(500 * time.Millisecond)
	g.Expect(c.Reserve()).To(BeZero(), "the bucket refilled")
}

func TestReservedCallNeverHoldsAWorker(t *testing.T) {
	cases := []struct {
		name      string
		script    []answer
		wantCode  string
		wantAfter time.Duration
		wantHits  int
	}{
		{
			name:      "a second call through one reservation is throttled, not sent",
			script:    []answer{{status: 200, body: sessionBody}},
			wantCode:  CodeThrottled,
			wantAfter: 10 * time.Second,
			wantHits:  1,
		},
		{
			name:      "a retry that would wait on the limiter returns the failure with the wait",
			script:    []answer{{status: 500}},
			wantCode:  CodeInternalError,
			wantAfter: 10 * time.Second,
			wantHits:  1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFakeKID(t, tc.script...)
			clock := newStepClock()
			c := New(Config{BaseURL: f.srv.URL, HTTPClient: loopbackClient, RPS: 0.1, Burst: 1, Clock: clock})
			g.Expect(c.Reserve()).To(BeZero())
			r := c.WithReservation()
			_, err := r.GetSession(context.Background(), "s-1", "")
			if tc.wantCode != CodeThrottled {
				g.Expect(err).To(HaveOccurred())
			} else {
				g.Expect(err).NotTo(HaveOccurred())
				_, err = r.GetSession(context.Background(), "s-1", "")
			}
			var e *Error
			g.Expect(errors.As(err, &e)).To(BeTrue())
			g.Expect(e.Code).To(Equal(tc.wantCode))
			// The limiter's wait, less what was already slept of the backoff.
			g.Expect(e.RetryAfter).To(BeNumerically("~", tc.wantAfter, time.Second))
			g.Expect(e.RetryAfter).To(BeNumerically(">", DefaultMaxInlineWait))
			g.Expect(f.hits()).To(Equal(tc.wantHits))
		})
	}
}

// TestRateAsMeasuredAtTheServer really waits (about two seconds): 40 calls
// from 8 goroutines at 20 per second with a burst of 1. The client admits
// at most 21 into any second; at the server, a stalled goroutine's request
// can land right behind the next one's (CI saw 22 on a loaded machine), so
// a second may hold two more, and the 40 must span the 39 intervals less
// 100 ms. A limiter a quarter too fast (25 a second) put 26 into a
// second and spanned 1.56 s: it fails both.
func TestRateAsMeasuredAtTheServer(t *testing.T) {
	if testing.Short() {
		t.Skip("takes two seconds")
	}
	g := NewWithT(t)
	var (
		mu       sync.Mutex
		arrivals []time.Time
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		arrivals = append(arrivals, time.Now())
		mu.Unlock()
		_, _ = io.WriteString(w, `{"status":"PASS"}`)
	}))
	defer srv.Close()
	c := New(Config{BaseURL: srv.URL, HTTPClient: loopbackClient, RPS: 20, Burst: 1, Product: "test/rate"})

	var wg sync.WaitGroup
	var failures atomic.Int32
	calls := make(chan int, 40)
	for i := range 40 {
		calls <- i
	}
	close(calls)
	for range 8 {
		wg.Go(func() {
			for range calls {
				if _, err := c.ChallengeStatus(context.Background(), "c-1"); err != nil {
					failures.Add(1)
				}
			}
		})
	}
	wg.Wait()
	g.Expect(failures.Load()).To(BeZero())

	mu.Lock()
	defer mu.Unlock()
	g.Expect(arrivals).To(HaveLen(40))
	sort.Slice(arrivals, func(i, j int) bool { return arrivals[i].Before(arrivals[j]) })
	most := 0
	for i := range arrivals {
		n := 0
		for j := i; j < len(arrivals) && arrivals[j].Sub(arrivals[i]) < time.Second; j++ {
			n++
		}
		most = max(most, n)
	}
	g.Expect(most).To(BeNumerically("<=", 21+2))
	g.Expect(arrivals[len(arrivals)-1].Sub(arrivals[0])).To(BeNumerically(">=", 39*50*time.Millisecond-100*time.Millisecond))
	g.Expect(testutil.ToFloat64(ratelimitedTotal.WithLabelValues("test/rate"))).To(BeNumerically(">", 0))
}

func TestMetricsCountEveryAttempt(t *testing.T) {
	g := NewWithT(t)
	f := newFakeKID(t, answer{status: 500}, answer{status: 200, body: `{"status":"PASS"}`})
	clock := newStepClock()
	c := New(Config{BaseURL: f.srv.URL, HTTPClient: loopbackClient, Product: "test/metrics", Clock: clock})
	_, err := c.ChallengeStatus(context.Background(), "c-1")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(testutil.ToFloat64(requestsTotal.WithLabelValues("test/metrics", EndpointChallengeStatus, "500"))).To(Equal(1.0))
	g.Expect(testutil.ToFloat64(requestsTotal.WithLabelValues("test/metrics", EndpointChallengeStatus, "200"))).To(Equal(1.0))
}

func TestBaseURLPicksTheEnvironment(t *testing.T) {
	cases := []struct {
		name, env, override, want string
	}{
		{name: "live is the live URL", env: "live", want: LiveBaseURL},
		{name: "test is the test URL", env: "test", want: TestBaseURL},
		{name: "anything else is the test URL", env: "", want: TestBaseURL},
		{name: "an override wins, its trailing slash trimmed", env: "live", override: "http://kidsim.kid-system:8080/api/v1/", want: "http://kidsim.kid-system:8080/api/v1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(BaseURL(tc.env, tc.override)).To(Equal(tc.want))
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name, header string
		want         time.Duration
	}{
		{name: "seconds are read", header: "7", want: 7 * time.Second},
		{name: "a missing header is a second", header: "", want: time.Second},
		{name: "junk is a second", header: "soon", want: time.Second},
		{name: "an HTTP date is the time until it", header: now.Add(90 * time.Second).Format(http.TimeFormat), want: 90 * time.Second},
		{name: "a date in the past is no wait", header: now.Add(-time.Minute).Format(http.TimeFormat), want: 0},
		{name: "more than an hour is an hour", header: "999999999999", want: time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(parseRetryAfter(tc.header, now)).To(Equal(tc.want))
		})
	}
}

func TestA429HoldsEveryCallOfTheProduct(t *testing.T) {
	g := NewWithT(t)
	f := newFakeKID(t, answer{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "120"}}, answer{status: http.StatusOK, body: sessionBody})
	clock := newStepClock()
	c := newTestClient(f, clock)

	_, err := c.GetSession(context.Background(), "s-1", "")
	wait, ok := RetryAfter(err)
	g.Expect(ok).To(BeTrue())
	g.Expect(wait).To(Equal(120 * time.Second))

	// Another worker of the same product, a moment later: it is told to
	// wait out the rest of k-ID's Retry-After and sends nothing.
	clock.Step(20 * time.Second)
	g.Expect(c.Reserve()).To(Equal(100 * time.Second))
	_, err = c.ChallengeStatus(context.Background(), "c-1")
	wait, _ = RetryAfter(err)
	g.Expect(wait).To(Equal(100 * time.Second))
	g.Expect(f.hits()).To(Equal(1), "no call reached k-ID inside its Retry-After")

	clock.Step(100 * time.Second)
	g.Expect(c.Reserve()).To(BeZero())
	_, err = c.WithReservation().GetSession(context.Background(), "s-1", "")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.hits()).To(Equal(2))
}

func TestBookGivesWaitingCallersDistinctSlots(t *testing.T) {
	g := NewWithT(t)
	clock := newStepClock()
	c := New(Config{BaseURL: "http://127.0.0.1:1/api/v1", APIKey: testKey, RPS: 10, Burst: 1, Clock: clock, HTTPClient: loopbackClient})

	g.Expect(c.Book()).To(BeZero(), "the burst is free")
	var slots []time.Duration
	for range 5 {
		slots = append(slots, c.Book())
	}
	g.Expect(slots).To(Equal([]time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 400 * time.Millisecond, 500 * time.Millisecond}),
		"each waiting caller gets its own slot, a rate-interval after the last")
	g.Expect(c.Reserve()).To(BeZero(), "a slot is not a token: the token is taken when the call is made")
	g.Expect(c.Reserve()).To(Equal(100*time.Millisecond), "and tokens keep the rate whatever was booked")
}
