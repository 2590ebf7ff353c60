package kidsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// maxAdminBody bounds an admin request's body; the largest is a few fields.
const maxAdminBody = 64 << 10

// adminHandler serves the admin API: JSON in and out, no authentication (it
// is a local tool), errors as 4xx with {"error": "..."}.
func (f *Fake) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /kidsim/challenges", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, f.challenge(f.StartChallenge()))
	})
	mux.HandleFunc("GET /kidsim/challenges/{id}", func(w http.ResponseWriter, r *http.Request) {
		c, ok := f.lookupChallenge(r.PathValue("id"))
		if !ok {
			writeError(w, http.StatusNotFound, "challenge "+r.PathValue("id")+": not found")
			return
		}
		writeJSON(w, http.StatusOK, c)
	})
	mux.HandleFunc("POST /kidsim/challenges/{id}/approve", func(w http.ResponseWriter, r *http.Request) {
		var a Approval
		if !readJSON(w, r, &a) {
			return
		}
		id := r.PathValue("id")
		if _, err := f.ApproveChallenge(id, a); err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, f.challenge(id))
	})
	mux.HandleFunc("POST /kidsim/challenges/{id}/deny", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := f.DenyChallenge(id); err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, f.challenge(id))
	})
	mux.HandleFunc("POST /kidsim/verifications", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, f.verification(f.StartVerification()))
	})
	for outcome, pass := range map[string]bool{"pass": true, "fail": false} {
		mux.HandleFunc("POST /kidsim/verifications/{id}/"+outcome, func(w http.ResponseWriter, r *http.Request) {
			id := r.PathValue("id")
			if err := f.CompleteVerification(id, pass); err != nil {
				writeControlError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, f.verification(id))
		})
	}
	mux.HandleFunc("POST /kidsim/verifications/{id}/revoke", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Reason string `json:"reason"`
		}
		if !readJSON(w, r, &body) {
			return
		}
		id := r.PathValue("id")
		if err := f.RevokeVerification(id, body.Reason); err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, f.verification(id))
	})
	mux.HandleFunc("POST /kidsim/sessions/{id}/permissions", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Name    string `json:"name"`
			Enabled *bool  `json:"enabled"`
		}
		if !readJSON(w, r, &body) {
			return
		}
		if body.Name == "" || body.Enabled == nil {
			writeError(w, http.StatusBadRequest, `the body needs "name" and "enabled"`)
			return
		}
		id := r.PathValue("id")
		if err := f.SetPermission(id, body.Name, *body.Enabled); err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, f.session(id))
	})
	mux.HandleFunc("POST /kidsim/sessions/{id}/age-up", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			AgeStatus string `json:"ageStatus"`
		}
		if !readJSON(w, r, &body) {
			return
		}
		id := r.PathValue("id")
		if err := f.AgeUp(id, body.AgeStatus); err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, f.session(id))
	})
	mux.HandleFunc("DELETE /kidsim/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := f.DeleteSession(id); err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"sessionId": id})
	})
	mux.HandleFunc("PUT /kidsim/sessions/{id}/faults", func(w http.ResponseWriter, r *http.Request) {
		var body SessionFault
		if !readJSON(w, r, &body) {
			return
		}
		id := r.PathValue("id")
		// Both checked before either is set.
		if body.Status != "" && !sessionStatusPattern.MatchString(body.Status) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("status: want up to 32 capitals such as DELETED, got %q", body.Status))
			return
		}
		if err := f.SetSessionNotFound(id, body.NotFoundReads); err != nil {
			writeControlError(w, err)
			return
		}
		if err := f.SetSessionStatus(id, body.Status); err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, f.SessionFaults()[id])
	})
	mux.HandleFunc("DELETE /kidsim/accounts/{kuid}", func(w http.ResponseWriter, r *http.Request) {
		kuid := r.PathValue("kuid")
		n, err := f.deleteAccount(kuid)
		if err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"kuid": kuid, "sessionsDeleted": n})
	})
	mux.HandleFunc("GET /kidsim/faults", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, f.faults())
	})
	mux.HandleFunc("PUT /kidsim/faults", func(w http.ResponseWriter, r *http.Request) {
		var body FaultsUpdate
		if !readJSON(w, r, &body) {
			return
		}
		if err := f.UpdateFaults(body); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, f.faults())
	})
	mux.HandleFunc("GET /kidsim/state", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, f.State())
	})
	// The logs hold the last records only under FakeOptions.MaxRecords;
	// X-Total-Count counts them all.
	mux.HandleFunc("GET /kidsim/requests", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Total-Count", strconv.Itoa(f.RequestCount()))
		writeJSON(w, http.StatusOK, nonNil(f.Requests()))
	})
	mux.HandleFunc("GET /kidsim/deliveries", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Total-Count", strconv.Itoa(f.DeliveryCount()))
		writeJSON(w, http.StatusOK, nonNil(f.Deliveries()))
	})
	return jsonMuxErrors(mux)
}

// Faults are the fault settings as the admin API shows them.
type Faults struct {
	Deliveries    DeliveryFault `json:"deliveries"`
	DeliveryDelay string        `json:"deliveryDelay"`
	RateLimit     RateLimit     `json:"rateLimit"`
	RetryAfter    string        `json:"retryAfter"`
	// Sessions are the session faults, by session id (PUT
	// /kidsim/sessions/{id}/faults sets one).
	Sessions map[string]SessionFault `json:"sessions"`
	// StatusWithoutSession: /challenge/get-status answers PASS without
	// its sessionId (spec §4.3).
	StatusWithoutSession bool `json:"statusWithoutSession"`
	// WindowLimit is the calls a second k-ID counts per key, in fixed
	// windows (0: off).
	WindowLimit int `json:"windowLimit"`
	// API are the API faults, by endpoint ("*" for every endpoint).
	API map[string]APIFault `json:"api"`
	// PropagationDelay is how long a new session reads as not found, and
	// PropagationStatus how: 404 or 400.
	PropagationDelay  string `json:"propagationDelay"`
	PropagationStatus int    `json:"propagationStatus"`
	// ChallengesPending: /challenge/get-status answers PENDING for an
	// undecided challenge, not IN_PROGRESS.
	ChallengesPending bool `json:"challengesPending"`
	// RevokedAnswer is how get-status answers a revoked verification:
	// "" (as passed), "status" or "flag".
	RevokedAnswer RevokedAnswer `json:"revokedAnswer"`
}

// RateLimit is the REST API's limit per key; RPS 0 is off.
type RateLimit struct {
	RPS   float64 `json:"rps"`
	Burst int     `json:"burst"`
}

// FaultsUpdate is the body of PUT /kidsim/faults: the fields given are set,
// the others kept. Durations are Go durations ("2s").
type FaultsUpdate struct {
	Deliveries    *string    `json:"deliveries,omitempty"`
	DeliveryDelay *string    `json:"deliveryDelay,omitempty"`
	RateLimit     *RateLimit `json:"rateLimit,omitempty"`
	RetryAfter    *string    `json:"retryAfter,omitempty"`
	// StatusWithoutSession makes /challenge/get-status answer PASS
	// without its sessionId, or as the webhook does.
	StatusWithoutSession *bool `json:"statusWithoutSession,omitempty"`
	// APIKey rotates the key the REST API accepts.
	APIKey *string `json:"apiKey,omitempty"`
	// WindowLimit sets the calls a second k-ID counts per key (0: off).
	WindowLimit *int `json:"windowLimit,omitempty"`
	// API sets the fault of each endpoint named ("*": every endpoint); an
	// empty fault clears it, endpoints not named are kept.
	API map[string]APIFault `json:"api,omitempty"`
	// PropagationDelay and PropagationStatus (404 or 400) set how a new
	// session reads as not found.
	PropagationDelay  *string `json:"propagationDelay,omitempty"`
	PropagationStatus *int    `json:"propagationStatus,omitempty"`
	// ChallengesPending makes /challenge/get-status answer PENDING for an
	// undecided challenge, or IN_PROGRESS.
	ChallengesPending *bool `json:"challengesPending,omitempty"`
	// RevokedAnswer sets how get-status answers a revoked verification:
	// "" (as passed), "status" or "flag".
	RevokedAnswer *string `json:"revokedAnswer,omitempty"`
}

// UpdateFaults checks the whole update before it applies any of it.
func (f *Fake) UpdateFaults(u FaultsUpdate) error {
	var fault DeliveryFault
	var delay, retryAfter time.Duration
	var err error
	if u.Deliveries != nil {
		if fault, err = ParseDeliveryFault(*u.Deliveries); err != nil {
			return err
		}
	}
	if u.DeliveryDelay != nil {
		if delay, err = parseDuration("deliveryDelay", *u.DeliveryDelay); err != nil {
			return err
		}
	}
	if u.RetryAfter != nil {
		if retryAfter, err = parseDuration("retryAfter", *u.RetryAfter); err != nil {
			return err
		}
	}
	if u.RateLimit != nil && (u.RateLimit.RPS < 0 || u.RateLimit.Burst < 0) {
		return errors.New("rateLimit: rps and burst must not be negative")
	}
	if err := u.checkAPI(); err != nil {
		return err
	}
	var revoked RevokedAnswer
	if u.RevokedAnswer != nil {
		if revoked, err = ParseRevokedAnswer(*u.RevokedAnswer); err != nil {
			return err
		}
	}
	var propagation time.Duration
	if u.PropagationDelay != nil {
		if propagation, err = parseDuration("propagationDelay", *u.PropagationDelay); err != nil {
			return err
		}
	}
	if u.Deliveries != nil {
		f.SetDeliveryFault(fault)
	}
	if u.DeliveryDelay != nil {
		f.SetDeliveryDelay(delay)
	}
	if u.RetryAfter != nil {
		f.SetRetryAfter(retryAfter)
	}
	if u.RateLimit != nil {
		f.SetRateLimit(u.RateLimit.RPS, u.RateLimit.Burst)
	}
	if u.StatusWithoutSession != nil {
		f.SetStatusWithoutSession(*u.StatusWithoutSession)
	}
	if u.APIKey != nil {
		f.SetAPIKey(*u.APIKey)
	}
	if u.RevokedAnswer != nil {
		f.SetRevokedAnswer(revoked)
	}
	// Checked above: these cannot fail.
	if u.WindowLimit != nil {
		_ = f.SetWindowLimit(*u.WindowLimit)
	}
	for endpoint, a := range u.API {
		_ = f.SetAPIFault(endpoint, a)
	}
	if u.PropagationDelay != nil {
		f.SetPropagationDelay(propagation)
	}
	if u.PropagationStatus != nil {
		_ = f.SetPropagationStatus(*u.PropagationStatus)
	}
	if u.ChallengesPending != nil {
		f.SetChallengesPending(*u.ChallengesPending)
	}
	return nil
}

// checkAPI checks the update's API faults, window limit and propagation
// status, so that UpdateFaults sets all or nothing.
func (u FaultsUpdate) checkAPI() error {
	if u.WindowLimit != nil && (*u.WindowLimit < 0 || *u.WindowLimit > maxWindowLimit) {
		return fmt.Errorf("windowLimit: want 0 (off) to %d, got %d", maxWindowLimit, *u.WindowLimit)
	}
	for endpoint, a := range u.API {
		if err := checkEndpoint(endpoint); err != nil {
			return fmt.Errorf("api: %w", err)
		}
		if err := a.check(); err != nil {
			return fmt.Errorf("api[%s]: %w", endpoint, err)
		}
	}
	if s := u.PropagationStatus; s != nil && *s != http.StatusNotFound && *s != http.StatusBadRequest {
		return fmt.Errorf("propagationStatus: want 404 or 400, got %d", *s)
	}
	return nil
}

func parseDuration(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s: want a duration such as 2s, got %q", field, s)
	}
	return d, nil
}

func (f *Fake) faults() Faults {
	f.mu.Lock()
	defer f.mu.Unlock()
	rl := RateLimit{}
	if f.limit.rps > 0 {
		rl = RateLimit{RPS: f.limit.rps, Burst: f.limit.burst}
	}
	sessions := make(map[string]SessionFault, len(f.sessionFaults))
	for id, sf := range f.sessionFaults {
		sessions[id] = *sf
	}
	api := make(map[string]APIFault, len(f.apiFaults))
	for e, a := range f.apiFaults {
		api[e] = *a
	}
	return Faults{
		Deliveries: f.fault, DeliveryDelay: f.deliveryDelay.String(), RateLimit: rl, RetryAfter: f.retryAfter.String(),
		Sessions: sessions, StatusWithoutSession: f.statusWithoutSession,
		WindowLimit: f.windowLimit, API: api, PropagationDelay: f.propagationDelay.String(), PropagationStatus: f.propagationStatus,
		ChallengesPending: f.challengesPending, RevokedAnswer: f.revokedAnswer,
	}
}

func (f *Fake) challenge(id string) Challenge {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *f.challenges[id]
}

func (f *Fake) lookupChallenge(id string) (Challenge, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.challenges[id]
	if !ok {
		return Challenge{}, false
	}
	return *c, true
}

func (f *Fake) verification(id string) Verification {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *f.verifications[id]
}

func (f *Fake) session(id string) Session {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.sessions[id]; ok {
		return s.copy()
	}
	return Session{SessionID: id} // deleted meanwhile
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// readJSON decodes an optional body strictly, so a misspelt field is an
// error rather than a silent default. It answers 400 itself.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeControlError(w http.ResponseWriter, err error) {
	status := http.StatusBadRequest
	switch {
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrWrongState):
		status = http.StatusConflict
	}
	writeError(w, status, err.Error())
}

// jsonMuxErrors turns the mux's own plain-text 404 and 405 into JSON errors,
// keeping its Allow header.
func jsonMuxErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		probe := &statusProbe{header: http.Header{}}
		mux.ServeHTTP(probe, r)
		if allow := probe.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		status := max(probe.status, http.StatusNotFound)
		writeError(w, status, fmt.Sprintf("%s %s: %s", r.Method, r.URL.Path, http.StatusText(status)))
	})
}

// statusProbe keeps the status and headers of an answer and drops its body.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header         { return p.header }
func (p *statusProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *statusProbe) WriteHeader(status int)      { p.status = status }

// ListenAndServe listens on addr (port 0 picks a free one) and serves the
// fake's Handler in the background until ctx ends. It returns the address
// bound, once connections are accepted, so a launcher can start the fake in
// process and print where it is.
func (f *Fake) ListenAndServe(ctx context.Context, addr string) (string, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           f.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	go func() {
		// Serve only ends with an error once the listener is closed, which
		// Shutdown below does.
		_ = srv.Serve(ln)
	}()
	go func() {
		<-ctx.Done()
		// ctx has ended: the shutdown gets a deadline of its own.
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	return ln.Addr().String(), nil
}
