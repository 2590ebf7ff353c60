package kidsim

import (
	"bytes"
	"context"
	"crypto/hmac"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/kid-operator/kid-operator/internal/actions"
)

// Target is an HTTP endpoint for KidActions to deliver to: it prints each
// delivery (a CloudEvent, binary or structured, as its attributes and data,
// the way Knative's event-display prints one), checks its Standard Webhooks
// signature when it knows the secret,
// and answers with Status (200 by default). It counts the deliveries of each
// webhook-id it answered with success, and with Dedupe it behaves as a
// Standard Webhooks receiver should: a webhook-id it already took is
// answered 200 again but is marked a repeat, not taken a second time.
type Target struct {
	// Secret verifies webhook-signature; nil skips the check.
	Secret []byte
	// Status is the answer; 0 means 200.
	Status int
	// Out receives one line per delivery; nil prints nothing.
	Out io.Writer
	// Dedupe takes each webhook-id once: a repeat is answered 200 and
	// printed as a repeat.
	Dedupe bool

	mu sync.Mutex
	// taken counts the successful deliveries of each webhook-id.
	taken map[string]int
}

// Taken returns, for each webhook-id answered with success, how many
// deliveries of it were: 1 unless a sender repeated one it had delivered
// (with Dedupe, the repeats were not taken again).
func (t *Target) Taken() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.taken))
	for id, n := range t.taken {
		out[id] = n
	}
	return out
}

// ServeHTTP implements http.Handler.
func (t *Target) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	id, ts, sig := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature")
	verdict := "unsigned"
	if sig != "" && t.Secret != nil {
		verdict = "signature INVALID"
		want := actions.SignStandardWebhook(t.Secret, id, ts, body)
		for _, s := range strings.Fields(sig) {
			if hmac.Equal([]byte(s), []byte(want)) {
				verdict = "signature ok"
			}
		}
	}
	status := t.Status
	if status == 0 {
		status = http.StatusOK
	}
	t.mu.Lock()
	repeat := t.taken[id] > 0
	if repeat && t.Dedupe {
		status = http.StatusOK
		verdict += ", repeat (not taken again)"
	}
	if status/100 == 2 && id != "" {
		if t.taken == nil {
			t.taken = map[string]int{}
		}
		t.taken[id]++
	}
	if t.Out != nil {
		fmt.Fprintf(t.Out, "%s %s webhook-id=%s %s -> %d\n%s\n", r.Method, r.URL.Path, id, verdict, status, printable(r, body))
	}
	t.mu.Unlock()
	w.WriteHeader(status)
}

// printable is what Target prints of a delivery: a CloudEvent as the SDK
// reads it (its content mode, attributes, extensions and data), anything
// else as its body.
func printable(r *http.Request, body []byte) string {
	r.Body = io.NopCloser(bytes.NewReader(body))
	msg := cehttp.NewMessageFromHttpRequest(r)
	var mode string
	switch msg.ReadEncoding() {
	case binding.EncodingBinary:
		mode = "binary"
	case binding.EncodingStructured:
		mode = "structured"
	default:
		return string(body)
	}
	ev, err := binding.ToEvent(context.Background(), msg)
	if err != nil {
		return fmt.Sprintf("not a valid CloudEvent (%s mode): %v\n%s", mode, err, body)
	}
	return fmt.Sprintf("CloudEvent, %s mode\n%s", mode, ev)
}
