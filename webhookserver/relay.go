package webhookserver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/secrets"
	"github.com/kid-operator/kid-operator/webhookserver/relaytoken"
)

// The browser relay: a game's page relays k-ID's widget (DOM) events to
//
//	POST /browser/{namespace}/{product}
//	Origin: one of spec.browser.allowedOrigins
//	Authorization: Bearer <relay token>      (webhookserver/relaytoken)
//	{"eventType": "...", "data": {...}}      (or the flat Verification.Error)
//
// and the receiver stores each as a KidEvent with source browser (a hint,
// never folded: the controllers ask k-ID about its subject). The checks, in
// order: the product has spec.browser (404), the Origin is allowed (403,
// with no CORS grant), the token (401; 503 without a usable Secret), the
// product's rate (429), the body's size (413), a browser slot (503), the
// message (400), its ids against the token's subject (403), and the store
// (200 once stored or already stored; 503 when the API server failed).
// Nothing is stored before every check passed. The token comes before the
// rate: an Origin header is anyone's to set, and a flood without a valid
// token must not spend the bucket of the product's players (an HMAC costs
// microseconds).

// Defaults and bounds of the browser endpoints.
const (
	// RelayMaxBodyBytes caps a relayed message; a larger one gets 413.
	RelayMaxBodyBytes = 8 << 10
	// DefaultStatusHeartbeat is the interval of the status stream's
	// heartbeat comment, which keeps proxies from closing an idle stream.
	DefaultStatusHeartbeat = 15 * time.Second
	// DefaultStatusMaxDuration bounds one status stream; the browser
	// module then reconnects, with the same token while it is valid.
	DefaultStatusMaxDuration = 30 * time.Minute
	// DefaultMaxStreams is the default of BrowserOptions.MaxStreams: the
	// status streams one receiver replica serves at once, across
	// products. Each holds one or two watches on the API server, its
	// connection and a few goroutines: at most 130 KiB of heap each
	// (measured, clients included), so the default takes at most 65 MiB of
	// the receiver's 256 MiB.
	DefaultMaxStreams = 500
	// DefaultMaxStreamsPerSubject is the default of
	// BrowserOptions.MaxStreamsPerSubject: the status streams of one
	// subject (a relay token's challenge, verification or session) open at
	// once on a replica: a player's few tabs, and a reconnect while the
	// old stream is not yet seen closed.
	DefaultMaxStreamsPerSubject = 4
	// corsMaxAge is how long a browser may reuse a preflight's answer.
	corsMaxAge = "600"
)

// BrowserOptions configure the browser relay and the status stream.
type BrowserOptions struct {
	// Users is the client the status stream watches KidUsers with: it
	// must read the API server, not a cache (status_users.go). Nil means
	// every status stream is answered 503.
	Users client.WithWatch
	// Heartbeat is the interval of the status stream's heartbeat comment;
	// 0 means DefaultStatusHeartbeat.
	Heartbeat time.Duration
	// MaxStreamDuration bounds one status stream; 0 means
	// DefaultStatusMaxDuration.
	MaxStreamDuration time.Duration
	// MaxStreams bounds the status streams open at once on this replica,
	// whatever their product (each product has its own bound besides,
	// spec.browser.maxStreams); 0 means DefaultMaxStreams.
	MaxStreams int
	// MaxStreamsPerSubject bounds the status streams open at once for one
	// subject, so that one token cannot take a product's streams; 0 means
	// DefaultMaxStreamsPerSubject.
	MaxStreamsPerSubject int
}

func (o *BrowserOptions) setDefaults() {
	if o.MaxStreams <= 0 {
		o.MaxStreams = DefaultMaxStreams
	}
	if o.MaxStreamsPerSubject <= 0 {
		o.MaxStreamsPerSubject = DefaultMaxStreamsPerSubject
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultStatusHeartbeat
	}
	if o.MaxStreamDuration <= 0 {
		o.MaxStreamDuration = DefaultStatusMaxDuration
	}
}

// browserRelay is the receiver's state for the browser endpoints: a rate
// limiter and a count of open status streams per product, the streams open
// per subject and on the replica, and where the status stream reads
// KidUsers.
type browserRelay struct {
	opts  BrowserOptions
	users userSource

	mu       sync.Mutex
	products map[types.NamespacedName]*productRelay
	// subjects counts the open streams of each subject that has one
	// (so it holds at most MaxStreams entries).
	subjects map[string]int
	// streams counts the open streams of the replica.
	streams int

	// stopping is closed when the receiver shuts down: open status
	// streams end, so that the server drains at once.
	stopping chan struct{}
	stopOnce sync.Once
}

func newBrowserRelay(users userSource, opts BrowserOptions) *browserRelay {
	opts.setDefaults()
	return &browserRelay{
		opts: opts, users: users, products: map[types.NamespacedName]*productRelay{}, subjects: map[string]int{},
		stopping: make(chan struct{}),
	}
}

func (b *browserRelay) stop() { b.stopOnce.Do(func() { close(b.stopping) }) }

// productRelay is one product's share of the browser endpoints.
type productRelay struct {
	limiter *rate.Limiter
	// streams is guarded by browserRelay.mu.
	streams int
}

// product returns the product's relay state, with its limiter following the
// product's current spec.browser (a changed rate or burst takes effect at
// once; the bucket survives).
func (b *browserRelay) product(p *kidv1.KidProduct, now time.Time) (*productRelay, int) {
	rps, burst, maxStreams := p.Spec.Browser.Limits()
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	b.mu.Lock()
	defer b.mu.Unlock()
	pr, ok := b.products[key]
	if !ok {
		pr = &productRelay{limiter: rate.NewLimiter(rate.Limit(rps), burst)}
		b.products[key] = pr
		return pr, maxStreams
	}
	if pr.limiter.Limit() != rate.Limit(rps) {
		pr.limiter.SetLimitAt(now, rate.Limit(rps))
	}
	if pr.limiter.Burst() != burst {
		pr.limiter.SetBurstAt(now, burst)
	}
	return pr, maxStreams
}

// allow takes one token from the product's bucket, or returns how long until
// one is there.
func (pr *productRelay) allow(now time.Time) (time.Duration, bool) {
	r := pr.limiter.ReserveN(now, 1)
	if !r.OK() {
		return time.Second, false
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}

// Which bound refused a status stream (the metric's reason, the answer's
// message).
const (
	capSubject = "subject"
	capProduct = "product"
	capReplica = "replica"
)

// openStream counts a new status stream of a subject (its product, kind and
// id) in product pr, unless the subject, the product (limit) or the replica
// has as many open as it may; then it returns which. close gives the place
// back.
func (b *browserRelay) openStream(pr *productRelay, limit int, subject string) (closeStream func(), refused string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.subjects[subject] >= b.opts.MaxStreamsPerSubject:
		return nil, capSubject
	case pr.streams >= limit:
		return nil, capProduct
	case b.streams >= b.opts.MaxStreams:
		return nil, capReplica
	}
	b.subjects[subject]++
	pr.streams++
	b.streams++
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.subjects[subject]--; b.subjects[subject] <= 0 {
				delete(b.subjects, subject)
			}
			pr.streams--
			b.streams--
		})
	}, ""
}

// handleBrowser registers the browser endpoints.
func (s *Server) handleBrowser(mux *http.ServeMux) {
	mux.HandleFunc("/browser/{namespace}/{product}", s.relay)
	mux.HandleFunc("/browser/{namespace}/{product}/status", s.status)
}

// relay handles one relayed DOM event (or its CORS preflight).
func (s *Server) relay(w http.ResponseWriter, r *http.Request) {
	productLabel := "unknown"
	code := s.handleRelay(w, r, &productLabel)
	relayRequestsTotal.WithLabelValues(productLabel, strconv.Itoa(code)).Inc()
}

// browserPreamble does what the relay and the status stream do first: the
// method, the product (with spec.browser, in a watched namespace), the
// origin, and a preflight. It returns the product, or nil and the code it
// answered.
func (s *Server) browserPreamble(w http.ResponseWriter, r *http.Request, productLabel *string, method string) (*kidv1.KidProduct, int) {
	if r.Method != method && r.Method != http.MethodOptions {
		w.Header().Set("Allow", http.MethodOptions+", "+method)
		return nil, relayAnswer(w, http.StatusMethodNotAllowed, "only "+method+" is accepted")
	}
	product, code := s.browserProduct(w, r, productLabel)
	if code != 0 {
		return nil, code
	}
	if code := allowOrigin(w, r, product); code != 0 {
		return nil, code
	}
	if r.Method == http.MethodOptions {
		return nil, preflight(w, method)
	}
	return product, 0
}

func (s *Server) handleRelay(w http.ResponseWriter, r *http.Request, productLabel *string) int {
	log := ctrl.LoggerFrom(r.Context())
	product, code := s.browserPreamble(w, r, productLabel, http.MethodPost)
	if product == nil {
		return code
	}

	// The token first: a request without a valid one spends nothing of
	// the product's players (the bucket, the in-flight slots).
	claims, code, msg := s.verifyRelayToken(r.Context(), product, bearer(r))
	if code != 0 {
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", RetryAfterSeconds)
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kid-operator"`)
		}
		return relayAnswer(w, code, msg)
	}

	now := s.opts.Clock.Now()
	pr, _ := s.browser.product(product, now)
	if wait, ok := pr.allow(now); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		return relayAnswer(w, http.StatusTooManyRequests, "rate limited")
	}

	body, code := readCapped(r, RelayMaxBodyBytes)
	if code != 0 {
		return relayAnswer(w, code, http.StatusText(code))
	}
	release, ok := s.acquire(endpointBrowser)
	if !ok {
		w.Header().Set("Retry-After", RetryAfterSeconds)
		return relayAnswer(w, http.StatusServiceUnavailable, "too many events in flight")
	}
	defer release()

	dom, err := inbox.ParseBrowser(body)
	if err != nil {
		return relayAnswer(w, http.StatusBadRequest, err.Error())
	}
	if dom.NamesIDs() && !namesSubject(dom, claims.Subject) {
		// A token is for one player's id: it cannot relay another's.
		return relayAnswer(w, http.StatusForbidden, "the event names no id of the token's subject")
	}
	event, err := inbox.BuildBrowser(product, dom, eventSubject(claims.Subject), now)
	if err != nil {
		return relayAnswer(w, http.StatusBadRequest, err.Error())
	}

	ctx, cancel := context.WithTimeout(r.Context(), s.opts.StoreTimeout)
	defer cancel()
	switch err := s.store(ctx, product, event); {
	case err == nil, apierrors.IsAlreadyExists(err):
		// AlreadyExists: the same message relayed again (a reload, a
		// retry): one event.
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		return relayAnswer(w, http.StatusBadRequest, "event refused by the API server")
	default:
		log.Error(err, "storing browser event", "product", *productLabel, "eventType", dom.EventType)
		w.Header().Set("Retry-After", RetryAfterSeconds)
		return relayAnswer(w, http.StatusServiceUnavailable, "event not stored")
	}
	return relayAnswer(w, http.StatusOK, "")
}

// browserProduct returns the product of the request's path if it is served
// here and has spec.browser; otherwise it answers (503 until the caches
// synced, 404) and returns the code.
func (s *Server) browserProduct(w http.ResponseWriter, r *http.Request, productLabel *string) (*kidv1.KidProduct, int) {
	if !s.synced.Load() {
		w.Header().Set("Retry-After", RetryAfterSeconds)
		return nil, relayAnswer(w, http.StatusServiceUnavailable, "the receiver is starting")
	}
	key := types.NamespacedName{Namespace: r.PathValue("namespace"), Name: r.PathValue("product")}
	if s.namespaces != nil && !s.namespaces[key.Namespace] {
		return nil, relayAnswer(w, http.StatusNotFound, "no such product")
	}
	var product kidv1.KidProduct
	if err := s.reader.Get(r.Context(), key, &product); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, relayAnswer(w, http.StatusNotFound, "no such product")
		}
		ctrl.LoggerFrom(r.Context()).Error(err, "reading product from cache", "product", key)
		w.Header().Set("Retry-After", RetryAfterSeconds)
		return nil, relayAnswer(w, http.StatusServiceUnavailable, "product unavailable")
	}
	if product.Spec.Browser == nil {
		// The product does not take browser events: as unknown here as a
		// product that does not exist.
		return nil, relayAnswer(w, http.StatusNotFound, "no such product")
	}
	*productLabel = key.String()
	return &product, 0
}

// allowOrigin grants CORS to an Origin the product allows (exactly, scheme
// and port included) and answers 403, with no grant, to any other, and to a
// request without Origin (the endpoints are for browsers).
func allowOrigin(w http.ResponseWriter, r *http.Request, p *kidv1.KidProduct) int {
	h := w.Header()
	h.Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if origin == "" || !slices.Contains(p.Spec.Browser.AllowedOrigins, origin) {
		return relayAnswer(w, http.StatusForbidden, "origin not allowed")
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Expose-Headers", "Retry-After")
	return 0
}

// preflight answers a CORS preflight of an allowed origin.
func preflight(w http.ResponseWriter, method string) int {
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", method)
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	h.Set("Access-Control-Max-Age", corsMaxAge)
	w.WriteHeader(http.StatusNoContent)
	return http.StatusNoContent
}

// verifyRelayToken checks a relay token against the keys of the product's
// token Secret. It returns 401 for a missing or refused token and 503 when
// the product has no usable Secret, with a message that names no value.
func (s *Server) verifyRelayToken(ctx context.Context, p *kidv1.KidProduct, token string) (relaytoken.Claims, int, string) {
	keys, _, err := s.relayKeys(ctx, p, false)
	if apierrors.IsNotFound(err) || errors.Is(err, relaytoken.ErrNoKeys) || secrets.IsNotLabelled(err) {
		// The Secret may have been fixed since it was read.
		keys, _, err = s.relayKeys(ctx, p, true)
	}
	if err != nil {
		ctrl.LoggerFrom(ctx).Info("refusing browser request: product has no usable relay token secret", "product", p.Namespace+"/"+p.Name, "reason", err.Error())
		return relaytoken.Claims{}, http.StatusServiceUnavailable, "product not ready"
	}
	if token == "" {
		return relaytoken.Claims{}, http.StatusUnauthorized, "relay token missing"
	}
	product := p.Namespace + "/" + p.Name
	claims, err := relaytoken.VerifyClaims(keys, token, product, s.opts.Clock.Now())
	if errors.Is(err, relaytoken.ErrBadSignature) {
		// The Secret may have been rotated since it was read; the cache
		// re-reads one Secret at most once a second.
		if fresh, reread, ferr := s.relayKeys(ctx, p, true); ferr == nil && reread {
			claims, err = relaytoken.VerifyClaims(fresh, token, product, s.opts.Clock.Now())
		}
	}
	if err != nil {
		relayTokenFailuresTotal.WithLabelValues(product, tokenFailureReason(err)).Inc()
		return relaytoken.Claims{}, http.StatusUnauthorized, "invalid relay token"
	}
	return claims, 0, ""
}

// relayKeys returns the non-empty values of the product's relay token
// Secret, as the webhook keys are read (webhookKeys).
func (s *Server) relayKeys(ctx context.Context, p *kidv1.KidProduct, refresh bool) ([][]byte, bool, error) {
	found, reread, err := s.secretKeys(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Spec.Browser.TokenSecretRef.Name}, refresh)
	if err != nil {
		return nil, reread, err
	}
	var keys [][]byte
	for _, k := range found {
		keys = append(keys, k.Secret)
	}
	if len(keys) == 0 {
		return nil, reread, relaytoken.ErrNoKeys
	}
	return keys, reread, nil
}

func tokenFailureReason(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{
		{relaytoken.ErrMalformed, "malformed"},
		{relaytoken.ErrBadSignature, "signature"},
		{relaytoken.ErrExpired, "expired"},
		{relaytoken.ErrTooLong, "too_long"},
		{relaytoken.ErrWrongProduct, "wrong_product"},
	} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "error"
}

// bearer returns the token of an "Authorization: Bearer" header, or "".
func bearer(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// namesSubject reports whether the message names the subject's id under the
// subject's kind.
func namesSubject(m *inbox.BrowserMessage, s relaytoken.Subject) bool {
	switch s.Kind {
	case relaytoken.KindChallenge:
		return m.ChallengeID == s.ID
	case relaytoken.KindSession:
		return m.SessionID == s.ID
	case relaytoken.KindVerification:
		return m.VerificationID == s.ID
	}
	return false
}

// eventSubject is the KidEvent subject of a token's subject.
func eventSubject(s relaytoken.Subject) kidv1.EventSubject {
	switch s.Kind {
	case relaytoken.KindChallenge:
		return kidv1.EventSubject{ChallengeID: s.ID}
	case relaytoken.KindSession:
		return kidv1.EventSubject{SessionID: s.ID}
	case relaytoken.KindVerification:
		return kidv1.EventSubject{VerificationIDs: []string{s.ID}}
	}
	return kidv1.EventSubject{}
}

// readCapped reads the whole body, at most limit bytes of it, or returns 413
// (a larger body) or 400 (one that could not be read to its end).
func readCapped(r *http.Request, limit int64) ([]byte, int) {
	if r.ContentLength > limit {
		return nil, http.StatusRequestEntityTooLarge
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	switch {
	case int64(len(body)) > limit:
		return nil, http.StatusRequestEntityTooLarge
	case err != nil:
		return nil, http.StatusBadRequest
	}
	return body, 0
}

// relayAnswer writes the browser endpoints' JSON answer, {"stored":true}
// for a 200 and {"stored":false,"error":msg} otherwise, and returns code.
func relayAnswer(w http.ResponseWriter, code int, msg string) int {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	answer := struct {
		Stored bool   `json:"stored"`
		Error  string `json:"error,omitempty"`
	}{Stored: code == http.StatusOK, Error: msg}
	_ = json.NewEncoder(w).Encode(answer)
	return code
}
