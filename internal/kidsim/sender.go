// Package kidsim simulates k-ID's sending side: it builds payloads shaped
// like k-ID's, signs them exactly as k-ID does, and delivers them on k-ID's
// retry schedule. The kidsim command and the tests use it.
package kidsim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"k8s.io/utils/clock"

	"github.com/kid-operator/kid-operator/internal/kid"
)

// RetrySchedule is k-ID's documented schedule: after a non-200 answer or a
// timeout, it retries after 5 s and then after 10 s more (3 attempts in all).
var RetrySchedule = []time.Duration{5 * time.Second, 10 * time.Second}

// Attempt is the record of one delivery attempt.
type Attempt struct {
	// Number counts from 1.
	Number int
	// Timestamp is the X-Signature-Timestamp sent.
	Timestamp string
	// Status is the HTTP status answered, or 0 when there was no answer.
	Status int
	// Body is the start of the answer's body.
	Body string
	// Err is the transport error, if any.
	Err error
	// Duration is the time to the answer.
	Duration time.Duration
}

// OK reports whether k-ID counts the attempt as delivered: exactly 200.
func (a Attempt) OK() bool { return a.Status == http.StatusOK }

func (a Attempt) String() string {
	if a.Err != nil {
		return fmt.Sprintf("attempt %d (ts %s): error after %s: %v", a.Number, a.Timestamp, a.Duration.Round(time.Millisecond), a.Err)
	}
	return fmt.Sprintf("attempt %d (ts %s): %d %s in %s: %s", a.Number, a.Timestamp, a.Status, http.StatusText(a.Status), a.Duration.Round(time.Millisecond), a.Body)
}

// Sender delivers events to one URL as k-ID does. Make one with NewSender,
// or give it a Clock: the clock is set once there rather than checked for
// nil on every attempt, so a Sender without one cannot sign.
type Sender struct {
	// URL receives the POSTs.
	URL string
	// Secret signs the deliveries.
	Secret []byte
	// Client sends them; nil means a client with a 10 s timeout.
	Client *http.Client
	// Schedule is the wait before each retry; nil means no retries. Use
	// RetrySchedule to behave as k-ID does.
	Schedule []time.Duration
	// KeepTimestamp makes retries reuse the first attempt's timestamp. k-ID's
	// docs do not say which it does; by default each attempt is signed anew.
	KeepTimestamp bool
	// Clock gives the X-Signature-Timestamp of each attempt. The waits of
	// the retry schedule and the attempts' durations are real time
	// whatever it is: they are about the network, not about the signed
	// time a receiver checks.
	Clock clock.PassiveClock
	// OnAttempt, if set, is called after each attempt (the CLI prints it).
	OnAttempt func(Attempt)
}

// NewSender returns a sender of deliveries to url signed with secret, on the
// real clock and without retries.
func NewSender(url string, secret []byte) *Sender {
	return &Sender{URL: url, Secret: secret, Clock: clock.RealClock{}}
}

// Send delivers body until an attempt gets 200 or the schedule is used up,
// and returns every attempt. The error is nil only when the last attempt got
// 200.
func (s *Sender) Send(ctx context.Context, body []byte) ([]Attempt, error) {
	var attempts []Attempt
	timestamp := s.timestamp()
	for n := 0; ; n++ {
		if n > 0 && !s.KeepTimestamp {
			timestamp = s.timestamp()
		}
		a := s.Deliver(ctx, body, timestamp, kid.Sign)
		a.Number = n + 1
		attempts = append(attempts, a)
		if s.OnAttempt != nil {
			s.OnAttempt(a)
		}
		if a.OK() {
			return attempts, nil
		}
		if n >= len(s.Schedule) {
			return attempts, fmt.Errorf("not delivered after %d attempts", len(attempts))
		}
		select {
		case <-ctx.Done():
			return attempts, ctx.Err()
		case <-time.After(s.Schedule[n]):
		}
	}
}

// Signer computes the signature header of a delivery.
type Signer func(secret []byte, timestamp string, body []byte) string

// BadSignature signs with a secret nobody holds, as the second delivery of
// Compliance Studio's "Test Webhook" button does.
func BadSignature(_ []byte, timestamp string, body []byte) string {
	return kid.Sign([]byte("not-the-webhook-secret"), timestamp, body)
}

// Deliver makes one attempt, with the given timestamp and signer.
func (s *Sender) Deliver(ctx context.Context, body []byte, timestamp string, sign Signer) Attempt {
	a := Attempt{Number: 1, Timestamp: timestamp}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		a.Err = err
		return a
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(kid.HeaderTimestamp, timestamp)
	req.Header.Set(kid.HeaderSignature, sign(s.Secret, timestamp, body))
	if env, err := kid.ParseEnvelope(body); err == nil {
		req.Header.Set(kid.HeaderEventType, env.EventType)
	}
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	start := time.Now()
	resp, err := client.Do(req)
	a.Duration = time.Since(start)
	if err != nil {
		a.Err = err
		return a
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	a.Status = resp.StatusCode
	a.Body = string(bytes.TrimSpace(msg))
	return a
}

// TestButton sends what Compliance Studio's "Test Webhook" button sends when a
// secret is set: a Test event with a valid signature, then one without. A
// correct receiver answers 200 and then 401.
func (s *Sender) TestButton(ctx context.Context, id string) [2]Attempt {
	body := kid.TestPayload(id)
	var out [2]Attempt
	for i, sign := range []Signer{kid.Sign, BadSignature} {
		out[i] = s.Deliver(ctx, body, s.timestamp(), sign)
		out[i].Number = i + 1
		if s.OnAttempt != nil {
			s.OnAttempt(out[i])
		}
	}
	return out
}

func (s *Sender) timestamp() string {
	return strconv.FormatInt(s.Clock.Now().Unix(), 10)
}
