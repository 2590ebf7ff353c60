// Package kidapi is the operator's client of k-ID's REST API: the reads the
// controllers make to sync sessions and to recover decisions whose webhook
// was lost (spec §4). The wire format of events stays in internal/kid, which
// makes no calls.
//
// Every request goes through internal/outbound and a per-product limiter
// that never lets more calls start in one second than the product's rate
// (limiter.go). A reconciler must not hold its worker while the bucket refills or
// while k-ID asks it to come back later, so waits longer than MaxInlineWait
// are handed back as an *Error with RetryAfter set, and Reserve lets a
// reconciler learn before calling whether it would have to wait at all.
package kidapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"

	"github.com/kid-operator/kid-operator/internal/outbound"
)

// k-ID's base URLs, up to and including /api/v1.
const (
	LiveBaseURL = "https://game-api.k-id.com/api/v1"
	TestBaseURL = "https://game-api.test.k-id.com/api/v1"
)

// The endpoints called, as they appear in errors and metrics.
const (
	EndpointSession            = "session/get"
	EndpointChallengeStatus    = "challenge/get-status"
	EndpointVerificationStatus = "age-verification/get-status"
)

// Defaults of Config.
const (
	DefaultRPS           = 5
	DefaultTimeout       = 10 * time.Second
	DefaultMaxAttempts   = 3
	DefaultMaxInlineWait = 2 * time.Second
)

// Backoff of retried attempts: exponential from BaseBackoff, doubled on each
// failure up to MaxBackoff, with ±20 % jitter so that products failing
// together do not retry together.
const (
	BaseBackoff = 250 * time.Millisecond
	MaxBackoff  = 5 * time.Minute
)

// Bounds on what is read of an answer.
const (
	maxBodyBytes      = 1 << 20
	maxErrorBodyBytes = 64 << 10
)

// BaseURL returns the base URL of the environment ("live" or "test"), unless
// override (a product's spec.api.baseURL) is set.
func BaseURL(environment, override string) string {
	if o := strings.TrimRight(strings.TrimSpace(override), "/"); o != "" {
		return o
	}
	if environment == "live" {
		return LiveBaseURL
	}
	return TestBaseURL
}

// Config configures a Client. Zero values take the defaults.
type Config struct {
	// BaseURL is k-ID's URL up to /api/v1 (see BaseURL); empty is test.
	BaseURL string
	// APIKey is the product's key, sent as a Bearer token.
	APIKey string
	// NextAPIKey, if set, is the key a rotation moves to (keys.go): a 401
	// to one key tries the request once more with the other, and the key
	// k-ID accepts is the one sent from then on.
	NextAPIKey string
	// KeySwitched, if set, is told when the key in use changes (CurrentKey
	// or NextKey); it must not block.
	KeySwitched func(inUse int)
	// Product is the metrics label, "namespace/name". A client with a
	// product exports its backlog (kid_api_backlog) until a newer client
	// of the product replaces it, or Forget.
	Product string
	// RPS is the rate of calls (default DefaultRPS, at most MaxRPS): calls
	// come at this pace, and no more than RPS rounded down (at least 1)
	// start in any one second.
	RPS float64
	// Burst is how many calls may start at once before the pace applies
	// (default DefaultBurst(RPS), as the KidProduct API defaults it). A
	// burst never lets more than the rate into one second.
	Burst int
	// Timeout bounds one HTTP attempt (default 10s).
	Timeout time.Duration
	// HTTPClient makes the requests; nil is outbound.New with Timeout.
	HTTPClient *http.Client
	// MaxAttempts bounds the attempts of one call when they fail in a way
	// worth retrying (default 3).
	MaxAttempts int
	// MaxInlineWait bounds a wait inside a call (default 2s): a backoff or
	// Retry-After longer than this is not slept; the call returns the
	// *Error with RetryAfter set, so that the reconciler requeues instead of
	// holding a worker.
	MaxInlineWait time.Duration
	// Clock is the client's time: the rate limiters', Retry-After's, and
	// every wait inside a call (the limiter's included), which a timer of
	// this clock ends, or ctx earlier. Nil is the real clock; tests pass a
	// fake one (k8s.io/utils/clock/testing).
	Clock clock.Clock
}

// Client calls k-ID for one product. It is safe for concurrent use; keep one
// per product so that its rate limit covers all of the product's calls.
type Client struct {
	base          string
	keys          *keySet
	product       string
	limiter       *limiter
	schedule      *limiter // Book's slots, at the limiter's rate
	timeout       time.Duration
	http          *http.Client
	maxAttempts   int
	maxInlineWait time.Duration
	clock         clock.Clock
	// pausedUntil (Unix nanoseconds) is when k-ID's last 429 lets the
	// product call again. k-ID limits the product, not one caller, so its
	// Retry-After holds every call of the product back, not only the call
	// that was refused.
	pausedUntil atomic.Int64
}

// pause returns how long k-ID's last Retry-After still holds the product.
func (c *Client) pause() time.Duration {
	until := c.pausedUntil.Load()
	if until == 0 {
		return 0
	}
	return max(0, time.Unix(0, until).Sub(c.clock.Now()))
}

// holdFor records a Retry-After for the whole product.
func (c *Client) holdFor(d time.Duration) {
	until := c.clock.Now().Add(d).UnixNano()
	for {
		old := c.pausedUntil.Load()
		if old >= until || c.pausedUntil.CompareAndSwap(old, until) {
			return
		}
	}
}

// New returns a client for cfg.
func New(cfg Config) *Client {
	c := &Client{
		base:          strings.TrimRight(cfg.BaseURL, "/"),
		keys:          newKeySet(cfg.APIKey, cfg.NextAPIKey, cfg.KeySwitched),
		product:       cfg.Product,
		timeout:       cfg.Timeout,
		http:          cfg.HTTPClient,
		maxAttempts:   cfg.MaxAttempts,
		maxInlineWait: cfg.MaxInlineWait,
		clock:         cfg.Clock,
	}
	if c.base == "" {
		c.base = TestBaseURL
	}
	if c.product == "" {
		c.product = "unknown"
	}
	rps := cfg.RPS
	if rps <= 0 {
		rps = DefaultRPS
	}
	rps = min(rps, MaxRPS)
	burst := cfg.Burst
	if burst <= 0 {
		burst = DefaultBurst(rps)
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.http == nil {
		c.http = outbound.New(outbound.Options{Timeout: c.timeout})
	}
	if c.maxAttempts <= 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.maxInlineWait <= 0 {
		c.maxInlineWait = DefaultMaxInlineWait
	}
	if c.clock == nil {
		c.clock = clock.RealClock{}
	}
	c.limiter = newLimiter(c.clock, rps, burst)
	c.schedule = newLimiter(c.clock, rps, burst)
	if cfg.Product != "" {
		// The newest client of a product is the one its callers book
		// with; its backlog is the product's.
		backlogs.track(c)
	}
	return c
}

// DefaultBurst is the burst of a rate when none is configured: a tenth of
// it, at least 1. A burst as large as the rate would let a backlog fire a
// second's calls at once; a small one spreads them over the second.
func DefaultBurst(rps float64) int {
	return max(1, int(rps/10))
}

// sleep waits d on the client's clock, or until ctx ends, whichever is
// first. (clock.Clock's own Sleep cannot be cut short: a blocking call may
// wait on the limiter for as long as its ctx allows.)
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := c.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

// Reserve asks the rate limiter for one request without waiting. It returns
// 0 when a start was taken: the caller then makes exactly one call through
// WithReservation, which spends that start instead of taking another. Or it
// returns the delay after which the caller should try again; then nothing
// was taken. Reconcilers use it so that a backlog never holds a worker.
func (c *Client) Reserve() time.Duration {
	if d := c.pause(); d > 0 {
		return d
	}
	d, ok := c.limiter.take(0)
	if ok {
		return 0
	}
	ratelimitedTotal.WithLabelValues(c.product).Inc()
	ratelimitWaitSeconds.WithLabelValues(c.product).Add(d.Seconds())
	return d
}

// Book gives the caller a slot in the product's schedule and returns how
// long until it comes (0: now). The schedule runs at the product's rate, so
// callers that must wait are spread one rate-interval apart and come back
// one by one, rather than all together when the limiter has room (a herd
// that would spin a controller's queue for as long as the backlog lasts). A
// slot is not a start: when it comes, the caller still takes one with
// Reserve, at the moment it calls, because a caller that comes back late (a
// busy queue) would otherwise send with others that were late too, and
// k-ID would count more than the rate in that second. While k-ID's
// Retry-After holds the product, nothing is booked and the rest of the hold
// is returned.
func (c *Client) Book() time.Duration {
	if d := c.pause(); d > 0 {
		return d
	}
	d, _ := c.schedule.take(forever)
	return d
}

// forever is a wait no caller refuses: a blocking call without a deadline.
const forever = time.Duration(1<<63 - 1)

// Reserved is a Client seen by a caller whose Reserve returned 0. Its first
// call spends the reserved start for its first attempt; every other attempt
// (in-call retries, or a second call through the same Reserved) takes a
// start of its own but waits for it at most MaxInlineWait, returning an
// *Error with RetryAfter set (code THROTTLED, or the failure being retried)
// rather than hold the worker.
//
// The calls on Client itself instead wait on the limiter for as long as ctx
// allows. Either way every HTTP attempt is covered by one start, so the
// configured rate holds as k-ID measures it.
type Reserved struct {
	c     *Client
	spent atomic.Bool
}

// WithReservation returns the client through which to make the one call a
// successful Reserve paid for.
func (c *Client) WithReservation() *Reserved {
	return &Reserved{c: c}
}

// GetSession reads a session by its id. With a non-empty etag, an unchanged
// session is (nil, ErrNotModified).
func (c *Client) GetSession(ctx context.Context, sessionID, etag string) (*Session, error) {
	return c.getSession(ctx, nil, "sessionId", sessionID, etag)
}

// GetSessionByKUID reads the session of a k-ID user (Account.Delete names
// only the kuid).
func (c *Client) GetSessionByKUID(ctx context.Context, kuid, etag string) (*Session, error) {
	return c.getSession(ctx, nil, "kuid", kuid, etag)
}

// ChallengeStatus reads the state of a challenge.
func (c *Client) ChallengeStatus(ctx context.Context, challengeID string) (*ChallengeStatus, error) {
	return c.challengeStatus(ctx, nil, challengeID)
}

// VerificationStatus reads the result of an age verification.
func (c *Client) VerificationStatus(ctx context.Context, id string) (*VerificationStatus, error) {
	return c.verificationStatus(ctx, nil, id)
}

// GetSession is Client.GetSession, spending the reserved start.
func (r *Reserved) GetSession(ctx context.Context, sessionID, etag string) (*Session, error) {
	return r.c.getSession(ctx, r, "sessionId", sessionID, etag)
}

// GetSessionByKUID is Client.GetSessionByKUID, spending the reserved start.
func (r *Reserved) GetSessionByKUID(ctx context.Context, kuid, etag string) (*Session, error) {
	return r.c.getSession(ctx, r, "kuid", kuid, etag)
}

// ChallengeStatus is Client.ChallengeStatus, spending the reserved start.
func (r *Reserved) ChallengeStatus(ctx context.Context, challengeID string) (*ChallengeStatus, error) {
	return r.c.challengeStatus(ctx, r, challengeID)
}

// VerificationStatus is Client.VerificationStatus, spending the reserved
// start.
func (r *Reserved) VerificationStatus(ctx context.Context, id string) (*VerificationStatus, error) {
	return r.c.verificationStatus(ctx, r, id)
}

func (c *Client) getSession(ctx context.Context, r *Reserved, param, value, etag string) (*Session, error) {
	if value == "" {
		return nil, invalidRequest(EndpointSession, "empty "+param)
	}
	q := url.Values{param: {value}}
	if etag != "" {
		q.Set("etag", etag)
	}
	body, header, err := c.do(ctx, r, EndpointSession, q)
	if err != nil {
		return nil, err
	}
	s, err := decodeSession(body, header)
	if err != nil {
		return nil, err
	}
	if param == "sessionId" && s.SessionID == "" {
		s.SessionID = value
	}
	return s, nil
}

func (c *Client) challengeStatus(ctx context.Context, r *Reserved, challengeID string) (*ChallengeStatus, error) {
	if challengeID == "" {
		return nil, invalidRequest(EndpointChallengeStatus, "empty challengeId")
	}
	body, _, err := c.do(ctx, r, EndpointChallengeStatus, url.Values{"challengeId": {challengeID}})
	if err != nil {
		return nil, err
	}
	return decodeChallengeStatus(body, challengeID)
}

func (c *Client) verificationStatus(ctx context.Context, r *Reserved, id string) (*VerificationStatus, error) {
	if id == "" {
		return nil, invalidRequest(EndpointVerificationStatus, "empty id")
	}
	// The parameter is "id": "verificationId" gets a 400 with no body.
	body, _, err := c.do(ctx, r, EndpointVerificationStatus, url.Values{"id": {id}})
	if err != nil {
		return nil, err
	}
	return decodeVerificationStatus(body, id)
}

// do makes up to maxAttempts attempts of one GET and returns the body of the
// first that succeeds. Each attempt first obtains a start from the limiter.
// A 401 with a key to rotate to is tried once more with the other key
// (keys.go), an attempt of its own on top of maxAttempts.
func (c *Client) do(ctx context.Context, r *Reserved, endpoint string, q url.Values) ([]byte, http.Header, error) {
	var last *Error
	inUse := c.keys.current()
	key, rotated := inUse, false
	for attempt := 1; ; attempt++ {
		var backoff time.Duration
		if last != nil {
			backoff = last.RetryAfter
		}
		prepaid := attempt == 1 && r != nil && r.spent.CompareAndSwap(false, true)
		if !prepaid {
			if err := c.acquire(ctx, endpoint, backoff, r == nil, last); err != nil {
				return nil, nil, err
			}
		}
		body, header, err := c.attempt(ctx, endpoint, q, key)
		if answeredWithKey(err) {
			c.keys.accepted(inUse, key)
		}
		if err == nil {
			return body, header, nil
		}
		if IsUnauthorized(err) && c.keys.rotating() && !rotated {
			// k-ID refused this key: the rotation may have switched it
			// to the other. Not a failure to back off from, so the
			// other key's attempt waits for nothing but its token (and
			// a throttled wait says THROTTLED, not UNAUTHORIZED).
			key, rotated, last = other(key), true, nil
			attempt--
			continue
		}
		var e *Error
		if !errors.As(err, &e) || !e.Retryable || ctx.Err() != nil {
			return nil, nil, err
		}
		if e.Code == CodeTimeout {
			// The attempt already held the caller for the whole timeout:
			// another in the same call would hold a reconciler's worker
			// twice as long. The caller's backoff tries again later.
			e.RetryAfter = backoffAfter(attempt)
			return nil, nil, e
		}
		if e.HTTPStatus == http.StatusTooManyRequests {
			c.holdFor(e.RetryAfter)
		} else {
			e.RetryAfter = backoffAfter(attempt)
		}
		if attempt >= c.maxAttempts {
			return nil, nil, e
		}
		last = e
	}
}

// acquire sleeps the backoff (when it is short enough to sleep in the call),
// then takes a start. A blocking caller waits for it as long as ctx
// allows; any other gets it only within what is left of MaxInlineWait. When
// it gives up it returns last (the failure being retried) or a THROTTLED
// error, with RetryAfter set to the wait it did not make.
func (c *Client) acquire(ctx context.Context, endpoint string, backoff time.Duration, blocking bool, last *Error) error {
	backoff = max(backoff, c.pause())
	if backoff > c.maxInlineWait {
		return throttled(endpoint, backoff, last)
	}
	if backoff > 0 {
		if err := c.sleep(ctx, backoff); err != nil {
			return contextError(endpoint, err)
		}
	}
	// The start is taken after the backoff, not before: one held while
	// sleeping would be spent late, next to starts spent on time, and k-ID
	// would see more than the rate in that second.
	limit := forever
	if !blocking {
		limit = c.maxInlineWait - backoff
	} else if deadline, ok := ctx.Deadline(); ok {
		limit = time.Until(deadline)
	}
	delay, ok := c.limiter.take(limit)
	if delay == 0 {
		return nil
	}
	ratelimitedTotal.WithLabelValues(c.product).Inc()
	ratelimitWaitSeconds.WithLabelValues(c.product).Add(delay.Seconds())
	if !ok {
		return throttled(endpoint, delay, last)
	}
	if err := c.sleep(ctx, delay); err != nil {
		// The start taken is lost, not given back (see limiter).
		return contextError(endpoint, err)
	}
	return nil
}

func throttled(endpoint string, d time.Duration, last *Error) *Error {
	if last != nil {
		e := *last
		e.RetryAfter = d
		return &e
	}
	return &Error{Endpoint: endpoint, Code: CodeThrottled, Message: "the product's request rate is used up", RetryAfter: d, Retryable: true}
}

// backoffAfter is the wait after the attempt-th failed attempt.
func backoffAfter(attempt int) time.Duration {
	d := MaxBackoff
	if attempt < 20 {
		d = min(BaseBackoff<<(attempt-1), MaxBackoff)
	}
	// ±20 %, uniform: 80 % of d plus up to half of that again.
	return wait.Jitter(d-d/5, 0.5)
}

// attempt makes one HTTP request, with the key key (CurrentKey or NextKey).
func (c *Client) attempt(ctx context.Context, endpoint string, q url.Values, key int) ([]byte, http.Header, error) {
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, c.base+"/"+endpoint+"?"+q.Encode(), nil)
	if err != nil {
		// The parser's message would quote the URL, ids and all.
		return nil, nil, invalidRequest(endpoint, "the base URL does not parse")
	}
	req.Header.Set("Authorization", "Bearer "+c.keys.keys[key])
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "kid-operator")

	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		observe(c.product, endpoint, "error", start)
		return nil, nil, transportError(ctx, endpoint, err)
	}
	defer func() { _ = resp.Body.Close() }()
	code := strconv.Itoa(resp.StatusCode)

	switch {
	case resp.StatusCode == http.StatusNotModified:
		observe(c.product, endpoint, code, start)
		return nil, nil, ErrNotModified
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		body, err := outbound.ReadBounded(resp.Body, maxBodyBytes)
		observe(c.product, endpoint, code, start)
		if errors.Is(err, outbound.ErrBodyTooLarge) {
			return nil, nil, invalidResponse(endpoint, resp.StatusCode, "the answer is larger than 1 MiB")
		}
		if err != nil {
			return nil, nil, transportError(ctx, endpoint, err)
		}
		return body, resp.Header, nil
	default:
		// A truncated error body parses as nothing and the status decides.
		body, _ := outbound.ReadBounded(resp.Body, maxErrorBodyBytes)
		observe(c.product, endpoint, code, start)
		return nil, nil, httpError(endpoint, resp, body, c.clock.Now())
	}
}

// transportError describes a request that got no answer. The caller's own
// context ending stops the call; the outbound guard refusing the address or
// a redirect will not change on a retry; anything else may.
func transportError(ctx context.Context, endpoint string, err error) *Error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return contextError(endpoint, ctxErr)
	}
	e := &Error{Endpoint: endpoint, Code: CodeNetwork, Message: outbound.Scrub(err), Retryable: true, cause: err}
	var netErr net.Error
	switch {
	case errors.Is(err, outbound.ErrAddressRefused), errors.Is(err, outbound.ErrRedirectRefused):
		e.Retryable = false
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		e.Code = CodeTimeout
	}
	return e
}

// contextError is the caller's context ending: a deadline may be worth
// another try later, a cancellation (shutdown) is not.
func contextError(endpoint string, err error) *Error {
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Endpoint: endpoint, Code: CodeTimeout, Message: "timed out", Retryable: true, RetryAfter: BaseBackoff, cause: err}
	}
	return &Error{Endpoint: endpoint, Code: CodeCanceled, Message: "canceled", cause: err}
}
