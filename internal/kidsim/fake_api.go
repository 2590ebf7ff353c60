package kidsim

import (
	"crypto/hmac"
	"encoding/json"
	"math"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kid-operator/kid-operator/internal/kid"
)

const (
	apiPrefix   = "/api/v1/"
	adminPrefix = "/kidsim/"
)

// Endpoints of the REST API the fake serves, as APIRequest.Endpoint names
// them.
const (
	EndpointSessionGet         = "session/get"
	EndpointChallengeGetStatus = "challenge/get-status"
	EndpointAgeVerificationGet = "age-verification/get-status"
)

// Codes of k-ID's error bodies.
const (
	CodeInvalidInput  = "INVALID_INPUT"
	CodeNotFound      = "NOT_FOUND"
	CodeUnauthorized  = "UNAUTHORIZED"
	CodeInternalError = "INTERNAL_ERROR"
)

// APIError is the body of k-ID's error answers.
type APIError struct {
	Error        string `json:"error"`
	ErrorMessage string `json:"errorMessage"`
}

// answer is an API response before it is written. A nil body writes none.
type answer struct {
	status int
	header http.Header
	body   any
}

func apiError(status int, code, message string) answer {
	return answer{status: status, body: APIError{Error: code, ErrorMessage: message}}
}

func ok(body any) answer { return answer{status: http.StatusOK, body: body} }

func (a answer) write(w http.ResponseWriter) {
	for k, v := range a.header {
		w.Header()[k] = v
	}
	if a.body == nil {
		w.WriteHeader(a.status)
		return
	}
	b, err := json.Marshal(a.body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(a.status)
	_, _ = w.Write(b)
}

// serveAPI answers the REST API and records each call, before an API fault
// holds it.
func (f *Fake) serveAPI(w http.ResponseWriter, r *http.Request) {
	rec := APIRequest{At: f.opts.Clock.Now(), Method: r.Method, Endpoint: strings.TrimPrefix(r.URL.Path, apiPrefix), Path: r.URL.Path, Query: r.URL.Query(), KeyID: bearerKeyID(r)}
	// An API fault touches every call to its endpoint, whatever the
	// answer: a slow or silent k-ID is slow or silent for a wrong key too.
	var fault APIFault
	if knownEndpoint(rec.Endpoint) {
		f.mu.Lock()
		fault = f.takeAPIFaultLocked(rec.Endpoint)
		f.mu.Unlock()
	}
	if fault.Hang {
		// No answer: the client's timeout ends the call, or else the
		// connection is closed without one.
		f.record(rec)
		f.hold(r.Context(), maxHang)
		panic(http.ErrAbortHandler)
	}
	a := f.answerAPI(r, rec, fault.Status)
	rec.Status = a.status
	f.record(rec)
	if fault.Latency > 0 {
		f.hold(r.Context(), fault.Latency)
	}
	a.write(w)
}

// serveUnknown answers a path the fake does not serve as a plain web server
// does, 404 with a text body unlike k-ID's NOT_FOUND, and records the call:
// a client whose base URL lacks /api/v1 (spec §4.1) lands here, and a test
// counts what it costs.
func (f *Fake) serveUnknown(w http.ResponseWriter, r *http.Request) {
	f.record(APIRequest{At: f.opts.Clock.Now(), Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Status: http.StatusNotFound, KeyID: bearerKeyID(r)})
	http.NotFound(w, r)
}

// record keeps one call to the REST API, or to a path next to it.
func (f *Fake) record(rec APIRequest) {
	f.mu.Lock()
	f.requests.add(rec)
	f.mu.Unlock()
	if f.opts.OnAPIRequest != nil {
		f.opts.OnAPIRequest(rec)
	}
}

// answerAPI checks in k-ID's order: the key, the rate, the method, the
// Accept header, then the parameters. An API fault's 5xx (faultStatus, 0
// for none) replaces the answer of a call the key and the rate let
// through.
func (f *Fake) answerAPI(r *http.Request, rec APIRequest, faultStatus int) answer {
	key, authorized := f.authorize(r.Header.Get("Authorization"))
	if !authorized {
		return apiError(http.StatusUnauthorized, CodeUnauthorized, "The API key is missing or invalid.")
	}
	if retryAfter, allowed := f.allow(key, rec.At); !allowed {
		return answer{status: http.StatusTooManyRequests, header: http.Header{"Retry-After": {retryAfter}}}
	}
	var handle func(url.Values, time.Time) answer
	switch rec.Endpoint {
	case EndpointSessionGet:
		handle = f.sessionGet
	case EndpointChallengeGetStatus:
		handle = f.challengeGetStatus
	case EndpointAgeVerificationGet:
		handle = f.verificationGetStatus
	default:
		return apiError(http.StatusNotFound, CodeNotFound, "Unknown API method.")
	}
	switch {
	case faultStatus == http.StatusInternalServerError:
		return apiError(faultStatus, CodeInternalError, "An internal error occurred.")
	case faultStatus != 0:
		return answer{status: faultStatus}
	}
	if r.Method != http.MethodGet {
		a := apiError(http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "Use GET for this API method.")
		a.header = http.Header{"Allow": {http.MethodGet}}
		return a
	}
	if !acceptsJSON(r.Header.Values("Accept")) {
		return apiError(http.StatusBadRequest, CodeInvalidInput, "Accept: application/json is required")
	}
	return handle(rec.Query, rec.At)
}

// bearerKeyID is the KeyID of the request's Bearer key, or empty.
func bearerKeyID(r *http.Request) string {
	scheme, key, found := strings.Cut(r.Header.Get("Authorization"), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return KeyID(strings.TrimSpace(key))
}

// authorize checks the Bearer key in constant time.
func (f *Fake) authorize(header string) (string, bool) {
	scheme, key, found := strings.Cut(header, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	key = strings.TrimSpace(key)
	f.mu.Lock()
	want := f.apiKey
	f.mu.Unlock()
	return key, want != "" && hmac.Equal([]byte(key), []byte(want))
}

// acceptsJSON reports whether the Accept header names application/json. A
// wildcard does not count: the fake is strict so that a client which
// forgets the header finds out here rather than against k-ID.
func acceptsJSON(values []string) bool {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err == nil && mt == "application/json" {
				return true
			}
		}
	}
	return false
}

// sessionGet answers /session/get?sessionId= or ?kuid=, with an optional
// etag.
func (f *Fake) sessionGet(q url.Values, now time.Time) answer {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s *storedSession
	switch id, kuid := q.Get("sessionId"), q.Get("kuid"); {
	case id != "":
		s = f.sessions[id]
	case kuid != "":
		s = f.newestOfLocked(kuid, now)
	default:
		return apiError(http.StatusBadRequest, CodeInvalidInput, "Either sessionId or kuid is required.")
	}
	if s == nil {
		return apiError(http.StatusBadRequest, CodeNotFound, "The session could not be found.")
	}
	if f.propagatingLocked(s, now) {
		// k-ID's vendor guidance reports a 404, unlike the documented 400
		// for a deleted session; the fake keeps the difference, unless
		// SetPropagationStatus asks for the 400.
		return apiError(f.propagationStatus, CodeNotFound, "The session could not be found.")
	}
	answered, notFound := f.faultedLocked(s)
	if notFound {
		return apiError(http.StatusBadRequest, CodeNotFound, "The session could not be found.")
	}
	if e := q.Get("etag"); e != "" && hmac.Equal([]byte(e), []byte(answered.Etag)) {
		return answer{status: http.StatusNotModified}
	}
	return ok(map[string]any{"session": answered, "status": kid.StatusPass})
}

// newestOfLocked returns the newest session of the kuid that has propagated,
// or else the newest still propagating (which answers 404), or nil.
func (f *Fake) newestOfLocked(kuid string, now time.Time) *storedSession {
	var visible, propagating *storedSession
	for _, s := range f.sessions {
		if s.KUID != kuid {
			continue
		}
		newest := &visible
		if f.propagatingLocked(s, now) {
			newest = &propagating
		}
		if *newest == nil || s.seq > (*newest).seq {
			*newest = s
		}
	}
	if visible != nil {
		return visible
	}
	return propagating
}

func (f *Fake) propagatingLocked(s *storedSession, now time.Time) bool {
	return now.Before(s.createdAt.Add(f.propagationDelay))
}

// challengeGetStatus answers /challenge/get-status?challengeId=.
func (f *Fake) challengeGetStatus(q url.Values, _ time.Time) answer {
	id := q.Get("challengeId")
	if id == "" {
		return apiError(http.StatusBadRequest, CodeInvalidInput, "challengeId is required.")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, found := f.challenges[id]
	if !found {
		return apiError(http.StatusBadRequest, CodeNotFound, "The challenge could not be found.")
	}
	type status struct {
		ChallengeID string `json:"challengeId"`
		Status      string `json:"status"`
		SessionID   string `json:"sessionId,omitempty"`
		KUID        string `json:"kuid,omitempty"`
	}
	answer := status{ChallengeID: c.ChallengeID, Status: f.openChallengeStatusLocked(c.Status), SessionID: c.SessionID, KUID: c.KUID}
	if f.statusWithoutSession {
		answer.SessionID = ""
	}
	return ok(answer)
}

// verificationGetStatus answers /age-verification/get-status?id=.
func (f *Fake) verificationGetStatus(q url.Values, _ time.Time) answer {
	id := q.Get("id")
	if id == "" {
		// k-ID answers a missing id, as when a client sends verificationId
		// instead, with a 400 and no body at all.
		return answer{status: http.StatusBadRequest}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, found := f.verifications[id]
	if !found {
		return apiError(http.StatusBadRequest, CodeInvalidInput, "The age verification could not be found.")
	}
	type status struct {
		ID            string    `json:"id"`
		Status        string    `json:"status"`
		Method        string    `json:"method,omitempty"`
		AgeCategory   string    `json:"ageCategory,omitempty"`
		Age           *AgeRange `json:"age,omitempty"`
		FailureReason string    `json:"failureReason,omitempty"`
		Revoked       bool      `json:"revoked,omitempty"`
		RevokedReason string    `json:"revokedReason,omitempty"`
	}
	answer := status{ID: v.ID, Status: v.Status, Method: v.Method, AgeCategory: v.AgeCategory, Age: v.Age, FailureReason: v.FailureReason}
	if v.RevokedReason != "" {
		switch f.revokedAnswer {
		case RevokedAsStatus:
			answer.Status, answer.RevokedReason = "REVOKED", v.RevokedReason
		case RevokedAsFlag:
			answer.Revoked, answer.RevokedReason = true, v.RevokedReason
		}
	}
	return ok(answer)
}

// rateLimit is the token bucket's configuration; rps 0 is off.
type rateLimit struct {
	rps   float64
	burst int
}

// bucket is one API key's token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

// allow counts the call in the key's fixed window (SetWindowLimit) and takes
// a token from its bucket (SetRateLimit). When either is used up it returns
// the Retry-After to send.
func (f *Fake) allow(key string, now time.Time) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.limit.rps <= 0 {
		if !f.allowWindowLocked(key, now) {
			return f.retryAfterLocked(), false
		}
		return "", true
	}
	b, found := f.buckets[key]
	if !found {
		b = &bucket{tokens: float64(f.limit.burst), last: now}
		f.buckets[key] = b
	}
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = math.Min(float64(f.limit.burst), b.tokens+elapsed.Seconds()*f.limit.rps)
		b.last = now
	}
	if b.tokens >= 1 && f.allowWindowLocked(key, now) {
		b.tokens--
		return "", true
	}
	return f.retryAfterLocked(), false
}

// retryAfterLocked is the Retry-After of a 429, in whole seconds.
func (f *Fake) retryAfterLocked() string {
	return strconv.FormatInt(int64(math.Ceil(max(f.retryAfter, 0).Seconds())), 10)
}

// MaxInWindow returns the largest number of the times that fall within one
// window [t, t+window): a test compares it with a rate to prove that a
// client never exceeded it.
func MaxInWindow(times []time.Time, window time.Duration) int {
	if window <= 0 {
		return 0
	}
	sorted := slices.SortedFunc(slices.Values(times), time.Time.Compare)
	best, start := 0, 0
	for end, t := range sorted {
		for t.Sub(sorted[start]) >= window {
			start++
		}
		best = max(best, end-start+1)
	}
	return best
}
