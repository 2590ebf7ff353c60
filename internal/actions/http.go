package actions

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/outbound"
)

// Bounds of one attempt of an http action.
const (
	// DefaultHTTPTimeout bounds one attempt when the action sets none.
	DefaultHTTPTimeout = 10 * time.Second
	// MaxHTTPTimeout is the longest an attempt may take, whatever the
	// action asks (the CRD refuses more; older objects are clamped): an
	// attempt holds one of the KidEvent controller's workers, which every
	// tenant's events share.
	MaxHTTPTimeout = 30 * time.Second
)

// Timeout is the bound of one attempt of a: its timeout, DefaultHTTPTimeout
// when unset, at most MaxHTTPTimeout.
func Timeout(a *kidv1.HTTPAction) time.Duration {
	if a.Timeout == nil || a.Timeout.Duration <= 0 {
		return DefaultHTTPTimeout
	}
	return min(a.Timeout.Duration, MaxHTTPTimeout)
}

// Outcome is the result of one attempt.
type Outcome struct {
	// Status is the HTTP status, or 0 when there was no answer.
	Status int
	// Err describes a failed attempt; nil means success. Its message goes
	// into the event's status, which the action's author reads: for an http
	// action it names no address and repeats nothing the target answered.
	Err error
	// Permanent is true when retrying cannot help (a 4xx other than 408 and
	// 429, a redirect, an address the guard refuses, a body template that
	// does not render).
	Permanent bool
	// RetryAfter is the wait the target asked for, if any, at most MaxDelay.
	RetryAfter time.Duration
	// Did says what the attempt did, for the run's record.
	Did string
}

// Body renders the request body: the action's bodyTemplate over the input,
// or by default the event and the user as JSON. A template is held to the
// subset parseTemplate allows, to MaxRenderedBytes and RenderBudget, and
// stops when ctx is done.
func Body(ctx context.Context, a *kidv1.HTTPAction, webhookID string, in *Input) ([]byte, error) {
	return renderDocument(ctx, "bodyTemplate", a.BodyTemplate, webhookID, in)
}

// renderDocument renders the document an http action sends (or a
// cloudEvent action carries as data): tmpl, the action's field, over the id,
// the event and the user, or by default those three as JSON.
func renderDocument(ctx context.Context, field, tmpl, webhookID string, in *Input) ([]byte, error) {
	doc := map[string]any{"id": webhookID, "event": in.Event, "user": in.User}
	if tmpl == "" {
		return json.Marshal(doc)
	}
	if err := checkSize(field, tmpl, MaxBodyTemplateBytes); err != nil {
		return nil, err
	}
	t, err := parseTemplate("body", tmpl)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", field, err)
	}
	b, err := newRender(ctx).execute(t, doc)
	if err != nil {
		return nil, fmt.Errorf("rendering %s: %w", field, err)
	}
	return b, nil
}

// Deliver makes one attempt of an http action, from rendering its body to
// the target's answer, all within Timeout(a): nothing the action's author
// writes holds the caller longer.
func Deliver(ctx context.Context, c *http.Client, a *kidv1.HTTPAction, webhookID string, in *Input, secret []byte, now time.Time) Outcome {
	ctx, cancel := context.WithTimeout(ctx, Timeout(a))
	defer cancel()
	body, err := Body(ctx, a, webhookID, in)
	if err != nil {
		return renderFailed(ctx, err)
	}
	return Post(ctx, c, a, webhookID, body, secret, now)
}

// renderFailed is the outcome of a body that did not render: permanent (the
// same input renders the same), unless the attempt ran out of time.
func renderFailed(ctx context.Context, err error) Outcome {
	if ctx.Err() != nil {
		return Outcome{Err: &scrubbedError{msg: "rendering the body timed out", cause: err}}
	}
	return Outcome{Err: err, Permanent: true}
}

// scrubbedError is an http attempt's error as the action's author sees it:
// a fixed message (outbound.Scrub's) that names no address, with the cause
// kept for errors.Is.
type scrubbedError struct {
	msg   string
	cause error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.cause }

// SignStandardWebhook returns the webhook-signature header value of the
// Standard Webhooks specification: "v1," and the base64 HMAC-SHA256 of
// "id.timestamp.body". A secret of the form whsec_<base64> is decoded, as
// the specification's libraries do; any other secret is used as it is.
func SignStandardWebhook(secret []byte, id, timestamp string, body []byte) string {
	key := secret
	if s, ok := strings.CutPrefix(string(secret), "whsec_"); ok {
		if decoded, err := base64.StdEncoding.DecodeString(s); err == nil {
			key = decoded
		}
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + timestamp + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Post makes one attempt: it POSTs body to the action's URL with its headers,
// signed when a secret is given, and classifies the answer. c should be the
// outbound client (internal/outbound), which refuses internal addresses and
// redirects. Only scrubbed messages reach Outcome.Err: the text of a transport
// error names the address dialed, which would let the action's author map the
// cluster's network, and the target's answer is never repeated.
func Post(ctx context.Context, c *http.Client, a *kidv1.HTTPAction, webhookID string, body, secret []byte, now time.Time) Outcome {
	return post(ctx, c, a, webhookID, body, nil, secret, now)
}

// post is Post with headers of the body's own (a CloudEvent's), set after
// the action's so that they win.
func post(ctx context.Context, c *http.Client, a *kidv1.HTTPAction, webhookID string, body []byte, own http.Header, secret []byte, now time.Time) Outcome {
	ctx, cancel := context.WithTimeout(ctx, Timeout(a))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.URL, bytes.NewReader(body))
	if err != nil {
		return Outcome{Err: &scrubbedError{msg: "invalid url", cause: err}, Permanent: true}
	}
	req.Header.Set("Content-Type", "application/json")
	for _, h := range a.Headers {
		req.Header.Set(h.Name, h.Value)
	}
	for name, values := range own {
		req.Header[name] = values
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	req.Header.Set("webhook-id", webhookID)
	req.Header.Set("webhook-timestamp", ts)
	if secret != nil {
		req.Header.Set("webhook-signature", SignStandardWebhook(secret, webhookID, ts, body))
	}
	resp, err := c.Do(req)
	if err != nil {
		// On a redirect the client returns the answer (its body closed)
		// with the error of its redirect policy.
		if resp != nil && errors.Is(err, outbound.ErrRedirectRefused) {
			return redirected(resp.StatusCode, err)
		}
		out := Outcome{Err: &scrubbedError{msg: "POST failed: " + outbound.Scrub(err), cause: err}}
		if errors.Is(err, outbound.ErrAddressRefused) {
			// The same URL is refused until an administrator allows
			// its range; then a redrive runs it again.
			out.Permanent = true
			out.Err = &scrubbedError{msg: "POST failed: the url's address is refused by the outbound guard (internal ranges need an administrator's --outbound-allow-cidrs or --outbound-allow-hosts)", cause: err}
		}
		return out
	}
	defer resp.Body.Close()
	// Read a little so the connection can be reused; never more, and never
	// into a message.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	out := Outcome{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), now)}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return out
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		// A client that hands redirects back (rather than refusing them).
		return redirected(resp.StatusCode, nil)
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests:
		out.Err = fmt.Errorf("target answered %d", resp.StatusCode)
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		out.Err = fmt.Errorf("target answered %d", resp.StatusCode)
		out.Permanent = true
	default:
		out.Err = fmt.Errorf("target answered %d", resp.StatusCode)
	}
	return out
}

// redirected is the outcome of a 3xx answer: a permanent failure, since a
// redirect is never followed (it would carry the body and the signature to
// a place the action does not name, past the address guard's first check).
func redirected(status int, cause error) Outcome {
	return Outcome{Status: status, Permanent: true, Err: &scrubbedError{
		msg:   fmt.Sprintf("target answered %d, a redirect, which kid-operator does not follow: set url to the final address", status),
		cause: cause,
	}}
}

// retryAfter reads a Retry-After header (seconds, or an HTTP date), at most
// MaxDelay: a target must not park a run for days, nor overflow the wait.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	// A number too large for int64 is a range error holding the largest
	// one, which the cap then brings down.
	if secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(MaxDelay/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), MaxDelay)
	}
	return 0
}
