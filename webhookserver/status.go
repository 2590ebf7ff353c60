package webhookserver

import (
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
//	GET /browser/{namespace}/{product}/status
//	Origin: one of spec.browser.allowedOrigins
//	Authorization: Bearer <relay token>
//
// (The browser module reads it with fetch, which can set the header;
// EventSource cannot, and a token in the URL is refused with 400: proxies
// and ingress controllers log URLs, and the token is a bearer credential
// for up to a day.) The answer is a stream of Server-Sent Events:
//
//	event: status
//	data: {"subject":{"kind":"challenge","id":"…"},"user":"<KidUser or empty>","consent":"Pending","verification":"Unverified","session":"","final":false}
//
// at once, then whenever the KidUser holding the token's subject changes,
// a ": heartbeat" comment every 15 s,
// and, before the stream closes, `event: end` with data
// {"reason":"final"|"expired"|"timeout"|"shutdown"}. It closes after a
// final status (see final), when the token expires, after at most 30
// minutes, and when the receiver shuts down. No personal data is sent.
//
// How changes are seen: each stream watches the few KidUsers that hold its
// subject, selected by the API server on KidUser's selectable fields
// (status_users.go), and reads them from that watch's own store; a change
// wakes it at once (no polling), and the receiver holds no other player.
// The watch is started, and its first list read, before the first status is
// sent, so no change is missed between the two. An idle stream costs its
// heartbeat and one watch (two for a challenge) on the API server, bounded
// by the stream caps (relay.go).

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

	if r.URL.Query().Has("token") {
		// A token in the URL ends up in the logs of every proxy on the
		// way, where it would stay a day's bearer credential.
		return relayAnswer(w, http.StatusBadRequest, "send the relay token in the Authorization header, not in the URL")
	}
	claims, code, msg := s.verifyRelayToken(r.Context(), product, bearer(r))
	if code != 0 {
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", RetryAfterSeconds)
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kid-operator"`)
		}
		return relayAnswer(w, code, msg)
	}

	pr, maxStreams := s.browser.product(product, s.opts.Clock.Now())
	subject := kidv1.UserIDKey(product.Namespace+"/"+product.Name, identityKind(claims.Subject.Kind), claims.Subject.ID)
	closeStream, refused := s.browser.openStream(pr, maxStreams, subject)
	if refused != "" {
		statusStreamsRefusedTotal.WithLabelValues(*productLabel, refused).Inc()
		w.Header().Set("Retry-After", RetryAfterSeconds)
		return relayAnswer(w, http.StatusTooManyRequests, "too many status streams ("+refused+")")
	}
	defer closeStream()
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

	// The users' present state is known once follow returns, and every
	// later change wakes the stream: none is missed between the two.
	users, err := s.browser.users.follow(ctx, subjectRef{
		Namespace: product.Namespace, Product: product.Name,
		Kind: identityKind(claims.Subject.Kind), ID: claims.Subject.ID,
	})
	if err != nil {
		log.Error(err, "watching users for a status stream", "product", product.Namespace+"/"+product.Name)
		w.Header().Set("Retry-After", RetryAfterSeconds)
		return relayAnswer(w, http.StatusServiceUnavailable, "status unavailable")
	}
	defer users.stop()
	last := statusOf(claims.Subject, strongest(users.holders()))

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
		case <-users.wake():
			cur := statusOf(claims.Subject, strongest(users.holders()))
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
