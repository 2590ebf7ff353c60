package actions

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/template"
	"time"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// DefaultHTTPTimeout bounds one attempt of an http action.
const DefaultHTTPTimeout = 10 * time.Second

// Outcome is the result of one attempt.
type Outcome struct {
	// Status is the HTTP status, or 0 when there was no answer.
	Status int
	// Err describes a failed attempt; nil means success.
	Err error
	// Permanent is true when retrying cannot help (a 4xx other than 408 and
	// 429, a body template that does not render).
	Permanent bool
	// RetryAfter is the wait the target asked for, if any.
	RetryAfter time.Duration
	// Did says what the attempt did, for the run's record.
	Did string
}

// Body renders the request body: the action's bodyTemplate over the input,
// or by default the event and the user as JSON.
func Body(a *kidv1.HTTPAction, webhookID string, in *Input) ([]byte, error) {
	if a.BodyTemplate == "" {
		return json.Marshal(map[string]any{"id": webhookID, "event": in.Event, "user": in.User})
	}
	tmpl, err := template.New("body").Option("missingkey=zero").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
	}).Parse(a.BodyTemplate)
	if err != nil {
		return nil, fmt.Errorf("parsing bodyTemplate: %w", err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, map[string]any{"id": webhookID, "event": in.Event, "user": in.User}); err != nil {
		return nil, fmt.Errorf("rendering bodyTemplate: %w", err)
	}
	return buf.Bytes(), nil
}

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
// signed when a secret is given, and classifies the answer.
func Post(ctx context.Context, c *http.Client, a *kidv1.HTTPAction, webhookID string, body, secret []byte, now time.Time) Outcome {
	timeout := DefaultHTTPTimeout
	if a.Timeout != nil && a.Timeout.Duration > 0 {
		timeout = a.Timeout.Duration
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.URL, bytes.NewReader(body))
	if err != nil {
		return Outcome{Err: err, Permanent: true}
	}
	req.Header.Set("Content-Type", "application/json")
	for _, h := range a.Headers {
		req.Header.Set(h.Name, h.Value)
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	req.Header.Set("webhook-id", webhookID)
	req.Header.Set("webhook-timestamp", ts)
	if secret != nil {
		req.Header.Set("webhook-signature", SignStandardWebhook(secret, webhookID, ts, body))
	}
	resp, err := c.Do(req)
	if err != nil {
		return Outcome{Err: err}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	out := Outcome{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), now)}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return out
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

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
