package webhookserver

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/scheme"
	"github.com/kid-operator/kid-operator/webhookserver/relaytoken"
)

// fakeUsers is a userSource whose users the test sets by the subject's id
// key (kidv1.UserIDKey); set wakes the subject's followers, as a change
// seen by their watches does.
type fakeUsers struct {
	mu    sync.Mutex
	users map[string][]kidv1.KidUser
	subs  map[string]map[chan struct{}]struct{}
}

func newFakeUsers() *fakeUsers {
	return &fakeUsers{users: map[string][]kidv1.KidUser{}, subs: map[string]map[chan struct{}]struct{}{}}
}

func (f *fakeUsers) follow(_ context.Context, s subjectRef) (userFollower, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{}, 1)
	k := s.Namespace + "\x00" + kidv1.UserIDKey(s.Product, s.Kind, s.ID)
	if f.subs[k] == nil {
		f.subs[k] = map[chan struct{}]struct{}{}
	}
	f.subs[k][ch] = struct{}{}
	return &fakeFollower{f: f, key: k, ch: ch}, nil
}

type fakeFollower struct {
	f   *fakeUsers
	key string
	ch  chan struct{}
}

func (ff *fakeFollower) wake() <-chan struct{} { return ff.ch }

func (ff *fakeFollower) holders() []kidv1.KidUser {
	ff.f.mu.Lock()
	defer ff.f.mu.Unlock()
	return ff.f.users[ff.key]
}

func (ff *fakeFollower) stop() {
	ff.f.mu.Lock()
	defer ff.f.mu.Unlock()
	delete(ff.f.subs[ff.key], ff.ch)
}

func (f *fakeUsers) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, s := range f.subs {
		n += len(s)
	}
	return n
}

// set makes users the holders of key in "default", and wakes its streams.
func (f *fakeUsers) set(key string, users ...kidv1.KidUser) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := "default\x00" + key
	f.users[k] = users
	for ch := range f.subs[k] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func challengeUser(name string, kind kidv1.IdentityKind, id string, st kidv1.KidUserStatus) kidv1.KidUser {
	return kidv1.KidUser{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "demo"}, Identity: kidv1.UserIdentity{Kind: kind, ID: id}},
		Status:     st,
	}
}

// frame is one Server-Sent Event, or a comment.
type frame struct {
	event, data, comment string
}

// sse reads a response's frames into a channel, closed at the end of the
// stream.
func sse(resp *http.Response) <-chan frame {
	out := make(chan frame, 64)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var f frame
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				out <- f
				f = frame{}
			case strings.HasPrefix(line, ":"):
				f.comment = strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "event: "):
				f.event = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				f.data = line[len("data: "):]
			}
		}
	}()
	return out
}

// next returns the next frame that is not a heartbeat (unless heartbeats
// are asked for), failing after timeout; ok is false at the stream's end.
func next(t *testing.T, frames <-chan frame, heartbeats bool) (frame, bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				return frame{}, false
			}
			if f.comment == "heartbeat" && !heartbeats {
				continue
			}
			return f, true
		case <-deadline:
			t.Fatal("no frame within 5s")
		}
	}
}

func nextStatus(t *testing.T, frames <-chan frame) statusMessage {
	t.Helper()
	f, ok := next(t, frames, false)
	if !ok {
		t.Fatal("the stream ended")
	}
	if f.event != "status" {
		t.Fatalf("want a status event, got %+v", f)
	}
	var m statusMessage
	if err := json.Unmarshal([]byte(f.data), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func expectEnd(t *testing.T, frames <-chan frame, reason string) {
	t.Helper()
	f, ok := next(t, frames, false)
	if !ok || f.event != "end" || f.data != `{"reason":"`+reason+`"}` {
		t.Fatalf("want end %s, got %+v (open %v)", reason, f, ok)
	}
	if _, ok := next(t, frames, false); ok {
		t.Fatal("the stream goes on after its end")
	}
}

// openStatus opens a status stream on srv.
func openStatus(t *testing.T, base, tok, origin string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+relayPath+"/status", nil)
	if err != nil {
		t.Fatal(err)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// newStatusServer serves a relay server (on the real clock) over HTTP.
func newStatusServer(t *testing.T, opts BrowserOptions) (*Server, *fakeUsers, string) {
	s, _, users := newRelayServer(t, nil, time.Now())
	s.opts.Clock = clock.RealClock{}
	opts.setDefaults()
	s.browser = newBrowserRelay(users, opts)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return s, users, srv.URL
}

func TestStatusStreamsTheSubjectsStateUntilFinal(t *testing.T) {
	g := NewWithT(t)
	_, users, base := newStatusServer(t, BrowserOptions{})
	key := kidv1.UserIDKey("demo", kidv1.IdentityChallenge, challengeID)

	resp := openStatus(t, base, token(t, relaytoken.KindChallenge, challengeID), pageOrigin)
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	g.Expect(resp.Header.Get("Content-Type")).To(Equal("text/event-stream"))
	g.Expect(resp.Header.Get("Cache-Control")).To(Equal("no-store"))
	g.Expect(resp.Header.Get("Access-Control-Allow-Origin")).To(Equal(pageOrigin))
	frames := sse(resp)

	// Nobody holds the challenge yet.
	g.Expect(nextStatus(t, frames)).To(Equal(statusMessage{
		Subject: statusSubject{Kind: "challenge", ID: challengeID},
		Consent: "None", Verification: "Unverified",
	}))

	// A stand-in appears, pending.
	standIn := challengeUser("demo-challenge-x", kidv1.IdentityChallenge, challengeID, kidv1.KidUserStatus{
		Consent:      kidv1.ConsentStatus{State: kidv1.ConsentPending, ChallengeID: challengeID},
		PersonalData: &kidv1.PersonalData{DateOfBirth: "2014-05-06", ApproverEmail: "parent@example.com"},
	})
	users.set(key, standIn)
	got := nextStatus(t, frames)
	g.Expect(got).To(Equal(statusMessage{
		Subject: statusSubject{Kind: "challenge", ID: challengeID}, User: "demo-challenge-x",
		Consent: "Pending", Verification: "Unverified",
	}))

	// A change that changes nothing the page sees sends nothing.
	standIn.Status.ObservedEvents = 2
	users.set(key, standIn)

	// The session's user holds it too, granted: the stronger user wins,
	// the state is final, and the stream ends.
	session := challengeUser("demo-session-y", kidv1.IdentitySession, sessionID, kidv1.KidUserStatus{
		SessionID: sessionID, ChallengeIDs: []string{challengeID},
		Consent: kidv1.ConsentStatus{State: kidv1.ConsentGranted, ChallengeID: challengeID},
		Session: kidv1.SessionStatus{State: kidv1.SessionActive},
	})
	users.set(key, standIn, session)
	g.Expect(nextStatus(t, frames)).To(Equal(statusMessage{
		Subject: statusSubject{Kind: "challenge", ID: challengeID}, User: "demo-session-y",
		Consent: "Granted", Verification: "Unverified", Session: "Active", Final: true,
	}))
	expectEnd(t, frames, endFinal)
	g.Eventually(users.subscribers).Should(BeZero())
}

func TestStatusStreamNeverSendsPersonalData(t *testing.T) {
	g := NewWithT(t)
	_, users, base := newStatusServer(t, BrowserOptions{})
	users.set(kidv1.UserIDKey("demo", kidv1.IdentityVerification, verifyID), challengeUser("u", kidv1.IdentityVerification, verifyID, kidv1.KidUserStatus{
		KUID:         "kuid-secret",
		PersonalData: &kidv1.PersonalData{DateOfBirth: "1981-06-20", ApproverEmail: "parent@example.com"},
		Verification: kidv1.VerificationStatus{State: kidv1.VerificationVerified, Records: []kidv1.VerificationRecord{{ID: verifyID, State: kidv1.VerificationVerified, Method: "id-document", AgeCategory: "adult"}}},
	}))
	resp := openStatus(t, base, token(t, relaytoken.KindVerification, verifyID), pageOrigin)
	frames := sse(resp)
	f, ok := next(t, frames, false)
	g.Expect(ok).To(BeTrue())
	g.Expect(f.data).NotTo(Or(ContainSubstring("1981"), ContainSubstring("parent@"), ContainSubstring("kuid"), ContainSubstring("adult"), ContainSubstring("id-document")))
	g.Expect(f.data).To(MatchJSON(`{"subject":{"kind":"verification","id":"` + verifyID + `"},"user":"u","consent":"None","verification":"Verified","session":"","final":true}`))
	expectEnd(t, frames, endFinal)
}

func TestStatusStreamSendsHeartbeats(t *testing.T) {
	g := NewWithT(t)
	_, _, base := newStatusServer(t, BrowserOptions{Heartbeat: 50 * time.Millisecond})
	resp := openStatus(t, base, token(t, relaytoken.KindSession, sessionID), pageOrigin)
	frames := sse(resp)
	g.Expect(nextStatus(t, frames).Final).To(BeFalse())
	for range 3 {
		f, ok := next(t, frames, true)
		g.Expect(ok).To(BeTrue())
		g.Expect(f).To(Equal(frame{comment: "heartbeat"}))
	}
}

func TestStatusStreamEnds(t *testing.T) {
	t.Run("when its token expires", func(t *testing.T) {
		// Expiry is in whole seconds: the token expires within two.
		tok, err := relaytoken.Mint([]byte(relayKey), "default/demo", relaytoken.Subject{Kind: relaytoken.KindSession, ID: sessionID}, time.Now().Add(1500*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		_, _, base := newStatusServer(t, BrowserOptions{})
		frames := sse(openStatus(t, base, tok, pageOrigin))
		nextStatus(t, frames)
		expectEnd(t, frames, endExpired)
	})
	t.Run("after its longest duration", func(t *testing.T) {
		_, _, base := newStatusServer(t, BrowserOptions{MaxStreamDuration: 100 * time.Millisecond})
		frames := sse(openStatus(t, base, token(t, relaytoken.KindSession, sessionID), pageOrigin))
		nextStatus(t, frames)
		expectEnd(t, frames, endTimeout)
	})
	t.Run("when the receiver shuts down", func(t *testing.T) {
		s, users, base := newStatusServer(t, BrowserOptions{})
		frames := sse(openStatus(t, base, token(t, relaytoken.KindSession, sessionID), pageOrigin))
		nextStatus(t, frames)
		NewWithT(t).Eventually(users.subscribers).Should(Equal(1))
		s.browser.stop()
		expectEnd(t, frames, endShutdown)
	})
	t.Run("at once when the first state is final", func(t *testing.T) {
		_, users, base := newStatusServer(t, BrowserOptions{})
		users.set(kidv1.UserIDKey("demo", kidv1.IdentitySession, sessionID), challengeUser("s", kidv1.IdentitySession, sessionID, kidv1.KidUserStatus{
			Session: kidv1.SessionStatus{State: kidv1.SessionDeleted},
		}))
		frames := sse(openStatus(t, base, token(t, relaytoken.KindSession, sessionID), pageOrigin))
		m := nextStatus(t, frames)
		NewWithT(t).Expect(m.Session).To(Equal("Deleted"))
		NewWithT(t).Expect(m.Final).To(BeTrue())
		expectEnd(t, frames, endFinal)
	})
}

func TestStatusStreamAnswers(t *testing.T) {
	cases := []struct {
		name   string
		path   string
		origin string
		token  func(t *testing.T) string
		query  bool // the token in the URL instead of Authorization
		want   int
		cors   bool
	}{
		{name: "no token is 401", want: 401, cors: true},
		{name: "a bad token is 401", token: func(*testing.T) string { return "v1.x.y" }, want: 401, cors: true},
		{name: "another product's token is 401", token: func(t *testing.T) string {
			return token(t, relaytoken.KindSession, sessionID, "default/keepsdob")
		}, want: 401, cors: true},
		{name: "no Origin is 403", origin: "-", token: func(t *testing.T) string { return token(t, relaytoken.KindSession, sessionID) }, want: 403},
		{name: "an origin not allowed is 403", origin: "https://evil.example", token: func(t *testing.T) string { return token(t, relaytoken.KindSession, sessionID) }, want: 403},
		{name: "a product without spec.browser is 404", path: "/browser/default/plain/status", token: func(t *testing.T) string { return token(t, relaytoken.KindSession, sessionID) }, want: 404},
		{name: "a product whose token Secret is missing is 503", path: "/browser/default/nokeys/status", token: func(t *testing.T) string { return token(t, relaytoken.KindSession, sessionID) }, want: 503, cors: true},
		{name: "a token in Authorization is 200", token: func(t *testing.T) string { return token(t, relaytoken.KindSession, sessionID) }, want: 200, cors: true},
		{name: "a token in the URL is 400, even a valid one", query: true, token: func(t *testing.T) string { return token(t, relaytoken.KindSession, sessionID) }, want: 400, cors: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			_, _, base := newStatusServer(t, BrowserOptions{})
			path := tc.path
			if path == "" {
				path = relayPath + "/status"
			}
			tok := ""
			if tc.token != nil {
				tok = tc.token(t)
			}
			u := base + path
			if tc.query {
				u += "?token=" + url.QueryEscape(tok)
			}
			req, _ := http.NewRequest(http.MethodGet, u, nil)
			switch tc.origin {
			case "":
				req.Header.Set("Origin", pageOrigin)
			case "-":
			default:
				req.Header.Set("Origin", tc.origin)
			}
			if !tc.query && tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := http.DefaultClient.Do(req)
			g.Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			g.Expect(resp.StatusCode).To(Equal(tc.want))
			if tc.cors {
				g.Expect(resp.Header.Get("Access-Control-Allow-Origin")).To(Equal(pageOrigin))
			} else {
				g.Expect(resp.Header).NotTo(HaveKey("Access-Control-Allow-Origin"))
			}
		})
	}
}

func TestStatusPreflight(t *testing.T) {
	g := NewWithT(t)
	s, _, _ := newRelayServer(t, nil, time.Now())
	rec := relayRequest{method: http.MethodOptions, path: relayPath + "/status"}.do(s)
	g.Expect(rec.Code).To(Equal(http.StatusNoContent))
	g.Expect(rec.Header().Get("Access-Control-Allow-Origin")).To(Equal(pageOrigin))
	g.Expect(rec.Header().Get("Access-Control-Allow-Methods")).To(Equal("GET"))
	g.Expect(rec.Header().Get("Access-Control-Max-Age")).To(Equal("600"))
	rec = relayRequest{method: http.MethodPost, path: relayPath + "/status"}.do(s)
	g.Expect(rec.Code).To(Equal(http.StatusMethodNotAllowed))
}

func TestStatusStreamsAreCappedPerProduct(t *testing.T) {
	g := NewWithT(t)
	_, users, base := newStatusServer(t, BrowserOptions{})
	player := func(i int) string { return token(t, relaytoken.KindSession, "s-"+strconv.Itoa(i)) }
	before := testutil.ToFloat64(statusStreamsRefusedTotal.WithLabelValues("default/demo", capProduct))
	var open []*http.Response
	for i := range relayStreams {
		resp := openStatus(t, base, player(i), pageOrigin)
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
		open = append(open, resp)
	}
	g.Eventually(users.subscribers).Should(Equal(relayStreams))
	refused := openStatus(t, base, player(relayStreams), pageOrigin)
	g.Expect(refused.StatusCode).To(Equal(http.StatusTooManyRequests))
	g.Expect(refused.Header.Get("Retry-After")).To(Equal(RetryAfterSeconds))
	g.Expect(testutil.ToFloat64(statusStreamsRefusedTotal.WithLabelValues("default/demo", capProduct)) - before).To(BeNumerically("==", 1))

	// A closed stream frees its place.
	open[0].Body.Close()
	g.Eventually(users.subscribers).Should(Equal(relayStreams - 1))
	g.Eventually(func() int {
		resp := openStatus(t, base, player(relayStreams), pageOrigin)
		resp.Body.Close()
		return resp.StatusCode
	}).Should(Equal(http.StatusOK))
}

// TestOneTokenCannotTakeTheStreams: one token opens stream after stream (a
// hog: a script, or a page reloaded in a loop). It gets its subject's
// share; the other players of the product, and of another product, still
// open theirs, each one, until the replica's bound, which holds across
// products.
func TestOneTokenCannotTakeTheStreams(t *testing.T) {
	g := NewWithT(t)
	const perSubject, perReplica, hogTries = 2, relayStreams + 1, 10
	_, users, base := newStatusServer(t, BrowserOptions{MaxStreamsPerSubject: perSubject, MaxStreams: perReplica})
	refusedBy := func(product, reason string) float64 {
		return testutil.ToFloat64(statusStreamsRefusedTotal.WithLabelValues(product, reason))
	}
	subjectBefore, replicaBefore := refusedBy("default/demo", capSubject), refusedBy("default/keepsdob", capReplica)

	hog := token(t, relaytoken.KindChallenge, challengeID)
	var hogCodes []int
	for range hogTries {
		resp := openStatus(t, base, hog, pageOrigin)
		hogCodes = append(hogCodes, resp.StatusCode)
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
		}
	}
	want := []int{200, 200}
	for range hogTries - perSubject {
		want = append(want, http.StatusTooManyRequests)
	}
	g.Expect(hogCodes).To(Equal(want), "the hog gets its subject's share")
	g.Expect(refusedBy("default/demo", capSubject)-subjectBefore).To(BeNumerically("==", hogTries-perSubject), "the hog's refusals were its subject's bound")

	// Every other player of the product opens its stream, up to the
	// product's bound, which the hog did not take.
	var others []int
	for i := range relayStreams - perSubject {
		resp := openStatus(t, base, token(t, relaytoken.KindSession, "s-"+strconv.Itoa(i)), pageOrigin)
		others = append(others, resp.StatusCode)
		g.Expect(nextStatus(t, sse(resp)).Subject.ID).To(Equal("s-" + strconv.Itoa(i)))
	}
	g.Expect(others).To(Equal([]int{200, 200}), "every other player's stream opened")
	g.Eventually(users.subscribers).Should(Equal(relayStreams))

	// Another product's player: the last place of the replica, then 429.
	other := func(id string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, base+"/browser/default/keepsdob/status", nil)
		req.Header.Set("Origin", pageOrigin)
		req.Header.Set("Authorization", "Bearer "+token(t, relaytoken.KindSession, id, "default/keepsdob"))
		resp, err := http.DefaultClient.Do(req)
		g.Expect(err).NotTo(HaveOccurred())
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	g.Expect(other("k-1").StatusCode).To(Equal(http.StatusOK))
	g.Expect(other("k-2").StatusCode).To(Equal(http.StatusTooManyRequests))
	g.Expect(refusedBy("default/keepsdob", capReplica) - replicaBefore).To(BeNumerically("==", 1))
	t.Logf("hog: %v; other players of the product: %v; the replica's last place taken, the next refused", hogCodes, others)
}

// The server's read and write timeouts bound deliveries; a stream must
// outlive them.
func TestStatusStreamOutlivesTheServersTimeouts(t *testing.T) {
	g := NewWithT(t)
	s, users, _ := newStatusServer(t, BrowserOptions{Heartbeat: 50 * time.Millisecond})
	srv := s.httpServer(context.Background())
	srv.ReadTimeout = 200 * time.Millisecond
	srv.WriteTimeout = 200 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	frames := sse(openStatus(t, "http://"+ln.Addr().String(), token(t, relaytoken.KindChallenge, challengeID), pageOrigin))
	nextStatus(t, frames)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		f, ok := next(t, frames, true)
		g.Expect(ok).To(BeTrue(), "the stream ended early")
		g.Expect(f.comment).To(Equal("heartbeat"))
	}
	users.set(kidv1.UserIDKey("demo", kidv1.IdentityChallenge, challengeID), challengeUser("c", kidv1.IdentityChallenge, challengeID, kidv1.KidUserStatus{
		Consent: kidv1.ConsentStatus{State: kidv1.ConsentDenied, ChallengeID: challengeID},
	}))
	g.Expect(nextStatus(t, frames).Consent).To(Equal("Denied"))
	expectEnd(t, frames, endFinal)
}

func TestStatusOf(t *testing.T) {
	challenge := relaytoken.Subject{Kind: relaytoken.KindChallenge, ID: "c-2"}
	session := relaytoken.Subject{Kind: relaytoken.KindSession, ID: "s-1"}
	verification := relaytoken.Subject{Kind: relaytoken.KindVerification, ID: "v-2"}
	user := func(st kidv1.KidUserStatus) *kidv1.KidUser {
		u := challengeUser("u", kidv1.IdentitySession, "s-1", st)
		return &u
	}
	records := kidv1.VerificationStatus{State: kidv1.VerificationVerified, Records: []kidv1.VerificationRecord{
		{ID: "v-1", State: kidv1.VerificationVerified}, {ID: "v-2", State: kidv1.VerificationFailed},
	}}
	cases := []struct {
		name    string
		subject relaytoken.Subject
		user    *kidv1.KidUser
		consent string
		verif   string
		final   bool
	}{
		{name: "nobody holds it: nothing known, not final", subject: challenge, consent: "None", verif: "Unverified"},
		{name: "a pending challenge is not final", subject: challenge, user: user(kidv1.KidUserStatus{Consent: kidv1.ConsentStatus{State: kidv1.ConsentPending}}), consent: "Pending", verif: "Unverified"},
		{name: "a granted consent is final", subject: challenge, user: user(kidv1.KidUserStatus{Consent: kidv1.ConsentStatus{State: kidv1.ConsentGranted, ChallengeID: "c-1"}}), consent: "Granted", verif: "Unverified", final: true},
		{name: "a denial of this challenge is final", subject: challenge, user: user(kidv1.KidUserStatus{Consent: kidv1.ConsentStatus{State: kidv1.ConsentDenied, ChallengeID: "c-2"}}), consent: "Denied", verif: "Unverified", final: true},
		{name: "a denial of an earlier challenge is not final for this one", subject: challenge, user: user(kidv1.KidUserStatus{Consent: kidv1.ConsentStatus{State: kidv1.ConsentDenied, ChallengeID: "c-1"}}), consent: "Denied", verif: "Unverified"},
		{name: "a denial is final for a session", subject: session, user: user(kidv1.KidUserStatus{Consent: kidv1.ConsentStatus{State: kidv1.ConsentDenied, ChallengeID: "c-1"}}), consent: "Denied", verif: "Unverified", final: true},
		{name: "a deleted session is final", subject: session, user: user(kidv1.KidUserStatus{Session: kidv1.SessionStatus{State: kidv1.SessionDeleted}}), consent: "None", verif: "Unverified", final: true},
		{name: "a verification reads its own record", subject: verification, user: user(kidv1.KidUserStatus{Verification: records}), consent: "None", verif: "Failed", final: true},
		{name: "a verification without a record is not final", subject: relaytoken.Subject{Kind: relaytoken.KindVerification, ID: "v-3"}, user: user(kidv1.KidUserStatus{Verification: records}), consent: "None", verif: "Unverified"},
		{name: "a verification is not final on consent", subject: relaytoken.Subject{Kind: relaytoken.KindVerification, ID: "v-3"}, user: user(kidv1.KidUserStatus{Consent: kidv1.ConsentStatus{State: kidv1.ConsentGranted}}), consent: "Granted", verif: "Unverified"},
		{name: "a session reads the summary", subject: session, user: user(kidv1.KidUserStatus{Verification: records}), consent: "None", verif: "Verified"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			m := statusOf(tc.subject, tc.user)
			g.Expect(m.Consent).To(Equal(tc.consent))
			g.Expect(m.Verification).To(Equal(tc.verif))
			g.Expect(m.Final).To(Equal(tc.final))
		})
	}
}

func TestStrongestHolder(t *testing.T) {
	g := NewWithT(t)
	g.Expect(strongest(nil)).To(BeNil())
	users := []kidv1.KidUser{
		challengeUser("b-verification", kidv1.IdentityVerification, "v", kidv1.KidUserStatus{}),
		challengeUser("z-session", kidv1.IdentitySession, "s", kidv1.KidUserStatus{}),
		challengeUser("a-challenge", kidv1.IdentityChallenge, "c", kidv1.KidUserStatus{}),
		challengeUser("y-session", kidv1.IdentitySession, "s2", kidv1.KidUserStatus{}),
	}
	g.Expect(strongest(users).Name).To(Equal("y-session"))
	now := metav1.Now()
	users[3].DeletionTimestamp = &now
	g.Expect(strongest(users).Name).To(Equal("z-session"), "a user being deleted is merged away")
}

// TestStatusStreamAnswers503WhenItsUsersCannotBeListed: the API server does
// not answer the first list of the stream's users (overloaded, or a
// selectable field it does not know): past the sync timeout the page gets
// 503 with Retry-After, and the stream's place is free again.
func TestStatusStreamAnswers503WhenItsUsersCannotBeListed(t *testing.T) {
	g := NewWithT(t)
	lists := make(chan struct{}, 16)
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		List: func(ctx context.Context, _ client.WithWatch, _ client.ObjectList, _ ...client.ListOption) error {
			lists <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		},
		// client-go may ask for the first list as a watch's initial
		// events (WatchList): it never answers either.
		Watch: func(ctx context.Context, _ client.WithWatch, _ client.ObjectList, _ ...client.ListOption) (watch.Interface, error) {
			lists <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		},
	}).Build()
	s, _, _ := newStatusServer(t, BrowserOptions{})
	s.browser.users = &watchUsers{client: c, syncTimeout: 200 * time.Millisecond}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	start := time.Now()
	resp := openStatus(t, srv.URL, token(t, relaytoken.KindChallenge, challengeID), pageOrigin)
	g.Expect(resp.StatusCode).To(Equal(http.StatusServiceUnavailable))
	g.Expect(resp.Header.Get("Retry-After")).To(Equal(RetryAfterSeconds))
	g.Expect(time.Since(start)).To(BeNumerically("<", 5*time.Second))
	g.Expect(lists).NotTo(BeEmpty(), "the list was asked for")
	s.browser.mu.Lock()
	defer s.browser.mu.Unlock()
	g.Expect(s.browser.streams).To(BeZero(), "the refused stream holds no place")
}
