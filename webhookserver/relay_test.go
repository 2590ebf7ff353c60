package webhookserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/scheme"
	"github.com/kid-operator/kid-operator/internal/secrets"
	"github.com/kid-operator/kid-operator/webhookserver/relaytoken"
)

const (
	relayKey     = "relay-key"
	pageOrigin   = "https://play.example.com"
	relayPath    = "/browser/default/demo"
	challengeID  = "a04467a0-83de-40ca-8572-8cc761e896aa"
	sessionID    = "f1af4704-74b4-4966-b13a-18eb16bccf9c"
	verifyID     = "4e57301e-a4d1-498f-ac3f-f3d4de19abf6"
	relayBurst   = 3
	relayStreams = 4
)

// DOM examples of k-ID's docs (events spec §3.3).
const (
	domChallenge = `{"eventType":"Widget.AgeGate.Challenge","data":{"status":"PENDING","challengeId":"` + challengeID + `"}}`
	domResult    = `{"eventType":"Widget.AgeGate.Result","data":{"status":"PASS","sessionId":"` + sessionID + `","challengeId":"` + challengeID + `"}}`
	domVerified  = `{"eventType":"Verification.Result","data":{"verificationId":"` + verifyID + `","status":"PASS","method":"id-document","provider":"veratad","age":{"low":43,"high":43},"ageCategory":"adult","dob":"1981-06-20"}}`
	domError     = `{"eventType":"Verification.Error","method":"age-key","status":"ERROR"}`
	domExit      = `{"eventType":"Widget.ExitReview"}`
)

func browserProduct(name, tokenSecret string) *kidv1.KidProduct {
	p := product(name, "demo-webhook")
	p.Spec.Browser = &kidv1.BrowserSpec{
		AllowedOrigins:    []string{pageOrigin, "http://localhost:3000"},
		TokenSecretRef:    kidv1.LocalObjectReference{Name: tokenSecret},
		RequestsPerSecond: ptr.To[int32](1),
		Burst:             ptr.To[int32](relayBurst),
		MaxStreams:        ptr.To[int32](relayStreams),
	}
	return p
}

// newRelayServer returns a ready receiver over a fake API server holding
// "demo" (spec.browser, its token Secret holds relayKey and an empty key),
// "plain" (no spec.browser), "nokeys" (its token Secret is missing) and
// "keepsdob" (as demo, keeping dates of birth). Its clock stands still at
// now, so the rate limiter refills nothing during a test.
func newRelayServer(t *testing.T, funcs *interceptor.Funcs, now time.Time) (*Server, client.Client, *fakeUsers) {
	keeps := browserProduct("keepsdob", "demo-relay")
	keeps.Spec.Privacy.StoreDateOfBirth = true
	objs := []client.Object{
		browserProduct("demo", "demo-relay"),
		browserProduct("nokeys", "missing"),
		keeps,
		product("plain", "demo-webhook"),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "demo-webhook", Namespace: "default", Labels: kidv1.SecretLabels()}, Data: map[string][]byte{"current": []byte(testSecret)}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "demo-relay", Namespace: "default", Labels: kidv1.SecretLabels()}, Data: map[string][]byte{"current": []byte(relayKey), "previous": {}}},
	}
	b := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(objs...)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	c := b.Build()
	users := newFakeUsers()
	s := &Server{reader: c, secrets: secrets.New(c, secrets.Options{}), store: inbox.ClientStore(c, c)}
	s.opts = Options{Clock: testingclock.NewFakePassiveClock(now)}
	s.opts.setDefaults()
	s.browser = newBrowserRelay(users, s.opts.Browser)
	s.MarkReady()
	return s, c, users
}

// token mints a relay token for the product "default/demo" (or product),
// valid for an hour from now.
func token(t *testing.T, kind, id string, product ...string) string {
	t.Helper()
	p := "default/demo"
	if len(product) > 0 {
		p = product[0]
	}
	tok, err := relaytoken.Mint([]byte(relayKey), p, relaytoken.Subject{Kind: kind, ID: id}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// relayRequest is a request to a browser endpoint.
type relayRequest struct {
	method  string
	path    string
	origin  string // default pageOrigin; "-" for none
	token   string // the bearer token; "" for none
	body    string
	headers map[string]string
}

func (r relayRequest) do(s *Server) *httptest.ResponseRecorder {
	if r.method == "" {
		r.method = http.MethodPost
	}
	if r.path == "" {
		r.path = relayPath
	}
	req := httptest.NewRequest(r.method, r.path, strings.NewReader(r.body))
	switch r.origin {
	case "":
		req.Header.Set("Origin", pageOrigin)
	case "-":
	default:
		req.Header.Set("Origin", r.origin)
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
}

func storedEvents(t *testing.T, c client.Client) []kidv1.KidEvent {
	t.Helper()
	var list kidv1.KidEventList
	if err := c.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func TestRelayAnswers(t *testing.T) {
	challenge := func(t *testing.T) string { return token(t, relaytoken.KindChallenge, challengeID) }
	session := func(t *testing.T) string { return token(t, relaytoken.KindSession, sessionID) }
	mint := func(kind, id string, ttl time.Duration) func(*testing.T) string {
		return func(t *testing.T) string {
			tok, err := relaytoken.Mint([]byte(relayKey), "default/demo", relaytoken.Subject{Kind: kind, ID: id}, time.Now().Add(ttl))
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
	}
	cases := []struct {
		name       string
		req        relayRequest
		token      func(*testing.T) string
		now        time.Time // the receiver's clock; default time.Now()
		namespaces []string
		want       int
		cors       bool // Access-Control-Allow-Origin granted
		stored     int
		retryAfter string
	}{
		{name: "GET is 405", req: relayRequest{method: http.MethodGet, body: domChallenge}, token: challenge, want: 405},
		{name: "unknown product is 404", req: relayRequest{path: "/browser/default/nope", body: domChallenge}, token: challenge, want: 404},
		{name: "product without spec.browser is 404", req: relayRequest{path: "/browser/default/plain", body: domChallenge}, token: challenge, want: 404},
		{name: "namespace not served is 404", req: relayRequest{body: domChallenge}, token: challenge, namespaces: []string{"games"}, want: 404},
		{name: "no Origin is 403 without a CORS grant", req: relayRequest{origin: "-", body: domChallenge}, token: challenge, want: 403},
		{name: "an origin not allowed is 403 without a CORS grant", req: relayRequest{origin: "https://evil.example", body: domChallenge}, token: challenge, want: 403},
		{name: "an allowed host on another scheme is 403", req: relayRequest{origin: "http://play.example.com", body: domChallenge}, token: challenge, want: 403},
		{name: "an allowed host on another port is 403", req: relayRequest{origin: "https://play.example.com:8443", body: domChallenge}, token: challenge, want: 403},
		{name: "a body over 8 KiB is 413", req: relayRequest{body: `{"eventType":"Widget.ExitReview","pad":"` + strings.Repeat("x", RelayMaxBodyBytes) + `"}`}, token: challenge, want: 413, cors: true},
		{name: "no token is 401", req: relayRequest{body: domChallenge}, want: 401, cors: true},
		{name: "a token that is not one is 401", req: relayRequest{body: domChallenge}, token: func(*testing.T) string { return "v1.abc.def" }, want: 401, cors: true},
		{name: "a token signed with another key is 401", req: relayRequest{body: domChallenge}, token: func(t *testing.T) string {
			tok, _ := relaytoken.Mint([]byte("guess"), "default/demo", relaytoken.Subject{Kind: relaytoken.KindChallenge, ID: challengeID}, time.Now().Add(time.Hour))
			return tok
		}, want: 401, cors: true},
		{name: "an expired token is 401", req: relayRequest{body: domChallenge}, token: mint(relaytoken.KindChallenge, challengeID, time.Minute), now: time.Now().Add(2 * time.Minute), want: 401, cors: true},
		{name: "a token living over 24h is 401", req: relayRequest{body: domChallenge}, token: mint(relaytoken.KindChallenge, challengeID, 23*time.Hour), now: time.Now().Add(-2 * time.Hour), want: 401, cors: true},
		{name: "a token for another product is 401", req: relayRequest{body: domChallenge}, token: func(t *testing.T) string {
			return token(t, relaytoken.KindChallenge, challengeID, "default/keepsdob")
		}, want: 401, cors: true},
		{name: "a product whose token Secret is missing is 503", req: relayRequest{path: "/browser/default/nokeys", body: domChallenge}, token: challenge, want: 503, cors: true, retryAfter: RetryAfterSeconds},
		{name: "a webhook event type is 400", req: relayRequest{body: `{"eventType":"Challenge.StateChange","data":{"id":"` + challengeID + `","status":"PASS"}}`}, token: challenge, want: 400, cors: true},
		{name: "a body that is not JSON is 400", req: relayRequest{body: "hello"}, token: challenge, want: 400, cors: true},
		{name: "an enveloped type without data is 400", req: relayRequest{body: `{"eventType":"Widget.AgeGate.Challenge","challengeId":"` + challengeID + `"}`}, token: challenge, want: 400, cors: true},
		{name: "another player's challenge is 403", req: relayRequest{body: strings.Replace(domChallenge, challengeID, "other-challenge", 1)}, token: challenge, want: 403, cors: true},
		{name: "a session token on a message naming only a challenge is 403", req: relayRequest{body: domChallenge}, token: session, want: 403, cors: true},
		{name: "a challenge token with the same id as a session is 403", req: relayRequest{body: `{"eventType":"Widget.AgeGate.Result","data":{"status":"PASS","sessionId":"` + challengeID + `"}}`}, token: challenge, want: 403, cors: true},
		{name: "a verification token on another verification is 403", req: relayRequest{body: domVerified}, token: mint(relaytoken.KindVerification, "other", time.Hour), want: 403, cors: true},
		{name: "the player's challenge is 200 and stored", req: relayRequest{body: domChallenge}, token: challenge, want: 200, cors: true, stored: 1},
		{name: "a result naming the token's session and a challenge is 200", req: relayRequest{body: domResult}, token: session, want: 200, cors: true, stored: 1},
		{name: "a result naming the token's challenge and a session is 200", req: relayRequest{body: domResult}, token: challenge, want: 200, cors: true, stored: 1},
		{name: "the flat Verification.Error is 200, under the token's subject", req: relayRequest{body: domError}, token: challenge, want: 200, cors: true, stored: 1},
		{name: "a bare Widget.ExitReview is 200", req: relayRequest{body: domExit}, token: session, want: 200, cors: true, stored: 1},
		{name: "a second allowed origin is 200", req: relayRequest{origin: "http://localhost:3000", body: domExit}, token: session, want: 200, cors: true, stored: 1},
		{name: "a lower-case bearer scheme is 200", req: relayRequest{body: domExit, headers: map[string]string{"Authorization": "bearer " + token(t, relaytoken.KindSession, sessionID)}}, want: 200, cors: true, stored: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			now := tc.now
			if now.IsZero() {
				now = time.Now()
			}
			s, c, _ := newRelayServer(t, nil, now)
			if tc.namespaces != nil {
				s.namespaces = map[string]bool{}
				for _, ns := range tc.namespaces {
					s.namespaces[ns] = true
				}
			}
			if tc.token != nil {
				tc.req.token = tc.token(t)
			}
			rec := tc.req.do(s)
			g.Expect(rec.Code).To(Equal(tc.want), rec.Body.String())
			g.Expect(rec.Header().Get("Content-Type")).To(Equal("application/json"))
			var answer struct {
				Stored bool   `json:"stored"`
				Error  string `json:"error"`
			}
			g.Expect(json.Unmarshal(rec.Body.Bytes(), &answer)).To(Succeed())
			g.Expect(answer.Stored).To(Equal(tc.want == 200))
			if tc.cors {
				g.Expect(rec.Header().Get("Access-Control-Allow-Origin")).To(Equal(tc.req.originOr(pageOrigin)))
				g.Expect(rec.Header().Values("Vary")).To(ContainElement("Origin"))
				g.Expect(rec.Header().Get("Access-Control-Expose-Headers")).To(Equal("Retry-After"))
			} else {
				g.Expect(rec.Header()).NotTo(HaveKey("Access-Control-Allow-Origin"))
			}
			if tc.want == 401 {
				g.Expect(rec.Header().Get("WWW-Authenticate")).To(HavePrefix("Bearer"))
			}
			g.Expect(rec.Header().Get("Retry-After")).To(Equal(tc.retryAfter))
			g.Expect(storedEvents(t, c)).To(HaveLen(tc.stored))
		})
	}
}

func (r relayRequest) originOr(def string) string {
	if r.origin == "" {
		return def
	}
	return r.origin
}

func TestRelayPreflight(t *testing.T) {
	g := NewWithT(t)
	s, c, _ := newRelayServer(t, nil, time.Now())
	rec := relayRequest{method: http.MethodOptions, headers: map[string]string{
		"Access-Control-Request-Method":  "POST",
		"Access-Control-Request-Headers": "authorization,content-type",
	}}.do(s)
	g.Expect(rec.Code).To(Equal(http.StatusNoContent))
	g.Expect(rec.Header().Get("Access-Control-Allow-Origin")).To(Equal(pageOrigin))
	g.Expect(rec.Header().Get("Access-Control-Allow-Methods")).To(Equal("POST"))
	g.Expect(rec.Header().Get("Access-Control-Allow-Headers")).To(Equal("Authorization, Content-Type"))
	g.Expect(rec.Header().Get("Access-Control-Max-Age")).To(Equal("600"))
	g.Expect(rec.Header().Values("Vary")).To(ContainElement("Origin"))
	g.Expect(rec.Body.Len()).To(BeZero())

	rec = relayRequest{method: http.MethodOptions, origin: "https://evil.example"}.do(s)
	g.Expect(rec.Code).To(Equal(http.StatusForbidden))
	g.Expect(rec.Header()).NotTo(HaveKey("Access-Control-Allow-Origin"))
	g.Expect(rec.Header()).NotTo(HaveKey("Access-Control-Allow-Methods"))

	rec = relayRequest{method: http.MethodOptions, path: "/browser/default/plain"}.do(s)
	g.Expect(rec.Code).To(Equal(http.StatusNotFound))
	g.Expect(rec.Header()).NotTo(HaveKey("Access-Control-Allow-Origin"))

	// A preflight takes nothing from the rate limit.
	for range 3 * relayBurst {
		g.Expect(relayRequest{method: http.MethodOptions}.do(s).Code).To(Equal(http.StatusNoContent))
	}
	g.Expect(relayRequest{body: domExit, token: token(t, relaytoken.KindSession, sessionID)}.do(s).Code).To(Equal(http.StatusOK))
	g.Expect(storedEvents(t, c)).To(HaveLen(1))
}

func TestRelayStoresABrowserEventUnderTheTokensSubject(t *testing.T) {
	g := NewWithT(t)
	now := time.Now()
	s, c, _ := newRelayServer(t, nil, now)
	rec := relayRequest{body: domVerified, token: token(t, relaytoken.KindVerification, verifyID)}.do(s)
	g.Expect(rec.Code).To(Equal(http.StatusOK), rec.Body.String())
	g.Expect(rec.Body.String()).To(MatchJSON(`{"stored":true}`))

	events := storedEvents(t, c)
	g.Expect(events).To(HaveLen(1))
	e := events[0]
	g.Expect(e.Name).To(HavePrefix("demo-verification-result-"))
	g.Expect(e.Spec.Source).To(Equal(kidv1.SourceBrowser))
	g.Expect(e.Spec.EventType).To(Equal("Verification.Result"))
	g.Expect(e.Spec.Subject).To(Equal(kidv1.EventSubject{VerificationIDs: []string{verifyID}}))
	g.Expect(e.Spec.ProductRef.Name).To(Equal("demo"))
	g.Expect(e.Spec.SignedAt).To(BeNil())
	g.Expect(e.Spec.ReceivedAt.Unix()).To(Equal(now.Unix()))
	// The date of birth was removed, so the digest is of what is stored,
	// never of the body that held it (inbox.storedBody).
	sum := sha256.Sum256([]byte(`{"data":{"age":{"high":43,"low":43},"ageCategory":"adult","method":"id-document","provider":"veratad","status":"PASS","verificationId":"` + verifyID + `"},"eventType":"Verification.Result"}`))
	g.Expect(e.Spec.BodySHA256).To(Equal(hex.EncodeToString(sum[:])))
	raw := sha256.Sum256([]byte(domVerified))
	g.Expect(e.Spec.BodySHA256).NotTo(Equal(hex.EncodeToString(raw[:])))
	g.Expect(string(e.Spec.Data.Raw)).NotTo(Or(ContainSubstring(`"dob"`), ContainSubstring("1981-06-20")))
	g.Expect(e.Spec.PersonalData).To(BeFalse())
	g.Expect(e.Labels).To(HaveKeyWithValue(kidv1.ProductLabel, "demo"))
	g.Expect(e.Annotations).To(HaveKeyWithValue(kidv1.SubjectAnnotation, "verification/"+verifyID))

	// A product whose privacy settings keep the date of birth keeps it.
	rec = relayRequest{path: "/browser/default/keepsdob", body: domVerified, token: token(t, relaytoken.KindVerification, verifyID, "default/keepsdob")}.do(s)
	g.Expect(rec.Code).To(Equal(http.StatusOK), rec.Body.String())
	var kept kidv1.KidEventList
	g.Expect(c.List(context.Background(), &kept, client.MatchingLabels{kidv1.ProductLabel: "keepsdob"})).To(Succeed())
	g.Expect(kept.Items).To(HaveLen(1))
	g.Expect(string(kept.Items[0].Spec.Data.Raw)).To(ContainSubstring("1981-06-20"))
	g.Expect(kept.Items[0].Spec.PersonalData).To(BeTrue())
}

func TestRelayingOneMessageTwiceStoresOneEvent(t *testing.T) {
	g := NewWithT(t)
	now := time.Now()
	s, c, _ := newRelayServer(t, nil, now)
	clk := testingclock.NewFakeClock(now)
	s.opts.Clock = clk
	// A second between requests: the rate limit is not under test.
	do := func(r relayRequest) *httptest.ResponseRecorder {
		clk.Step(time.Second)
		return r.do(s)
	}
	tok := token(t, relaytoken.KindChallenge, challengeID)
	for range 2 {
		rec := do(relayRequest{body: domChallenge, token: tok})
		g.Expect(rec.Code).To(Equal(http.StatusOK), rec.Body.String())
		g.Expect(rec.Body.String()).To(MatchJSON(`{"stored":true}`))
	}
	g.Expect(storedEvents(t, c)).To(HaveLen(1))

	// The same bytes from another player are that player's event.
	g.Expect(do(relayRequest{body: domExit, token: token(t, relaytoken.KindSession, "s-1")}).Code).To(Equal(http.StatusOK))
	g.Expect(do(relayRequest{body: domExit, token: token(t, relaytoken.KindSession, "s-2")}).Code).To(Equal(http.StatusOK))
	g.Expect(storedEvents(t, c)).To(HaveLen(3))
}

func TestRelayLimitsEachProductsRate(t *testing.T) {
	g := NewWithT(t)
	// The clock stands still: the bucket holds the burst and refills
	// nothing.
	now := time.Now()
	s, c, _ := newRelayServer(t, nil, now)
	before := testutil.ToFloat64(relayRequestsTotal.WithLabelValues("default/demo", "429"))
	tok := token(t, relaytoken.KindSession, sessionID)
	body := func(i int) string {
		return `{"eventType":"Widget.ExitReview","data":{"n":` + string(rune('0'+i)) + `}}`
	}
	codes := []int{}
	for i := range relayBurst + 5 {
		rec := relayRequest{body: body(i), token: tok}.do(s)
		codes = append(codes, rec.Code)
		if rec.Code == http.StatusTooManyRequests {
			g.Expect(rec.Header().Get("Retry-After")).To(Equal("1"), "one token a second")
			g.Expect(rec.Header().Get("Access-Control-Allow-Origin")).To(Equal(pageOrigin), "the page may read the answer")
		}
	}
	g.Expect(codes).To(Equal([]int{200, 200, 200, 429, 429, 429, 429, 429}))
	g.Expect(storedEvents(t, c)).To(HaveLen(relayBurst))
	g.Expect(testutil.ToFloat64(relayRequestsTotal.WithLabelValues("default/demo", "429"))).To(Equal(before + 5))

	// Past the limit a refused token is still 401: the token comes first.
	g.Expect(relayRequest{body: body(0), token: "junk"}.do(s).Code).To(Equal(http.StatusUnauthorized))
	// Another product has a bucket of its own.
	g.Expect(relayRequest{path: "/browser/default/keepsdob", body: domExit, token: token(t, relaytoken.KindSession, sessionID, "default/keepsdob")}.do(s).Code).To(Equal(http.StatusOK))

	// A second later there is one token again.
	s.opts.Clock = testingclock.NewFakePassiveClock(now.Add(time.Second))
	g.Expect(relayRequest{body: body(9), token: tok}.do(s).Code).To(Equal(http.StatusOK))
	g.Expect(relayRequest{body: body(8), token: tok}.do(s).Code).To(Equal(http.StatusTooManyRequests))
}

// TestRelayFloodWithoutATokenSpendsNoPlayersBucket floods the relay with
// what anyone can send: an allowed Origin (a header anyone sets) and no
// token, or a junk one. Meanwhile the product's players relay as many
// messages as its burst allows: each is accepted and stored, one by one.
// The clock stands still, so the bucket refills nothing: had the flood
// spent a token of it, a genuine relay would have been 429.
func TestRelayFloodWithoutATokenSpendsNoPlayersBucket(t *testing.T) {
	g := NewWithT(t)
	s, c, _ := newRelayServer(t, nil, time.Now())
	before := testutil.ToFloat64(relayRequestsTotal.WithLabelValues("default/demo", "401"))
	const flooders, each = 4, 250

	var wg sync.WaitGroup
	var sent atomic.Int64
	floodCodes := make(chan int, flooders*each)
	for f := range flooders {
		wg.Go(func() {
			for i := range each {
				tok := ""
				if i%2 == 1 {
					tok = "v1.junk.junk"
				}
				floodCodes <- relayRequest{body: domChallenge, token: tok, origin: pageOrigin, headers: map[string]string{"X-Flooder": strconv.Itoa(f)}}.do(s).Code
				sent.Add(1)
			}
		})
	}
	// The players' genuine relays, once half the flood was answered and
	// while the rest runs: a message each of three players (the
	// product's burst).
	g.Eventually(sent.Load).Should(BeNumerically(">=", flooders*each/2))
	genuine := []struct{ kind, id, body string }{
		{relaytoken.KindChallenge, challengeID, domChallenge},
		{relaytoken.KindSession, sessionID, domExit},
		{relaytoken.KindVerification, verifyID, domVerified},
	}
	codes := make([]int, len(genuine))
	for i, m := range genuine {
		codes[i] = relayRequest{body: m.body, token: token(t, m.kind, m.id)}.do(s).Code
	}
	wg.Wait()
	close(floodCodes)

	g.Expect(codes).To(Equal([]int{200, 200, 200}), "every genuine relay accepted")
	stored := storedEvents(t, c)
	g.Expect(stored).To(HaveLen(len(genuine)))
	subjects := map[string]bool{}
	for _, e := range stored {
		subjects[e.Annotations[kidv1.SubjectAnnotation]] = true
	}
	g.Expect(subjects).To(Equal(map[string]bool{
		"challenge/" + challengeID: true, "session/" + sessionID: true, "verification/" + verifyID: true,
	}), "each genuine relay stored under its own subject")

	flood := map[int]int{}
	for code := range floodCodes {
		flood[code]++
	}
	g.Expect(flood).To(Equal(map[int]int{http.StatusUnauthorized: flooders * each}), "the flood landed, and was refused")
	g.Expect(testutil.ToFloat64(relayRequestsTotal.WithLabelValues("default/demo", "401")) - before).To(BeNumerically("==", flooders*each))
	t.Logf("flood: %v; genuine: %v, %d stored", flood, codes, len(stored))

	// The bucket holds what the players spent, and no more.
	g.Expect(relayRequest{body: domResult, token: token(t, relaytoken.KindChallenge, challengeID)}.do(s).Code).To(Equal(http.StatusTooManyRequests))
}

func TestRelayFollowsAChangedRate(t *testing.T) {
	g := NewWithT(t)
	now := time.Now()
	s, c, _ := newRelayServer(t, nil, now)
	tok := token(t, relaytoken.KindSession, sessionID)
	for i := range relayBurst {
		g.Expect(relayRequest{body: `{"eventType":"Widget.ExitReview","data":{"n":` + string(rune('0'+i)) + `}}`, token: tok}.do(s).Code).To(Equal(http.StatusOK))
	}
	g.Expect(relayRequest{body: domExit, token: tok}.do(s).Code).To(Equal(http.StatusTooManyRequests))

	p := &kidv1.KidProduct{}
	g.Expect(c.Get(context.Background(), types.NamespacedName{Namespace: "default", Name: "demo"}, p)).To(Succeed())
	p.Spec.Browser.RequestsPerSecond = ptr.To[int32](100)
	g.Expect(c.Update(context.Background(), p)).To(Succeed())
	// The next request sees the new rate, which applies from then on.
	clk := testingclock.NewFakePassiveClock(now)
	at := func(d time.Duration) { clk.SetTime(now.Add(d)) }
	s.opts.Clock = clk
	at(10 * time.Millisecond)
	g.Expect(relayRequest{body: domExit, token: tok}.do(s).Code).To(Equal(http.StatusTooManyRequests))
	at(30 * time.Millisecond)
	g.Expect(relayRequest{body: domExit, token: tok}.do(s).Code).To(Equal(http.StatusOK), "100/s refills one in 10 ms")
}

func TestRelayAnswers503WhenTheAPIServerFails(t *testing.T) {
	g := NewWithT(t)
	s, c, _ := newRelayServer(t, &interceptor.Funcs{
		Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
			return errors.New("connection refused")
		},
	}, time.Now())
	rec := relayRequest{body: domChallenge, token: token(t, relaytoken.KindChallenge, challengeID)}.do(s)
	g.Expect(rec.Code).To(Equal(http.StatusServiceUnavailable))
	g.Expect(rec.Header().Get("Retry-After")).To(Equal(RetryAfterSeconds))
	g.Expect(rec.Body.String()).To(MatchJSON(`{"stored":false,"error":"event not stored"}`))
	g.Expect(storedEvents(t, c)).To(BeEmpty())
}

func TestRelayIsUnavailableUntilCachesSync(t *testing.T) {
	g := NewWithT(t)
	s, c, _ := newRelayServer(t, nil, time.Now())
	s.synced.Store(false)
	rec := relayRequest{body: domChallenge, token: token(t, relaytoken.KindChallenge, challengeID)}.do(s)
	g.Expect(rec.Code).To(Equal(http.StatusServiceUnavailable))
	g.Expect(storedEvents(t, c)).To(BeEmpty())
}

func TestRelayVerifiesAKeyAddedToTheSecretAtOnce(t *testing.T) {
	g := NewWithT(t)
	s, c, _ := newRelayServer(t, nil, time.Now())
	tok := token(t, relaytoken.KindSession, sessionID)
	g.Expect(relayRequest{body: domExit, token: tok}.do(s).Code).To(Equal(http.StatusOK))

	secret := &corev1.Secret{}
	g.Expect(c.Get(context.Background(), types.NamespacedName{Namespace: "default", Name: "demo-relay"}, secret)).To(Succeed())
	secret.Data["next"] = []byte("next-key")
	g.Expect(c.Update(context.Background(), secret)).To(Succeed())
	// The cached copy lacks the new key; the refused signature re-reads it.
	time.Sleep(secrets.DefaultMinRefreshInterval)
	next, err := relaytoken.Mint([]byte("next-key"), "default/demo", relaytoken.Subject{Kind: relaytoken.KindSession, ID: sessionID}, time.Now().Add(time.Hour))
	g.Expect(err).NotTo(HaveOccurred())
	rec := relayRequest{body: `{"eventType":"Widget.ExitReview","data":{}}`, token: next}.do(s)
	g.Expect(rec.Code).To(Equal(http.StatusOK), rec.Body.String())
}
