package kidsim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/kid-operator/kid-operator/internal/kid"
)

// API faults make the REST API misbehave as k-ID may: limit it as k-ID
// counts (a fixed window), fail it with a 5xx, slow it, hold a call until
// the client gives up, answer a new session's propagation delay as 404 or
// as 400, and answer an undecided challenge as PENDING.

// k-ID's limits of API calls a second per product (spec §4.1).
const (
	TestRateLimit = 10
	LiveRateLimit = 500
)

// AllEndpoints is the SetAPIFault endpoint that names every endpoint. A
// fault of an endpoint of its own wins over it.
const AllEndpoints = "*"

// Bounds of the API faults.
const (
	// maxWindowLimit bounds SetWindowLimit: ten times k-ID's live limit.
	maxWindowLimit = 10 * LiveRateLimit
	// maxFaultCalls bounds APIFault.Calls.
	maxFaultCalls = 1000
	// maxLatency bounds APIFault.Latency, and maxHang how long a hanging
	// call is held when its client never gives up (the operator's timeout
	// is at most 30 s).
	maxLatency = time.Minute
	maxHang    = 2 * time.Minute
)

// APIFault is how the REST API misbehaves for one endpoint, or for all. It
// touches every call to the endpoint, whatever its answer (a slow k-ID is
// slow for a wrong key too), and spends one of its Calls on each.
type APIFault struct {
	// Status, 500 to 599, answers in place of the endpoint, once the key
	// and the rate let the call through: 500 with k-ID's INTERNAL_ERROR
	// body, any other with no body (a gateway in front of k-ID). 0
	// answers as k-ID.
	Status int
	// Latency holds each answer this long (real time) before it is
	// written; at most a minute.
	Latency time.Duration
	// Hang holds each call without answering until its client gives up
	// (its timeout), the fake closes, or two minutes pass; the fake records
	// it with status 0.
	Hang bool
	// Calls is how many more calls the fault applies to, at most 1,000; 0
	// applies it to every call until it is cleared.
	Calls int
}

// apiFaultJSON is APIFault in the admin API, the latency a Go duration.
type apiFaultJSON struct {
	Status  int    `json:"status,omitempty"`
	Latency string `json:"latency,omitempty"`
	Hang    bool   `json:"hang,omitempty"`
	Calls   int    `json:"calls,omitempty"`
}

// MarshalJSON writes the latency as a Go duration ("2s").
func (a APIFault) MarshalJSON() ([]byte, error) {
	j := apiFaultJSON{Status: a.Status, Hang: a.Hang, Calls: a.Calls}
	if a.Latency > 0 {
		j.Latency = a.Latency.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the latency as a Go duration.
func (a *APIFault) UnmarshalJSON(b []byte) error {
	var j apiFaultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	latency, err := parseDuration("latency", j.Latency)
	if err != nil {
		return err
	}
	*a = APIFault{Status: j.Status, Latency: latency, Hang: j.Hang, Calls: j.Calls}
	return nil
}

func (a APIFault) check() error {
	switch {
	case a.Status != 0 && (a.Status < 500 || a.Status > 599):
		return fmt.Errorf("status: want 500 to 599, or 0 for none, got %d", a.Status)
	case a.Latency < 0 || a.Latency > maxLatency:
		return fmt.Errorf("latency: want 0 to %s, got %s", maxLatency, a.Latency)
	case a.Calls < 0 || a.Calls > maxFaultCalls:
		return fmt.Errorf("calls: want 0 (every call) to %d, got %d", maxFaultCalls, a.Calls)
	}
	return nil
}

// knownEndpoint reports whether the REST API serves endpoint.
func knownEndpoint(endpoint string) bool {
	switch endpoint {
	case EndpointSessionGet, EndpointChallengeGetStatus, EndpointAgeVerificationGet:
		return true
	}
	return false
}

func checkEndpoint(endpoint string) error {
	if endpoint == AllEndpoints || knownEndpoint(endpoint) {
		return nil
	}
	return fmt.Errorf("endpoint: want %s, %s, %s or %q, got %q", EndpointSessionGet, EndpointChallengeGetStatus, EndpointAgeVerificationGet, AllEndpoints, endpoint)
}

// SetAPIFault sets the fault of an endpoint ("session/get", ...) or of
// AllEndpoints; the zero APIFault clears it.
func (f *Fake) SetAPIFault(endpoint string, a APIFault) error {
	if err := checkEndpoint(endpoint); err != nil {
		return err
	}
	if err := a.check(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if a == (APIFault{}) {
		delete(f.apiFaults, endpoint)
		return nil
	}
	f.apiFaults[endpoint] = &a
	return nil
}

// APIFaults returns the API faults set, by endpoint.
func (f *Fake) APIFaults() map[string]APIFault {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]APIFault, len(f.apiFaults))
	for e, a := range f.apiFaults {
		out[e] = *a
	}
	return out
}

// takeAPIFaultLocked returns the fault of one call to the endpoint, and
// spends one of its counted calls.
func (f *Fake) takeAPIFaultLocked(endpoint string) APIFault {
	key := endpoint
	a, ok := f.apiFaults[key]
	if !ok {
		key = AllEndpoints
		if a, ok = f.apiFaults[key]; !ok {
			return APIFault{}
		}
	}
	got := *a
	if a.Calls > 0 {
		if a.Calls--; a.Calls == 0 {
			delete(f.apiFaults, key)
		}
	}
	return got
}

// hold waits d of real time, or until the call's client gives up or the
// fake closes.
func (f *Fake) hold(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-f.ctx.Done():
	}
}

// SetWindowLimit limits the REST API as k-ID counts: at most n calls per
// API key in each whole second of the fake's clock (a fixed window), over
// which it answers 429 with no body and Retry-After (SetRetryAfter), as
// spec §4.1 says. Refused calls do not count. TestRateLimit is k-ID's test
// limit. 0 turns it off; it applies besides SetRateLimit's bucket.
func (f *Fake) SetWindowLimit(n int) error {
	if n < 0 || n > maxWindowLimit {
		return fmt.Errorf("windowLimit: want 0 (off) to %d, got %d", maxWindowLimit, n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.windowLimit = n
	clear(f.windowCalls)
	return nil
}

// allowWindowLocked counts a call in the key's window, when it has room.
func (f *Fake) allowWindowLocked(key string, now time.Time) bool {
	if f.windowLimit <= 0 {
		return true
	}
	if start := now.Truncate(time.Second); !start.Equal(f.windowStart) {
		// A new second: every key starts again, so the map holds only
		// the keys of this second.
		f.windowStart = start
		clear(f.windowCalls)
	}
	if f.windowCalls[key] >= f.windowLimit {
		return false
	}
	f.windowCalls[key]++
	return true
}

// SetPropagationDelay sets how long /session/get answers a session an
// approval created as not found (spec §4.2: 1-2 s after the PASS); 0 is
// none. It applies to sessions created before too.
func (f *Fake) SetPropagationDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.propagationDelay = max(d, 0)
}

// SetPropagationStatus sets how the propagation delay answers: 404 as k-ID's
// vendor guidance reports (the default), or 400 NOT_FOUND as the docs
// answer a deleted session (spec §4.2 notes the contradiction).
func (f *Fake) SetPropagationStatus(status int) error {
	if status != http.StatusNotFound && status != http.StatusBadRequest {
		return fmt.Errorf("propagationStatus: want 404 or 400, got %d", status)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.propagationStatus = status
	return nil
}

// SetChallengesPending makes /challenge/get-status answer PENDING for a
// challenge not yet decided, where it answers IN_PROGRESS otherwise: k-ID
// reports either before the decision (spec §4.3). The webhooks still say
// IN_PROGRESS.
func (f *Fake) SetChallengesPending(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.challengesPending = on
}

// openChallengeStatusLocked is what get-status answers for a challenge's
// status.
func (f *Fake) openChallengeStatusLocked(status string) string {
	if status == kid.StatusInProgress && f.challengesPending {
		return kid.StatusPending
	}
	return status
}
