package kid

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sort"
	"strconv"
	"time"

	"k8s.io/utils/clock"
)

// Header names of a k-ID webhook delivery.
const (
	HeaderTimestamp = "X-Signature-Timestamp"
	HeaderSignature = "X-Signature-Hmac-Sha256"
	HeaderEventType = "X-Event-Type"
)

// SignatureFailure says why a delivery's signature was refused. The values
// are the `reason` label of kid_webhook_signature_failures_total.
type SignatureFailure string

// The reasons a signature is refused: no signature header, one that does
// not parse, one that does not match the body, or a timestamp outside the
// tolerance (too old, or too far ahead).
const (
	FailureMissing   SignatureFailure = "missing"
	FailureMalformed SignatureFailure = "malformed"
	FailureMismatch  SignatureFailure = "mismatch"
	FailureStale     SignatureFailure = "stale"
	FailureFuture    SignatureFailure = "future"
)

// SignatureError is returned when a delivery's signature is refused.
type SignatureError struct {
	Reason SignatureFailure
}

func (e *SignatureError) Error() string { return "signature " + string(e.Reason) }

// Key is one webhook secret, named after its key in the Secret.
type Key struct {
	Name   string
	Secret []byte
}

// Sign returns the X-Signature-Hmac-Sha256 value k-ID sends: the lowercase hex
// HMAC-SHA256, keyed with the secret, of the exact timestamp header string
// followed by the raw body. It is the one signer: the simulator and
// `kubectl kid test` sign with it, so what they send is what Verify accepts.
func Sign(secret []byte, timestamp string, body []byte) string {
	return hex.EncodeToString(mac(nil, secret, timestamp, body))
}

// mac appends to b the HMAC of one delivery. Sign and Verify both compute it
// here, so the two cannot drift apart; Verify passes a buffer of its own so
// that checking a delivery allocates no digest per key.
func mac(b, secret []byte, timestamp string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(timestamp))
	h.Write(body)
	return h.Sum(b)
}

// maxTimestampLen bounds the timestamp header: epoch seconds have 10 digits
// until the year 2286; anything much longer is not a timestamp.
const maxTimestampLen = 20

// ParseSignatureHeaders checks the form of the two signature headers and
// returns the signing time and the decoded signature. It does not check the
// signature itself.
func ParseSignatureHeaders(timestamp, signature string) (time.Time, []byte, error) {
	if timestamp == "" || signature == "" {
		return time.Time{}, nil, &SignatureError{Reason: FailureMissing}
	}
	if len(timestamp) > maxTimestampLen || len(signature) != 2*sha256.Size {
		return time.Time{}, nil, &SignatureError{Reason: FailureMalformed}
	}
	secs, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil || secs < 0 || timestamp[0] == '+' {
		return time.Time{}, nil, &SignatureError{Reason: FailureMalformed}
	}
	sig := make([]byte, sha256.Size)
	// hex.Decode accepts upper case too; k-ID promises lower case, and
	// tolerating both costs nothing.
	if _, err := hex.Decode(sig, []byte(signature)); err != nil {
		return time.Time{}, nil, &SignatureError{Reason: FailureMalformed}
	}
	return time.Unix(secs, 0), sig, nil
}

// Verifier checks deliveries against a set of keys. Make one with
// NewVerifier, which sets the clock once; a Verifier without a Clock cannot
// check the timestamp window.
type Verifier struct {
	// Keys are tried in order; any one that matches accepts the delivery,
	// so a secret can be rotated without downtime.
	Keys []Key
	// Tolerance is how far the signing time may lie from the clock's now,
	// either way.
	Tolerance time.Duration
	// Clock is what the signing time is compared with; tests pass a fake
	// one to try the edges of the window.
	Clock clock.PassiveClock
}

// NewVerifier returns a verifier of keys with the timestamp window
// tolerance, on clk; nil means the real clock.
func NewVerifier(keys []Key, tolerance time.Duration, clk clock.PassiveClock) *Verifier {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Verifier{Keys: keys, Tolerance: tolerance, Clock: clk}
}

// ErrNoKeys is returned by Verify when the verifier holds no key: a product
// without a usable secret never accepts anything.
var ErrNoKeys = errors.New("no webhook key configured")

// Verify checks the headers and the signature of one delivery and returns the
// signing time and the name of the key that matched. The timestamp window is
// checked before any HMAC is computed, so replayed or junk requests cost
// little.
func (v *Verifier) Verify(timestamp, signature string, body []byte) (time.Time, string, error) {
	if len(v.Keys) == 0 {
		return time.Time{}, "", ErrNoKeys
	}
	signedAt, sig, err := ParseSignatureHeaders(timestamp, signature)
	if err != nil {
		return time.Time{}, "", err
	}
	skew := v.Clock.Since(signedAt)
	switch {
	case skew > v.Tolerance:
		return signedAt, "", &SignatureError{Reason: FailureStale}
	case skew < -v.Tolerance:
		return signedAt, "", &SignatureError{Reason: FailureFuture}
	}
	var want [sha256.Size]byte
	for _, k := range v.Keys {
		if hmac.Equal(sig, mac(want[:0], k.Secret, timestamp, body)) {
			return signedAt, k.Name, nil
		}
	}
	return signedAt, "", &SignatureError{Reason: FailureMismatch}
}

// KeysFromSecretData returns the usable webhook keys of a Secret's data:
// every key with a non-empty value, in name order.
func KeysFromSecretData(data map[string][]byte) []Key {
	keys := make([]Key, 0, len(data))
	for name, secret := range data {
		if len(secret) > 0 {
			keys = append(keys, Key{Name: name, Secret: secret})
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	return keys
}
