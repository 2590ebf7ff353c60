package webhookserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/webhookserver/relaytoken"
)

// The status stream: a game's page follows what the cluster knows of its
// player with
//
//	GET /browser/{namespace}/{product}/status?token=<relay token>
//	Origin: one of spec.browser.allowedOrigins
//
// (EventSource cannot set headers, hence the query parameter; an
// Authorization: Bearer header is read when there is no parameter.) The
// answer is a stream of Server-Sent Events:
//
//	event: status
//	data: {"subject":{"kind":"challenge","id":"…"},"user":"<KidUser or empty>","consent":"Pending","verification":"Unverified","session":"","final":false}
//
// at once, then whenever the KidUser holding the token's subject changes
// (as the operator's cache sees it), a ": heartbeat" comment every 15 s,
// and, before the stream closes, `event: end` with data
// {"reason":"final"|"expired"|"timeout"|"shutdown"}. It closes after a
// final status (see final), when the token expires, after at most 30
// minutes, and when the receiver shuts down. No personal data is sent.
//
// How changes are seen: an event handler on the KidUser informer wakes the
// streams whose subject a changed user holds (by the id index's keys), and
// each woken stream reads its user from the cache. A stream is subscribed
// before its first read, so no change is missed between the two, and an
// idle stream costs nothing but its heartbeat; polling the cache every
// few hundred milliseconds would cost a read per stream per tick whether
// anything changed or not, and add that much latency.

// statusSubject is the status message's subject.
type statusSubject struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
}

// statusMessage is the data of an `event: status`: states only, never
// personal data.
type statusMessage struct {
	Subject statusSubject `json:"subject"`
	// User is the name of the KidUser holding the subject, or "" when no
	// user holds it yet.
	User         string `json:"user"`
	Consent      string `json:"consent"`
	Verification string `json:"verification"`
	Session      string `json:"session"`
	Final        bool   `json:"final"`
}

// Reasons a stream ends, sent as `event: end`.
const (
	endFinal    = "final"
	endExpired  = "expired"
	endTimeout  = "timeout"
	endShutdown = "shutdown"
)

// streamWriteTimeout bounds one write to a stream: a client that reads
// nothing for that long is dropped. The server's WriteTimeout, made for
// deliveries, would end every stream after a few seconds.
const streamWriteTimeout = 10 * time.Second

// status handles one status stream (or its CORS preflight).
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	productLabel := "unknown"
	code := s.handleStatus(w, r, &productLabel)
	statusRequestsTotal.WithLabelValues(productLabel, strconv.Itoa(code)).Inc()
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request, productLabel *string) int {
	product, code := s.browserPreamble(w, r, productLabel, http.MethodGet)
	if product == nil {
		return code
	}

	token := r.URL.Query().Get("token")
	if token == "" {
		token = bearer(r)
	}
	claims, code, msg := s.verifyRelayToken(r.Context(), product, token)
	if code != 0 {
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", RetryAfterSeconds)
		}
		return relayAnswer(w, code, msg)
	}

	pr, maxStreams := s.browser.product(product, s.opts.Clock.Now())
	if !pr.openStream(maxStreams) {
		w.Header().Set("Retry-After", RetryAfterSeconds)
		return relayAnswer(w, http.StatusTooManyRequests, "too many status streams")
	}
	defer pr.closeStream()
	open := statusStreamsOpen.WithLabelValues(*productLabel)
	open.Inc()
	defer open.Dec()
	return s.stream(w, r, product, claims)
}

// stream serves the status stream until it ends, and returns the status
// code it answered.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, product *kidv1.KidProduct, claims relaytoken.Claims) int {
	log := ctrl.LoggerFrom(r.Context())
	ctx := r.Context()
	key := kidv1.UserIDKey(product.Name, identityKind(claims.Subject.Kind), claims.Subject.ID)

	// Subscribe before the first read: a change in between wakes it.
	wake, cancel, err := s.browser.users.subscribe(ctx, product.Namespace, key)
	if err != nil {
		log.Error(err, "watching users for a status stream", "product", product.Namespace+"/"+product.Name)
		w.Header().Set("Retry-After", RetryAfterSeconds)
		return relayAnswer(w, http.StatusServiceUnavailable, "status unavailable")
	}
	defer cancel()
	last, err := s.currentStatus(ctx, product, claims.Subject, key)
	if err != nil {
		log.Error(err, "reading users for a status stream", "product", product.Namespace+"/"+product.Name)
		w.Header().Set("Retry-After", RetryAfterSeconds)
		return relayAnswer(w, http.StatusServiceUnavailable, "status unavailable")
	}

	rc := http.NewResponseController(w)
	// The server's read deadline, made for deliveries, would cancel the
	// request (and so the stream) once it passed.
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)

	write := func(frame string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := fmt.Fprint(w, frame); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	send := func(m statusMessage) bool {
		data, _ := json.Marshal(m)
		return write("event: status\ndata: " + string(data) + "\n\n")
	}
	end := func(reason string) int {
		write(`event: end` + "\ndata: {\"reason\":\"" + reason + "\"}\n\n")
		return http.StatusOK
	}

	if !send(last) {
		return http.StatusOK
	}
	if last.Final {
		return end(endFinal)
	}

	heartbeat := time.NewTicker(s.browser.opts.Heartbeat)
	defer heartbeat.Stop()
	expiry := time.NewTimer(claims.Expires.Sub(s.opts.Clock.Now()))
	defer expiry.Stop()
	timeout := time.NewTimer(s.browser.opts.MaxStreamDuration)
	defer timeout.Stop()
	for {
		select {
		case <-ctx.Done():
			return http.StatusOK
		case <-s.browser.stopping:
			return end(endShutdown)
		case <-expiry.C:
			return end(endExpired)
		case <-timeout.C:
			return end(endTimeout)
		case <-heartbeat.C:
			if !write(": heartbeat\n\n") {
				return http.StatusOK
			}
		case <-wake:
			cur, err := s.currentStatus(ctx, product, claims.Subject, key)
			if err != nil {
				// The cache answers from memory; a failure here is the
				// request ending. The next change tries again.
				continue
			}
			if cur == last {
				continue
			}
			last = cur
			if !send(cur) {
				return http.StatusOK
			}
			if cur.Final {
				return end(endFinal)
			}
		}
	}
}

// currentStatus reads the status of a subject from the users that hold it.
func (s *Server) currentStatus(ctx context.Context, product *kidv1.KidProduct, subject relaytoken.Subject, key string) (statusMessage, error) {
	users, err := s.browser.users.holders(ctx, product.Namespace, key)
	if err != nil {
		return statusMessage{}, err
	}
	return statusOf(subject, strongest(users)), nil
}

// strongest returns the user a subject's status comes from: the one known
// by the strongest identity (a session is the player; a stand-in is merged
// into it), then by name; nil for none.
func strongest(users []kidv1.KidUser) *kidv1.KidUser {
	var best *kidv1.KidUser
	for i := range users {
		u := &users[i]
		if !u.DeletionTimestamp.IsZero() {
			continue
		}
		if best == nil || u.Spec.Identity.Kind.Strength() > best.Spec.Identity.Kind.Strength() ||
			(u.Spec.Identity.Kind.Strength() == best.Spec.Identity.Kind.Strength() && u.Name < best.Name) {
			best = u
		}
	}
	return best
}

// statusOf is the status message of a subject held by u (nil: nobody yet).
//
// final says the page can stop waiting: the session was deleted, or, for a
// verification, its record is Verified, Failed or Revoked; for a challenge
// or a session, consent was Granted, or Denied (for a challenge, denied on
// that challenge: a player denied on an earlier one may yet be granted on
// this one).
func statusOf(subject relaytoken.Subject, u *kidv1.KidUser) statusMessage {
	m := statusMessage{
		Subject:      statusSubject{Kind: subject.Kind, ID: subject.ID},
		Consent:      string(kidv1.ConsentNone),
		Verification: string(kidv1.VerificationUnverified),
	}
	if u == nil {
		return m
	}
	st := &u.Status
	m.User = u.Name
	if st.Consent.State != "" {
		m.Consent = string(st.Consent.State)
	}
	m.Session = string(st.Session.State)
	switch subject.Kind {
	case relaytoken.KindVerification:
		// The page is about this verification, not whichever decided the
		// player's summary.
		for _, rec := range st.Verification.Records {
			if rec.ID == subject.ID {
				m.Verification = string(rec.State)
			}
		}
	default:
		if st.Verification.State != "" {
			m.Verification = string(st.Verification.State)
		}
	}

	switch {
	case st.Session.State == kidv1.SessionDeleted:
		m.Final = true
	case subject.Kind == relaytoken.KindVerification:
		m.Final = m.Verification != string(kidv1.VerificationUnverified)
	case st.Consent.State == kidv1.ConsentGranted:
		m.Final = true
	case st.Consent.State == kidv1.ConsentDenied:
		m.Final = subject.Kind != relaytoken.KindChallenge || st.Consent.ChallengeID == "" || st.Consent.ChallengeID == subject.ID
	}
	return m
}

// identityKind is the KidUser identity kind of a token's subject kind.
func identityKind(kind string) kidv1.IdentityKind {
	switch kind {
	case relaytoken.KindChallenge:
		return kidv1.IdentityChallenge
	case relaytoken.KindVerification:
		return kidv1.IdentityVerification
	}
	return kidv1.IdentitySession
}
