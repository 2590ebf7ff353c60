package kidsim

import (
	"crypto/hmac"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/kid-operator/kid-operator/internal/actions"
)

// Target is an HTTP endpoint for KidActions to deliver to: it prints each
// delivery, checks its Standard Webhooks signature when it knows the secret,
// and answers with Status (200 by default).
type Target struct {
	// Secret verifies webhook-signature; nil skips the check.
	Secret []byte
	// Status is the answer; 0 means 200.
	Status int
	// Out receives one line per delivery.
	Out io.Writer

	mu sync.Mutex
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
	fmt.Fprintf(t.Out, "%s %s webhook-id=%s %s -> %d\n%s\n", r.Method, r.URL.Path, id, verdict, status, body)
	t.mu.Unlock()
	w.WriteHeader(status)
}
