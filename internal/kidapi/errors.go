package kidapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Codes of Error. The first five are k-ID's own (its error body's "error"
// field); the others name failures that never reached k-ID or that k-ID did
// not describe. A code k-ID sends that is not listed here is kept as sent.
const (
	CodeNotFound        = "NOT_FOUND"
	CodeInvalidInput    = "INVALID_INPUT"
	CodeUnauthorized    = "UNAUTHORIZED"
	CodeRateLimited     = "RATE_LIMITED"
	CodeInternalError   = "INTERNAL_ERROR"
	CodeNetwork         = "NETWORK"
	CodeTimeout         = "TIMEOUT"
	CodeCanceled        = "CANCELED"
	CodeThrottled       = "THROTTLED"
	CodeInvalidResponse = "INVALID_RESPONSE"
	CodeInvalidRequest  = "INVALID_REQUEST"
	// CodeUnknownPath is a 404 without k-ID's error body: the server has
	// no such path, which is what a baseURL without /api/v1 gets (spec
	// §4.1). k-ID's own 404 (the propagation delay after a PASS, §4.2)
	// carries {"error":"NOT_FOUND",...}.
	CodeUnknownPath = "UNKNOWN_PATH"
)

// ErrNotModified is what GetSession returns when k-ID answers 304: the
// session still has the etag the caller passed.
var ErrNotModified = errors.New("k-ID session not modified")

// Error is a failed call. Its text is safe for logs, status fields and
// Events: it names the endpoint, the HTTP status, the code and k-ID's message
// with anything that looks like an email address, a date or an identifier
// removed, and never the query string or the target's address.
type Error struct {
	// Endpoint is the method called, e.g. "session/get".
	Endpoint string
	// HTTPStatus is k-ID's answer, or 0 when there was none.
	HTTPStatus int
	// Code is k-ID's error code, or one of the Code constants.
	Code string
	// Message is k-ID's message, redacted and truncated, or a scrubbed
	// description of a transport failure.
	Message string
	// RetryAfter is how long to wait before trying again, when Retryable.
	RetryAfter time.Duration
	// Retryable is false when trying again cannot help until something
	// changes (the key, the request, the session).
	Retryable bool

	// cause is kept for errors.Is (a context's error, the outbound guard's)
	// and never printed: its text may hold the URL with its ids.
	cause error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("k-ID ")
	b.WriteString(e.Endpoint)
	b.WriteString(":")
	if e.HTTPStatus != 0 {
		b.WriteString(" HTTP ")
		b.WriteString(strconv.Itoa(e.HTTPStatus))
	}
	if e.Code != "" {
		b.WriteString(" ")
		b.WriteString(e.Code)
	}
	if msg := redact(e.Message); msg != "" {
		b.WriteString(": ")
		b.WriteString(msg)
	}
	return b.String()
}

// Unwrap gives errors.Is the cause of a transport failure.
func (e *Error) Unwrap() error { return e.cause }

// IsNotFound says k-ID answered 400 NOT_FOUND: the session was deleted. A
// 404 is not this (see IsPropagating).
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.HTTPStatus == http.StatusBadRequest && e.Code == CodeNotFound
}

// IsPropagating says /session/get answered 404 with k-ID's NOT_FOUND body,
// which k-ID does for a second or two after a challenge passes, before the
// new session can be read (spec §4.2). It is worth trying again (see
// RetryAfter), but only the caller knows whether a PASS was recent enough
// for the answer to mean that. A 404 from any other endpoint, or without
// k-ID's body (IsUnknownPath), is never propagation.
func IsPropagating(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.HTTPStatus == http.StatusNotFound && e.Code == CodeNotFound && e.Endpoint == EndpointSession
}

// IsUnknownPath says the server answered 404 without k-ID's error body: it
// has no such path. Against k-ID that is a wrong base URL (most often one
// without /api/v1), which no retry fixes.
func IsUnknownPath(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.HTTPStatus == http.StatusNotFound && e.Code == CodeUnknownPath
}

// IsUnauthorized says k-ID refused the API key (401): a wrong key, or a test
// key used against the live environment or the reverse.
func IsUnauthorized(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.HTTPStatus == http.StatusUnauthorized
}

// RetryAfter returns how long to wait before trying again, and false when
// err is not worth retrying as it stands.
func RetryAfter(err error) (time.Duration, bool) {
	var e *Error
	if !errors.As(err, &e) || !e.Retryable {
		return 0, false
	}
	return e.RetryAfter, true
}

// httpError reads k-ID's answer to a failed call. k-ID's body is
// {"error":"CODE","errorMessage":"..."}; older documentation calls the
// message errorMsg, so both are read. A 429 has no body.
func httpError(endpoint string, resp *http.Response, body []byte, now time.Time) *Error {
	e := &Error{Endpoint: endpoint, HTTPStatus: resp.StatusCode}
	code, msg := parseErrorBody(body)
	e.Code = code
	if e.Code == "" {
		e.Code = defaultCode(resp.StatusCode)
	}
	e.Message = redact(msg)
	switch {
	case resp.StatusCode == http.StatusNotFound && code == "":
		// No k-ID body: the path does not exist. Retrying cannot help.
		e.Code = CodeUnknownPath
		e.Message = "no such path; does the base URL end in /api/v1?"
	case resp.StatusCode == http.StatusTooManyRequests:
		e.Code = CodeRateLimited
		e.Retryable = true
		e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now)
	case resp.StatusCode == http.StatusNotFound, resp.StatusCode >= 500:
		// The backoff is the caller's to set: it depends on the attempt.
		e.Retryable = true
	}
	return e
}

func defaultCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return CodeInvalidInput
	case http.StatusUnauthorized:
		return CodeUnauthorized
	case http.StatusTooManyRequests:
		return CodeRateLimited
	case http.StatusInternalServerError:
		return CodeInternalError
	}
	return "HTTP_" + strconv.Itoa(status)
}

// codePattern bounds what is kept of k-ID's code: it goes into messages and
// is compared against constants, so anything longer or stranger is dropped.
var codePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

func parseErrorBody(body []byte) (code, msg string) {
	var fields map[string]any
	if err := json.Unmarshal(body, &fields); err != nil {
		return "", ""
	}
	if s, ok := fields["error"].(string); ok && codePattern.MatchString(s) {
		code = strings.ToUpper(s)
	}
	for _, key := range []string{"errorMessage", "errorMsg", "message"} {
		if s, ok := fields[key].(string); ok && s != "" {
			return code, s
		}
	}
	return code, ""
}

// Retry-After bounds: a missing or unreadable header means a second, and no
// answer may park a product for more than an hour.
const (
	defaultRetryAfter = time.Second
	MaxRetryAfter     = time.Hour
)

// parseRetryAfter reads a Retry-After header: seconds, or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return defaultRetryAfter
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return defaultRetryAfter
		}
		if secs > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), MaxRetryAfter)
	}
	return defaultRetryAfter
}

// maxMessageBytes bounds k-ID's message in an Error.
const maxMessageBytes = 200

// What redact removes from k-ID's messages: they may quote the request
// (approverEmail, dob and kuid are personal data, see the spec §5).
var (
	emailPattern = regexp.MustCompile(`[^\s@<>()\[\]{},;:"'` + "`" + `]+@[^\s@<>()\[\]{},;:"'` + "`" + `]+`)
	uuidPattern  = regexp.MustCompile(`[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}`)
	datePattern  = regexp.MustCompile(`\b\d{4}-\d{1,2}-\d{1,2}|\b\d{1,2}/\d{1,2}/\d{2,4}\b`)
	digitsRun    = regexp.MustCompile(`\d{6,}`)
)

// redact returns msg on one line, without email addresses, dates, UUIDs or
// long numbers (a numeric kuid), cut to maxMessageBytes on a rune boundary.
func redact(msg string) string {
	if msg == "" {
		return ""
	}
	msg = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return ' '
		}
		return r
	}, msg)
	msg = emailPattern.ReplaceAllString(msg, "[email]")
	msg = uuidPattern.ReplaceAllString(msg, "[id]")
	msg = datePattern.ReplaceAllString(msg, "[date]")
	msg = digitsRun.ReplaceAllString(msg, "[id]")
	msg = strings.TrimSpace(msg)
	if len(msg) > maxMessageBytes {
		cut := maxMessageBytes
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
	return msg
}

// invalidResponse is a 2xx whose body cannot be used.
func invalidResponse(endpoint string, status int, what string) *Error {
	return &Error{Endpoint: endpoint, HTTPStatus: status, Code: CodeInvalidResponse, Message: what}
}

func invalidRequest(endpoint, what string) *Error {
	return &Error{Endpoint: endpoint, Code: CodeInvalidRequest, Message: what}
}
