package kidsim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kid-operator/kid-operator/internal/kid"
)

const testKey = "test-api-key"

// newClock is a clock the test moves, for the API's time-dependent
// answers.
func newClock() *testingclock.FakeClock {
	return testingclock.NewFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
}

func newTestFake(t *testing.T, o FakeOptions) *Fake {
	t.Helper()
	if o.APIKey == "" {
		o.APIKey = testKey
	}
	f := NewFake(o)
	t.Cleanup(f.Close)
	return f
}

// get calls the fake's REST API as a correct client does, unless the
// options say otherwise.
func get(f *Fake, target string, opts ...func(*http.Request)) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, target, nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Accept", "application/json")
	for _, o := range opts {
		o(req)
	}
	rec := httptest.NewRecorder()
	f.Handler().ServeHTTP(rec, req)
	return rec
}

func withHeader(name, value string) func(*http.Request) {
	return func(r *http.Request) {
		if value == "" {
			r.Header.Del(name)
		} else {
			r.Header.Set(name, value)
		}
	}
}

func withMethod(m string) func(*http.Request) { return func(r *http.Request) { r.Method = m } }

func sessionOf(f *Fake, id string) Session {
	for _, s := range f.State().Sessions {
		if s.Session.SessionID == id {
			return s.Session
		}
	}
	return Session{}
}

func TestAPIAnswersAsKID(t *testing.T) {
	f := newTestFake(t, FakeOptions{})
	pending := f.StartChallenge()
	passed := f.StartChallenge()
	sid, err := f.ApproveChallenge(passed, Approval{KUID: "kuid-1"})
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	failed := f.StartChallenge()
	NewWithT(t).Expect(f.DenyChallenge(failed)).To(Succeed())
	vPending, vPass, vFail := f.StartVerification(), f.StartVerification(), f.StartVerification()
	NewWithT(t).Expect(f.CompleteVerification(vPass, true)).To(Succeed())
	NewWithT(t).Expect(f.CompleteVerification(vFail, false)).To(Succeed())
	etag := sessionOf(f, sid).Etag

	sessionJSON := `{"session":{"ageStatus":"DIGITAL_MINOR","dateOfBirth":"2013-04-01","etag":"` + etag + `","jurisdiction":"US-CA","kuid":"kuid-1",
		"permissions":[{"enabled":false,"managedBy":"GUARDIAN","name":"text-chat-private"},{"enabled":true,"managedBy":"PLAYER","name":"ai-generated-avatars"},
		{"enabled":false,"managedBy":"PROHIBITED","name":"voice-chat"},{"enabled":false,"managedBy":"PLAYER","name":"purchases","verifiedAgeThreshold":18}],
		"allowances":[],"sessionId":"` + sid + `","status":"ACTIVE"},"status":"PASS"}`

	cases := []struct {
		name       string
		target     string
		opts       []func(*http.Request)
		wantStatus int
		// wantBody is the JSON expected; "" means no body at all.
		wantBody string
	}{
		{name: "session by id is 200 with k-ID's shape", target: "/api/v1/session/get?sessionId=" + sid, wantStatus: 200, wantBody: sessionJSON},
		{name: "session by kuid is 200", target: "/api/v1/session/get?kuid=kuid-1", wantStatus: 200, wantBody: sessionJSON},
		{name: "session with its etag is 304 without a body", target: "/api/v1/session/get?sessionId=" + sid + "&etag=" + etag, wantStatus: 304},
		{name: "session with an old etag is 200", target: "/api/v1/session/get?sessionId=" + sid + "&etag=0123", wantStatus: 200, wantBody: sessionJSON},
		{name: "unknown session is 400 NOT_FOUND", target: "/api/v1/session/get?sessionId=nope", wantStatus: 400,
			wantBody: `{"error":"NOT_FOUND","errorMessage":"The session could not be found."}`},
		{name: "unknown kuid is 400 NOT_FOUND", target: "/api/v1/session/get?kuid=nope", wantStatus: 400,
			wantBody: `{"error":"NOT_FOUND","errorMessage":"The session could not be found."}`},
		{name: "session without id or kuid is 400 INVALID_INPUT", target: "/api/v1/session/get", wantStatus: 400,
			wantBody: `{"error":"INVALID_INPUT","errorMessage":"Either sessionId or kuid is required."}`},
		{name: "challenge in progress", target: "/api/v1/challenge/get-status?challengeId=" + pending, wantStatus: 200,
			wantBody: `{"challengeId":"` + pending + `","status":"IN_PROGRESS"}`},
		{name: "passed challenge names its session and kuid", target: "/api/v1/challenge/get-status?challengeId=" + passed, wantStatus: 200,
			wantBody: `{"challengeId":"` + passed + `","status":"PASS","sessionId":"` + sid + `","kuid":"kuid-1"}`},
		{name: "failed challenge", target: "/api/v1/challenge/get-status?challengeId=" + failed, wantStatus: 200,
			wantBody: `{"challengeId":"` + failed + `","status":"FAIL"}`},
		{name: "unknown challenge is 400 NOT_FOUND", target: "/api/v1/challenge/get-status?challengeId=nope", wantStatus: 400,
			wantBody: `{"error":"NOT_FOUND","errorMessage":"The challenge could not be found."}`},
		{name: "challenge without challengeId is 400 INVALID_INPUT", target: "/api/v1/challenge/get-status", wantStatus: 400,
			wantBody: `{"error":"INVALID_INPUT","errorMessage":"challengeId is required."}`},
		{name: "pending verification", target: "/api/v1/age-verification/get-status?id=" + vPending, wantStatus: 200,
			wantBody: `{"id":"` + vPending + `","status":"PENDING"}`},
		{name: "passed verification has method, category and age", target: "/api/v1/age-verification/get-status?id=" + vPass, wantStatus: 200,
			wantBody: `{"id":"` + vPass + `","status":"PASS","method":"id-document","ageCategory":"digital-youth","age":{"low":15,"high":15}}`},
		{name: "failed verification has its reason", target: "/api/v1/age-verification/get-status?id=" + vFail, wantStatus: 200,
			wantBody: `{"id":"` + vFail + `","status":"FAIL","failureReason":"max-attempts-exceeded"}`},
		{name: "verificationId instead of id is 400 with an empty body", target: "/api/v1/age-verification/get-status?verificationId=" + vPass, wantStatus: 400},
		{name: "unknown verification is 400 INVALID_INPUT", target: "/api/v1/age-verification/get-status?id=nope", wantStatus: 400,
			wantBody: `{"error":"INVALID_INPUT","errorMessage":"The age verification could not be found."}`},
		{name: "unknown method is 404", target: "/api/v1/challenge/get", wantStatus: 404,
			wantBody: `{"error":"NOT_FOUND","errorMessage":"Unknown API method."}`},
		{name: "POST to a GET method is 405", target: "/api/v1/session/get?sessionId=" + sid, opts: []func(*http.Request){withMethod(http.MethodPost)}, wantStatus: 405,
			wantBody: `{"error":"METHOD_NOT_ALLOWED","errorMessage":"Use GET for this API method."}`},
		{name: "wrong key is 401", target: "/api/v1/session/get?sessionId=" + sid, opts: []func(*http.Request){withHeader("Authorization", "Bearer other")}, wantStatus: 401,
			wantBody: `{"error":"UNAUTHORIZED","errorMessage":"The API key is missing or invalid."}`},
		{name: "no key is 401", target: "/api/v1/session/get?sessionId=" + sid, opts: []func(*http.Request){withHeader("Authorization", "")}, wantStatus: 401,
			wantBody: `{"error":"UNAUTHORIZED","errorMessage":"The API key is missing or invalid."}`},
		{name: "the key without Bearer is 401", target: "/api/v1/session/get?sessionId=" + sid, opts: []func(*http.Request){withHeader("Authorization", testKey)}, wantStatus: 401,
			wantBody: `{"error":"UNAUTHORIZED","errorMessage":"The API key is missing or invalid."}`},
		{name: "401 comes before an unknown method", target: "/api/v1/nope", opts: []func(*http.Request){withHeader("Authorization", "")}, wantStatus: 401,
			wantBody: `{"error":"UNAUTHORIZED","errorMessage":"The API key is missing or invalid."}`},
		{name: "no Accept is 400", target: "/api/v1/session/get?sessionId=" + sid, opts: []func(*http.Request){withHeader("Accept", "")}, wantStatus: 400,
			wantBody: `{"error":"INVALID_INPUT","errorMessage":"Accept: application/json is required"}`},
		{name: "a wildcard Accept is 400", target: "/api/v1/session/get?sessionId=" + sid, opts: []func(*http.Request){withHeader("Accept", "*/*")}, wantStatus: 400,
			wantBody: `{"error":"INVALID_INPUT","errorMessage":"Accept: application/json is required"}`},
		{name: "Accept listing application/json with parameters is 200", target: "/api/v1/session/get?sessionId=" + sid,
			opts: []func(*http.Request){withHeader("Accept", "text/html, application/json;q=0.9")}, wantStatus: 200, wantBody: sessionJSON},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			rec := get(f, tc.target, tc.opts...)
			g.Expect(rec.Code).To(Equal(tc.wantStatus))
			if tc.wantBody == "" {
				g.Expect(rec.Body.String()).To(BeEmpty())
				g.Expect(rec.Header().Get("Content-Type")).To(BeEmpty())
				return
			}
			g.Expect(rec.Header().Get("Content-Type")).To(Equal("application/json"))
			g.Expect(rec.Body.String()).To(MatchJSON(tc.wantBody))
		})
	}

	g := NewWithT(t)
	reqs := f.Requests()
	g.Expect(reqs).To(HaveLen(len(cases)), "every call is recorded, refused ones too")
	g.Expect(reqs[0].Endpoint).To(Equal(EndpointSessionGet))
	g.Expect(reqs[0].Status).To(Equal(200))
	g.Expect(reqs[0].Query.Get("sessionId")).To(Equal(sid))
}

func TestAPathOutsideTheAPIIsAPlain404AndIsRecorded(t *testing.T) {
	g := NewWithT(t)
	f := newTestFake(t, FakeOptions{})
	// A base URL without /api/v1 (spec §4.1) calls /session/get.
	rec := get(f, "/session/get?sessionId=s-1")
	g.Expect(rec.Code).To(Equal(http.StatusNotFound))
	g.Expect(rec.Header().Get("Content-Type")).NotTo(Equal("application/json"), "not k-ID's error body")
	g.Expect(rec.Body.String()).NotTo(ContainSubstring(CodeNotFound))
	reqs := f.Requests()
	g.Expect(reqs).To(HaveLen(1), "counted like every other call")
	g.Expect(reqs[0].Path).To(Equal("/session/get"))
	g.Expect(reqs[0].Endpoint).To(BeEmpty())
	g.Expect(reqs[0].Status).To(Equal(http.StatusNotFound))
}

func TestSessionChangesAndDeletion(t *testing.T) {
	g := NewWithT(t)
	f := newTestFake(t, FakeOptions{})
	sid, err := f.ApproveChallenge(f.StartChallenge(), Approval{KUID: "kuid-1", DOB: "2012-01-02"})
	g.Expect(err).NotTo(HaveOccurred())
	first := sessionOf(f, sid)
	g.Expect(first.DateOfBirth).To(Equal("2012-01-02"))
	g.Expect(first.Etag).To(MatchRegexp(`^[0-9a-f]{40}$`))

	g.Expect(f.SetPermission(sid, "text-chat-private", true)).To(Succeed())
	second := sessionOf(f, sid)
	g.Expect(second.Etag).NotTo(Equal(first.Etag), "a change makes a new etag")
	rec := get(f, "/api/v1/session/get?sessionId="+sid+"&etag="+first.Etag)
	g.Expect(rec.Code).To(Equal(200), "the old etag no longer matches")
	var body struct{ Session Session }
	g.Expect(json.Unmarshal(rec.Body.Bytes(), &body)).To(Succeed())
	g.Expect(body.Session.Etag).To(Equal(second.Etag))
	g.Expect(body.Session.Permissions[0]).To(Equal(Permission{Enabled: true, ManagedBy: ManagedByGuardian, Name: "text-chat-private"}))
	g.Expect(get(f, "/api/v1/session/get?sessionId="+sid+"&etag="+second.Etag).Code).To(Equal(304))

	g.Expect(f.SetPermission(sid, "text-chat-private", true)).To(Succeed())
	g.Expect(sessionOf(f, sid).Etag).To(Equal(second.Etag), "setting the same value changes nothing")
	g.Expect(f.SetPermission(sid, "nope", true)).To(MatchError(ErrNotFound))
	g.Expect(f.SetPermission("nope", "voice-chat", true)).To(MatchError(ErrNotFound))

	// A second session of the same player is the newest: ?kuid= answers it.
	newer, err := f.ApproveChallenge(f.StartChallenge(), Approval{KUID: "kuid-1"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(get(f, "/api/v1/session/get?kuid=kuid-1").Body.String()).To(ContainSubstring(newer))

	g.Expect(f.DeleteSession(sid)).To(Succeed())
	rec = get(f, "/api/v1/session/get?sessionId="+sid)
	g.Expect(rec.Code).To(Equal(400))
	g.Expect(rec.Body.String()).To(MatchJSON(`{"error":"NOT_FOUND","errorMessage":"The session could not be found."}`))
	g.Expect(f.DeleteSession(sid)).To(MatchError(ErrNotFound))

	g.Expect(f.DeleteAccount("kuid-1")).To(Succeed())
	g.Expect(get(f, "/api/v1/session/get?kuid=kuid-1").Code).To(Equal(400))
	g.Expect(f.State().Sessions).To(BeEmpty())
	g.Expect(f.DeleteAccount("kuid-1")).To(MatchError(ErrNotFound))
}

func TestSessionFaults(t *testing.T) {
	read := func(f *Fake, q string) (int, Session) {
		rec := get(f, "/api/v1/session/get?"+q)
		var body struct{ Session Session }
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return rec.Code, body.Session
	}
	codes := func(f *Fake, qs ...string) []int {
		var out []int
		for _, q := range qs {
			code, _ := read(f, q)
			out = append(out, code)
		}
		return out
	}
	cases := []struct {
		name  string
		reads int
		want  []int
	}{
		{"once answers NOT_FOUND to one read, by either form", 1, []int{400, 200, 200, 200}},
		{"three reads answer NOT_FOUND to three reads, whichever form", 3, []int{400, 400, 400, 200}},
		{"persistent answers NOT_FOUND to every read", NotFoundPersistent, []int{400, 400, 400, 400}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			f := newTestFake(t, FakeOptions{})
			sid, err := f.ApproveChallenge(f.StartChallenge(), Approval{KUID: "kuid-1"})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(f.SetSessionNotFound(sid, tc.reads)).To(Succeed())
			g.Expect(codes(f, "sessionId="+sid, "kuid=kuid-1", "sessionId="+sid, "kuid=kuid-1")).To(Equal(tc.want))
			rec := get(f, "/api/v1/session/get?sessionId="+sid)
			if tc.reads == NotFoundPersistent {
				g.Expect(rec.Body.String()).To(MatchJSON(`{"error":"NOT_FOUND","errorMessage":"The session could not be found."}`), "as for a deleted session")
				g.Expect(f.SetSessionNotFound(sid, 0)).To(Succeed())
				g.Expect(codes(f, "sessionId="+sid)).To(Equal([]int{200}))
			}
			g.Expect(f.State().Sessions).To(HaveLen(1), "the session itself is kept")
			g.Expect(f.SessionFaults()).To(BeEmpty(), "a spent fault is gone")
		})
	}

	t.Run("a status answers in place of ACTIVE, with its own etag", func(t *testing.T) {
		g := NewWithT(t)
		f := newTestFake(t, FakeOptions{})
		sid, _ := f.ApproveChallenge(f.StartChallenge(), Approval{KUID: "kuid-1"})
		active := sessionOf(f, sid)
		g.Expect(active.Status).To(Equal("ACTIVE"))
		g.Expect(f.SetSessionStatus(sid, "DELETED")).To(Succeed())
		code, s := read(f, "sessionId="+sid+"&etag="+active.Etag)
		g.Expect(code).To(Equal(200), "the etag of the ACTIVE session no longer matches")
		g.Expect(s.Status).To(Equal("DELETED"))
		g.Expect(s.Etag).NotTo(Equal(active.Etag))
		_, byKUID := read(f, "kuid=kuid-1")
		g.Expect(byKUID.Status).To(Equal("DELETED"))
		g.Expect(codes(f, "sessionId="+sid+"&etag="+s.Etag)).To(Equal([]int{304}))
		g.Expect(f.SetSessionStatus(sid, "")).To(Succeed())
		_, s = read(f, "sessionId="+sid)
		g.Expect(s).To(Equal(active))
	})

	t.Run("the switches are bounded", func(t *testing.T) {
		g := NewWithT(t)
		f := newTestFake(t, FakeOptions{})
		sid, _ := f.ApproveChallenge(f.StartChallenge(), Approval{})
		g.Expect(f.SetSessionNotFound(sid, maxNotFoundReads+1)).NotTo(Succeed())
		g.Expect(f.SetSessionNotFound(sid, -2)).NotTo(Succeed())
		g.Expect(f.SetSessionStatus(sid, "deleted")).NotTo(Succeed())
		g.Expect(f.SetSessionStatus(sid, strings.Repeat("D", 33))).NotTo(Succeed())
		g.Expect(f.SetSessionNotFound("nope", 1)).To(MatchError(ErrNotFound))
		g.Expect(f.SessionFaults()).To(BeEmpty())
		g.Expect(f.SetSessionNotFound(sid, 1)).To(Succeed())
		g.Expect(f.DeleteSession(sid)).To(Succeed())
		g.Expect(f.SessionFaults()).To(BeEmpty(), "a deleted session's fault goes with it")
	})
}

func TestControlCallsRefuseWrongStates(t *testing.T) {
	f := newTestFake(t, FakeOptions{})
	decided := f.StartChallenge()
	sid, _ := f.ApproveChallenge(decided, Approval{})
	pending := f.StartVerification()
	done := f.StartVerification()
	_ = f.CompleteVerification(done, false)
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"approving a decided challenge", func() error { _, err := f.ApproveChallenge(decided, Approval{}); return err }(), ErrWrongState},
		{"denying a decided challenge", f.DenyChallenge(decided), ErrWrongState},
		{"approving an unknown challenge", func() error { _, err := f.ApproveChallenge("nope", Approval{}); return err }(), ErrNotFound},
		{"reusing a session id", func() error { _, err := f.ApproveChallenge(f.StartChallenge(), Approval{SessionID: sid}); return err }(), ErrWrongState},
		{"completing a completed verification", f.CompleteVerification(done, true), ErrWrongState},
		{"revoking a pending verification", f.RevokeVerification(pending, ""), ErrWrongState},
		{"revoking a failed verification", f.RevokeVerification(done, ""), ErrWrongState},
		{"revoking an unknown verification", f.RevokeVerification("nope", ""), ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(tc.err).To(MatchError(tc.want))
		})
	}
}

func TestSessionIsNotFoundWhilePropagating(t *testing.T) {
	g := NewWithT(t)
	clk := newClock()
	f := newTestFake(t, FakeOptions{PropagationDelay: 1500 * time.Millisecond, Clock: clk})
	c := f.StartChallenge()
	sid, err := f.ApproveChallenge(c, Approval{KUID: "kuid-1"})
	g.Expect(err).NotTo(HaveOccurred())

	g.Expect(get(f, "/api/v1/challenge/get-status?challengeId="+c).Body.String()).To(ContainSubstring(`"status":"PASS"`),
		"the challenge says PASS before the session can be read: the race k-ID's clients must survive")
	for _, q := range []string{"sessionId=" + sid, "kuid=kuid-1"} {
		rec := get(f, "/api/v1/session/get?"+q)
		g.Expect(rec.Code).To(Equal(404), q)
		g.Expect(rec.Body.String()).To(MatchJSON(`{"error":"NOT_FOUND","errorMessage":"The session could not be found."}`))
	}
	clk.Step(1499 * time.Millisecond)
	g.Expect(get(f, "/api/v1/session/get?sessionId="+sid).Code).To(Equal(404))
	clk.Step(time.Millisecond)
	g.Expect(get(f, "/api/v1/session/get?sessionId="+sid).Code).To(Equal(200))
	g.Expect(get(f, "/api/v1/session/get?kuid=kuid-1").Code).To(Equal(200))

	// A newer session still propagating leaves ?kuid= on the older one.
	newer, _ := f.ApproveChallenge(f.StartChallenge(), Approval{KUID: "kuid-1"})
	g.Expect(get(f, "/api/v1/session/get?kuid=kuid-1").Body.String()).To(And(ContainSubstring(sid), Not(ContainSubstring(newer))))
}

func TestRateLimitAnswers429WithRetryAfterAndNoBody(t *testing.T) {
	g := NewWithT(t)
	clk := newClock()
	f := newTestFake(t, FakeOptions{Clock: clk})
	c := f.StartChallenge()
	target := "/api/v1/challenge/get-status?challengeId=" + c
	f.SetRateLimit(2, 2)
	f.SetRetryAfter(1500 * time.Millisecond)

	g.Expect(get(f, target).Code).To(Equal(200))
	g.Expect(get(f, target).Code).To(Equal(200))
	rec := get(f, target)
	g.Expect(rec.Code).To(Equal(429))
	g.Expect(rec.Header().Get("Retry-After")).To(Equal("2"), "whole seconds, rounded up")
	g.Expect(rec.Body.String()).To(BeEmpty())
	g.Expect(rec.Header().Get("Content-Type")).To(BeEmpty())
	g.Expect(get(f, target, withHeader("Authorization", "Bearer other")).Code).To(Equal(401), "the key is checked before the rate")

	clk.Step(500 * time.Millisecond)
	g.Expect(get(f, target).Code).To(Equal(200), "half a second refills one token at 2 rps")
	g.Expect(get(f, target).Code).To(Equal(429))

	f.SetAPIKey("rotated")
	g.Expect(get(f, target).Code).To(Equal(401), "the old key is refused once rotated")
	g.Expect(get(f, target, withHeader("Authorization", "Bearer rotated")).Code).To(Equal(200), "each key has its own bucket")

	f.SetRateLimit(0, 0)
	for range 5 {
		g.Expect(get(f, target, withHeader("Authorization", "Bearer rotated")).Code).To(Equal(200))
	}
	var statuses []int
	for _, r := range f.Requests() {
		statuses = append(statuses, r.Status)
	}
	g.Expect(statuses).To(Equal([]int{200, 200, 429, 401, 200, 429, 401, 200, 200, 200, 200, 200, 200}))
	// Each call's key is told apart, and not kept.
	var keys []string
	for _, r := range f.Requests() {
		keys = append(keys, r.KeyID)
	}
	k, other, rotated := KeyID(testKey), KeyID("other"), KeyID("rotated")
	g.Expect(keys).To(Equal([]string{k, k, k, other, k, k, k, rotated, rotated, rotated, rotated, rotated, rotated}))
	g.Expect(k).To(HaveLen(12))
	g.Expect(k).NotTo(ContainSubstring(testKey))
}

func TestMaxInWindow(t *testing.T) {
	base := time.Unix(1764000000, 0)
	at := func(ms ...int) []time.Time {
		var out []time.Time
		for _, m := range ms {
			out = append(out, base.Add(time.Duration(m)*time.Millisecond))
		}
		return out
	}
	cases := []struct {
		name   string
		times  []time.Time
		window time.Duration
		want   int
	}{
		{"no times is 0", nil, time.Second, 0},
		{"one time is 1", at(0), time.Second, 1},
		{"ten evenly in a second are 10", at(0, 100, 200, 300, 400, 500, 600, 700, 800, 900), time.Second, 10},
		{"the window's end is open", at(0, 1000), time.Second, 1},
		{"a burst later in the run counts", at(0, 2000, 2100, 2200, 5000), time.Second, 3},
		{"order does not matter", at(2200, 0, 2000, 5000, 2100), time.Second, 3},
		{"equal times all count", at(10, 10, 10), time.Millisecond, 3},
		{"a zero window holds nothing", at(0, 0), 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(MaxInWindow(tc.times, tc.window)).To(Equal(tc.want))
		})
	}
}

// receiver is a webhook endpoint that checks k-ID's signature and answers
// from a script (200 once the script is used up).
type receiver struct {
	secret []byte
	mu     sync.Mutex
	script []int
	bodies []string
	bad    int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	v := kid.NewVerifier([]kid.Key{{Name: "current", Secret: rc.secret}}, 5*time.Minute, nil)
	_, _, err := v.Verify(r.Header.Get(kid.HeaderTimestamp), r.Header.Get(kid.HeaderSignature), body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err != nil || r.Header.Get(kid.HeaderEventType) == "" {
		rc.bad++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	rc.bodies = append(rc.bodies, string(body))
	status := http.StatusOK
	if len(rc.script) > 0 {
		status, rc.script = rc.script[0], rc.script[1:]
	}
	w.WriteHeader(status)
}

func (rc *receiver) received() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]string(nil), rc.bodies...)
}

var shortSchedule = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond}

// deliveringFake returns a fake that delivers to a new receiver.
func deliveringFake(t *testing.T, o FakeOptions, script ...int) (*Fake, *receiver) {
	t.Helper()
	rc := &receiver{secret: []byte("whsec"), script: script}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	o.WebhookURL, o.WebhookSecret, o.ProductID = srv.URL, rc.secret, 11472
	if o.Schedule == nil {
		o.Schedule = shortSchedule
	}
	return newTestFake(t, o), rc
}

func TestStateChangesAreDeliveredSignedWithKIDsPayloads(t *testing.T) {
	cases := []struct {
		name string
		// act changes the state and returns the bodies k-ID would send.
		act func(f *Fake) []string
	}{
		{"a started challenge sends IN_PROGRESS", func(f *Fake) []string {
			c := f.StartChallenge()
			return []string{`{"eventType":"Challenge.StateChange","data":{"id":"` + c + `","productId":11472,"status":"IN_PROGRESS"}}`}
		}},
		{"an approval sends PASS with the session, kuid, approver and dob", func(f *Fake) []string {
			c := f.StartChallenge()
			sid, _ := f.ApproveChallenge(c, Approval{KUID: "kuid-1"})
			return []string{
				`{"eventType":"Challenge.StateChange","data":{"id":"` + c + `","productId":11472,"status":"IN_PROGRESS"}}`,
				`{"eventType":"Challenge.StateChange","data":{"id":"` + c + `","productId":11472,"status":"PASS","sessionId":"` + sid +
					`","kuid":"kuid-1","approverEmail":"parent@example.com","dob":"2013-04-01"}}`,
			}
		}},
		{"a denial sends FAIL", func(f *Fake) []string {
			c := f.StartChallenge()
			_ = f.DenyChallenge(c)
			return []string{
				`{"eventType":"Challenge.StateChange","data":{"id":"` + c + `","productId":11472,"status":"IN_PROGRESS"}}`,
				`{"eventType":"Challenge.StateChange","data":{"id":"` + c + `","productId":11472,"status":"FAIL"}}`,
			}
		}},
		{"a started verification sends nothing; its pass sends the result", func(f *Fake) []string {
			v := f.StartVerification()
			_ = f.CompleteVerification(v, true)
			dob := f.opts.Clock.Now().AddDate(-15, -3, 0).Format(time.DateOnly)
			return []string{`{"eventType":"Verification.Result","data":{"id":"` + v +
				`","status":"PASS","method":"id-document","ageCategory":"digital-youth","age":{"low":15,"high":15},"dob":"` + dob + `"}}`}
		}},
		{"a failed verification sends max-attempts-exceeded", func(f *Fake) []string {
			v := f.StartVerification()
			_ = f.CompleteVerification(v, false)
			return []string{`{"eventType":"Verification.Result","data":{"id":"` + v + `","status":"FAIL","failureReason":"max-attempts-exceeded"}}`}
		}},
		{"a revocation sends Verification.Revoke", func(f *Fake) []string {
			v := f.StartVerification()
			_ = f.CompleteVerification(v, true)
			_ = f.RevokeVerification(v, "provider-reported-error")
			return []string{`{"eventType":"Verification.Revoke","data":{"verifications":[{"id":"` + v + `","reason":"provider-reported-error"}]}}`}
		}},
		{"a permission change sends Session.ChangePermissions", func(f *Fake) []string {
			sid, _ := f.ApproveChallenge(f.StartChallenge(), Approval{})
			_ = f.SetPermission(sid, "text-chat-private", true)
			return []string{`{"eventType":"Session.ChangePermissions","data":{"id":"` + sid + `","productId":11472}}`}
		}},
		{"a deleted session sends Session.Delete", func(f *Fake) []string {
			sid, _ := f.ApproveChallenge(f.StartChallenge(), Approval{})
			_ = f.DeleteSession(sid)
			return []string{`{"eventType":"Session.Delete","data":{"id":"` + sid + `","productId":11472}}`}
		}},
		{"a deleted account sends one Account.Delete", func(f *Fake) []string {
			_, _ = f.ApproveChallenge(f.StartChallenge(), Approval{KUID: "kuid-1"})
			_, _ = f.ApproveChallenge(f.StartChallenge(), Approval{KUID: "kuid-1"})
			_ = f.DeleteAccount("kuid-1")
			return []string{`{"eventType":"Account.Delete","data":{"kuid":"kuid-1","productId":11472}}`}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			f, rc := deliveringFake(t, FakeOptions{})
			want := tc.act(f)
			// Events of the steps that set the case up are not its subject.
			types := map[string]bool{}
			for _, w := range want {
				env, err := kid.ParseEnvelope([]byte(w))
				g.Expect(err).NotTo(HaveOccurred())
				types[env.EventType] = true
			}
			relevant := func() []string {
				var out []string
				for _, b := range rc.received() {
					if env, err := kid.ParseEnvelope([]byte(b)); err == nil && types[env.EventType] {
						out = append(out, b)
					}
				}
				return out
			}
			var matchers []any
			for _, w := range want {
				matchers = append(matchers, MatchJSON(w))
			}
			g.Eventually(relevant).Should(ConsistOf(matchers...))
			g.Consistently(relevant, 150*time.Millisecond).Should(HaveLen(len(want)), "each event once")
			rc.mu.Lock()
			g.Expect(rc.bad).To(BeZero(), "every delivery verifies")
			rc.mu.Unlock()
			for _, d := range f.Deliveries() {
				g.Expect(d.Status).To(Equal(200))
				g.Expect(d.Attempt).To(Equal(1))
			}
		})
	}
}

func TestDeliveryFaults(t *testing.T) {
	cases := []struct {
		name   string
		fault  DeliveryFault
		script []int
		client *http.Client
		// want are the attempts' statuses; received is how many reach the
		// receiver.
		want      []int
		wantFault DeliveryFault
		wantErr   string
		received  int
	}{
		{name: "5xx makes three attempts on the schedule and reaches nothing", fault: Fault5xx,
			want: []int{502, 502, 502}, wantFault: Fault5xx, received: 0},
		{name: "timeout makes three attempts that each hang until the client's timeout", fault: FaultTimeout,
			client: &http.Client{Timeout: 30 * time.Millisecond},
			want:   []int{0, 0, 0}, wantFault: FaultTimeout, wantErr: "deadline exceeded", received: 0},
		{name: "drop sends nothing and retries nothing", fault: FaultDrop,
			want: []int{0}, wantFault: FaultDrop, wantErr: "never sent", received: 0},
		{name: "a receiver answering 500 gets every retry", script: []int{500, 500, 500},
			want: []int{500, 500, 500}, received: 3},
		{name: "a receiver that recovers gets the event on a retry", script: []int{503},
			want: []int{503, 200}, received: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			f, rc := deliveringFake(t, FakeOptions{HTTPClient: tc.client}, tc.script...)
			f.SetDeliveryFault(tc.fault)
			f.StartChallenge()
			attempts := func() []DeliveryRecord { return f.Deliveries() }
			g.Eventually(attempts).Should(HaveLen(len(tc.want)))
			g.Consistently(attempts, 250*time.Millisecond).Should(HaveLen(len(tc.want)), "no attempt beyond the schedule")
			got := f.Deliveries()
			for i, d := range got {
				g.Expect(d.Attempt).To(Equal(i + 1))
				g.Expect(d.Event).To(Equal(1))
				g.Expect(d.EventType).To(Equal(kid.ChallengeStateChange))
				g.Expect(d.Status).To(Equal(tc.want[i]))
				g.Expect(d.Fault).To(Equal(tc.wantFault))
				if tc.wantErr != "" {
					g.Expect(d.Err).To(ContainSubstring(tc.wantErr))
				}
			}
			for i := 1; i < len(got); i++ {
				gap := got[i].At.Sub(got[i-1].At)
				g.Expect(gap).To(BeNumerically(">=", shortSchedule[i-1]), "retry %d waits its turn", i)
			}
			g.Expect(rc.received()).To(HaveLen(tc.received))
		})
	}
}

func TestFaultAppliesPerAttempt(t *testing.T) {
	g := NewWithT(t)
	var f *Fake
	f, rc := deliveringFake(t, FakeOptions{OnDelivery: func(d DeliveryRecord) {
		if d.Attempt == 1 {
			f.SetDeliveryFault(FaultNone) // the ingress recovers before the retry
		}
	}})
	f.SetDeliveryFault(Fault5xx)
	f.StartChallenge()
	g.Eventually(f.Deliveries).Should(HaveLen(2))
	g.Expect(rc.received()).To(HaveLen(1))
	g.Expect(f.Deliveries()[0].Status).To(Equal(502))
	g.Expect(f.Deliveries()[1].Status).To(Equal(200))
}

func TestDeliveryDelayLetsThePollWin(t *testing.T) {
	g := NewWithT(t)
	f, rc := deliveringFake(t, FakeOptions{})
	f.SetDeliveryDelay(300 * time.Millisecond)
	c := f.StartChallenge()
	g.Expect(get(f, "/api/v1/challenge/get-status?challengeId="+c).Code).To(Equal(200))
	g.Consistently(rc.received, 150*time.Millisecond).Should(BeEmpty())
	g.Eventually(rc.received).Should(HaveLen(1))
}

func TestStatusWithoutSessionAnswersPassWithoutItWhileTheWebhookCarriesIt(t *testing.T) {
	g := NewWithT(t)
	f, rc := deliveringFake(t, FakeOptions{})
	f.SetStatusWithoutSession(true)
	c := f.StartChallenge()
	sid, err := f.ApproveChallenge(c, Approval{KUID: "kuid-1"})
	g.Expect(err).NotTo(HaveOccurred())
	got := get(f, "/api/v1/challenge/get-status?challengeId="+c)
	g.Expect(got.Code).To(Equal(200))
	g.Expect(got.Body.String()).To(MatchJSON(`{"challengeId":"` + c + `","status":"PASS","kuid":"kuid-1"}`))
	g.Eventually(rc.received).Should(HaveLen(2))
	g.Expect(rc.received()).To(ContainElement(ContainSubstring(`"sessionId":"`+sid+`"`)), "the webhook names the session")

	f.SetStatusWithoutSession(false)
	g.Expect(get(f, "/api/v1/challenge/get-status?challengeId="+c).Body.String()).To(ContainSubstring(`"sessionId":"` + sid + `"`))
}

func TestCloseAbortsDeliveriesInFlight(t *testing.T) {
	g := NewWithT(t)
	f, rc := deliveringFake(t, FakeOptions{})
	f.SetDeliveryFault(FaultTimeout) // the default client would wait 10 s
	f.StartChallenge()
	g.Eventually(func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.events == 1
	}).Should(BeTrue())
	start := time.Now()
	f.Close()
	g.Expect(time.Since(start)).To(BeNumerically("<", 2*time.Second))
	g.Expect(f.Deliveries()).To(HaveLen(1))
	g.Expect(f.Deliveries()[0].Err).To(ContainSubstring("context canceled"))

	f.SetDeliveryFault(FaultNone)
	f.StartChallenge()
	g.Consistently(rc.received, 100*time.Millisecond).Should(BeEmpty(), "a closed fake sends nothing")
}

func TestNoWebhookURLDeliversNothing(t *testing.T) {
	g := NewWithT(t)
	f := newTestFake(t, FakeOptions{})
	f.StartChallenge()
	f.Close()
	g.Expect(f.Deliveries()).To(BeEmpty())
}

func TestAdminAPI(t *testing.T) {
	f := newTestFake(t, FakeOptions{})
	h := f.Handler()
	do := func(method, target, body string) (int, map[string]any) {
		req := httptest.NewRequest(method, target, strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			out = map[string]any{"unparsed": rec.Body.String()}
		}
		return rec.Code, out
	}
	_, started := do("POST", "/kidsim/challenges", "")
	c, _ := started["challengeId"].(string)
	_, v := do("POST", "/kidsim/verifications", "")
	vid, _ := v["id"].(string)

	cases := []struct {
		name       string
		method     string
		target     string
		body       string
		wantStatus int
		want       map[string]any // keys that must hold these values
	}{
		{"the state is served", "GET", "/kidsim/state", "", 200, nil},
		{"approve takes an Approval body", "POST", "/kidsim/challenges/" + c + "/approve", `{"sessionId":"s-1","kuid":"k-1","email":"a@b.c","dob":"2014-02-03"}`, 200,
			map[string]any{"challengeId": c, "status": "PASS", "sessionId": "s-1", "kuid": "k-1"}},
		{"approving twice is 409", "POST", "/kidsim/challenges/" + c + "/approve", "", 409, nil},
		{"an unknown challenge is 404", "POST", "/kidsim/challenges/nope/deny", "", 404, nil},
		{"a misspelt field is 400", "POST", "/kidsim/challenges/" + c + "/approve", `{"session":"x"}`, 400, nil},
		{"pass completes a verification", "POST", "/kidsim/verifications/" + vid + "/pass", "", 200,
			map[string]any{"id": vid, "status": "PASS", "method": "id-document"}},
		{"revoke takes a reason", "POST", "/kidsim/verifications/" + vid + "/revoke", `{"reason":"provider-reported-error"}`, 200,
			map[string]any{"revokedReason": "provider-reported-error"}},
		{"an age-up needs a new age status", "POST", "/kidsim/sessions/s-1/age-up", `{}`, 409, nil},
		{"an age-up passes the guardian's permissions to the player", "POST", "/kidsim/sessions/s-1/age-up", `{"ageStatus":"LEGAL_ADULT"}`, 200,
			map[string]any{"sessionId": "s-1", "ageStatus": "LEGAL_ADULT"}},
		{"a permission needs name and enabled", "POST", "/kidsim/sessions/s-1/permissions", `{"name":"voice-chat"}`, 400, nil},
		{"a permission is set", "POST", "/kidsim/sessions/s-1/permissions", `{"name":"voice-chat","enabled":true}`, 200,
			map[string]any{"sessionId": "s-1"}},
		{"faults are set together", "PUT", "/kidsim/faults", `{"deliveries":"5xx","deliveryDelay":"2s","rateLimit":{"rps":10,"burst":20},"retryAfter":"3s","statusWithoutSession":true}`, 200,
			map[string]any{"deliveries": "5xx", "deliveryDelay": "2s", "retryAfter": "3s", "rateLimit": map[string]any{"rps": 10.0, "burst": 20.0}, "statusWithoutSession": true}},
		{"an unknown fault is 400 and changes nothing", "PUT", "/kidsim/faults", `{"deliveries":"flaky","deliveryDelay":"0s"}`, 400, nil},
		{"the revoked answer is set", "PUT", "/kidsim/faults", `{"revokedAnswer":"flag"}`, 200, map[string]any{"revokedAnswer": "flag"}},
		{"an unknown revoked answer is 400", "PUT", "/kidsim/faults", `{"revokedAnswer":"maybe"}`, 400, nil},
		{"faults are read back", "GET", "/kidsim/faults", "", 200, map[string]any{"deliveries": "5xx", "deliveryDelay": "2s"}},
		{"faults are cleared", "PUT", "/kidsim/faults", `{"deliveries":"","deliveryDelay":"0s","rateLimit":{"rps":0}}`, 200,
			map[string]any{"deliveries": "", "deliveryDelay": "0s", "rateLimit": map[string]any{"rps": 0.0, "burst": 0.0}}},
		{"API faults are set together", "PUT", "/kidsim/faults",
			`{"windowLimit":10,"api":{"session/get":{"status":503,"calls":2},"*":{"latency":"1s"}},"propagationDelay":"1500ms","propagationStatus":400,"challengesPending":true}`, 200,
			map[string]any{
				"windowLimit": 10.0, "propagationDelay": "1.5s", "propagationStatus": 400.0, "challengesPending": true,
				"api": map[string]any{"session/get": map[string]any{"status": 503.0, "calls": 2.0}, "*": map[string]any{"latency": "1s"}},
			}},
		{"an API fault of an unknown endpoint is 400", "PUT", "/kidsim/faults", `{"windowLimit":5,"api":{"session/list":{"status":500}}}`, 400, nil},
		{"an API fault's status under 500 is 400", "PUT", "/kidsim/faults", `{"windowLimit":5,"api":{"*":{"status":404}}}`, 400, nil},
		{"a propagation status other than 404 or 400 is 400", "PUT", "/kidsim/faults", `{"windowLimit":5,"propagationStatus":500}`, 400, nil},
		{"a refused update changed nothing", "GET", "/kidsim/faults", "", 200, map[string]any{"windowLimit": 10.0}},
		{"API faults are cleared", "PUT", "/kidsim/faults", `{"windowLimit":0,"api":{"session/get":{},"*":{}},"propagationDelay":"0s","propagationStatus":404,"challengesPending":false}`, 200,
			map[string]any{"windowLimit": 0.0, "api": map[string]any{}, "propagationDelay": "0s", "propagationStatus": 404.0, "challengesPending": false}},
		{"a session fault is set", "PUT", "/kidsim/sessions/s-1/faults", `{"notFoundReads":2,"status":"DELETED"}`, 200,
			map[string]any{"notFoundReads": 2.0, "status": "DELETED"}},
		{"a fault beyond its bound is 400", "PUT", "/kidsim/sessions/s-1/faults", `{"notFoundReads":1001}`, 400, nil},
		{"a status that is not k-ID's form is 400", "PUT", "/kidsim/sessions/s-1/faults", `{"status":"deleted!"}`, 400, nil},
		{"a fault of an unknown session is 404", "PUT", "/kidsim/sessions/nope/faults", `{"notFoundReads":1}`, 404, nil},
		{"session faults are read back", "GET", "/kidsim/faults", "", 200,
			map[string]any{"sessions": map[string]any{"s-1": map[string]any{"notFoundReads": 2.0, "status": "DELETED"}}}},
		{"an account is deleted with its sessions", "DELETE", "/kidsim/accounts/k-1", "", 200, map[string]any{"kuid": "k-1", "sessionsDeleted": 1.0}},
		{"a deleted session is 404", "DELETE", "/kidsim/sessions/s-1", "", 404, nil},
		{"an unknown admin path is a JSON 404", "GET", "/kidsim/nope", "", 404, nil},
		{"a wrong method is a JSON 405", "GET", "/kidsim/challenges", "", 405, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			status, out := do(tc.method, tc.target, tc.body)
			g.Expect(status).To(Equal(tc.wantStatus), "%v", out)
			if status >= 400 {
				g.Expect(out).To(HaveKeyWithValue("error", Not(BeEmpty())))
			}
			for k, v := range tc.want {
				g.Expect(out).To(HaveKeyWithValue(k, v))
			}
		})
	}

	g := NewWithT(t)
	st := f.State()
	g.Expect(st.Challenges).To(HaveLen(1))
	g.Expect(st.Verifications).To(HaveLen(1))
	g.Expect(st.Sessions).To(BeEmpty())
	get(f, "/api/v1/challenge/get-status?challengeId="+c)
	req := httptest.NewRequest("GET", "/kidsim/requests", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	g.Expect(rec.Body.String()).To(ContainSubstring(`"endpoint":"challenge/get-status"`))
}

func TestListenAndServeServesUntilTheContextEnds(t *testing.T) {
	g := NewWithT(t)
	f := newTestFake(t, FakeOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	addr, err := f.ListenAndServe(ctx, "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/v1/age-verification/get-status?verificationId=x", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(400))
	g.Expect(body).To(BeEmpty(), "an empty body on the wire too")
	g.Expect(resp.ContentLength).To(BeZero())

	cancel()
	g.Eventually(func() error {
		resp, err := http.Get("http://" + addr + "/kidsim/state")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}).Should(HaveOccurred())
}

// k-ID does not document how get-status answers a revoked verification; the
// fake answers each way it might, as passed unless told otherwise.
func TestRevokedVerificationAnswers(t *testing.T) {
	cases := []struct {
		answer RevokedAnswer
		want   string
	}{
		{RevokedAsPassed, `{"id":"%s","status":"PASS","method":"id-document","ageCategory":"digital-youth","age":{"low":15,"high":15}}`},
		{RevokedAsStatus, `{"id":"%s","status":"REVOKED","method":"id-document","ageCategory":"digital-youth","age":{"low":15,"high":15},"revokedReason":"provider-reported-error"}`},
		{RevokedAsFlag, `{"id":"%s","status":"PASS","method":"id-document","ageCategory":"digital-youth","age":{"low":15,"high":15},"revoked":true,"revokedReason":"provider-reported-error"}`},
	}
	for _, tc := range cases {
		t.Run("as "+string(tc.answer), func(t *testing.T) {
			g := NewWithT(t)
			f := newTestFake(t, FakeOptions{})
			f.SetRevokedAnswer(tc.answer)
			v := f.StartVerification()
			g.Expect(f.CompleteVerification(v, true)).To(Succeed())
			passed := get(f, "/api/v1/age-verification/get-status?id="+v)
			g.Expect(passed.Body.String()).To(ContainSubstring(`"status":"PASS"`), "not revoked yet")
			g.Expect(passed.Body.String()).NotTo(ContainSubstring("revoked"))
			g.Expect(f.RevokeVerification(v, "provider-reported-error")).To(Succeed())
			rec := get(f, "/api/v1/age-verification/get-status?id="+v)
			g.Expect(rec.Code).To(Equal(200))
			g.Expect(rec.Body.String()).To(MatchJSON(fmt.Sprintf(tc.want, v)))
		})
	}
}

// An age-up changes the session (a new etag, the guardian's permissions
// now the player's) and, as at k-ID (spec §1.9), sends no webhook.
func TestAgeUpSendsNothing(t *testing.T) {
	g := NewWithT(t)
	f := newTestFake(t, FakeOptions{})
	sid, err := f.ApproveChallenge(f.StartChallenge(), Approval{})
	g.Expect(err).NotTo(HaveOccurred())
	before := f.State().Sessions[0].Session
	delivered := len(f.Deliveries())
	g.Expect(f.AgeUp(sid, "LEGAL_ADULT")).To(Succeed())
	after := f.State().Sessions[0].Session
	g.Expect(after.Etag).NotTo(Equal(before.Etag))
	g.Expect(after.AgeStatus).To(Equal("LEGAL_ADULT"))
	for _, p := range after.Permissions {
		g.Expect(p.ManagedBy).NotTo(Equal(ManagedByGuardian), p.Name)
	}
	g.Consistently(func() int { return len(f.Deliveries()) }, 200*time.Millisecond).Should(Equal(delivered))
	g.Expect(f.AgeUp("nope", "LEGAL_ADULT")).To(MatchError(ErrNotFound))
}
