// Package relaytoken mints and verifies relay tokens: the short-lived
// credential with which a game's page relays k-ID's widget (DOM) events to
// kid-operator's receiver (POST /browser/<namespace>/<product>) and follows
// its player's status (GET /browser/<namespace>/<product>/status).
//
// The game's backend mints one token per player page, for the one k-ID id
// the page is about (a challenge, a verification or a session), with a key
// from the Secret the product's spec.browser.tokenSecretRef names. The
// receiver accepts a relayed event only when it is about that id, so a page
// cannot relay, or watch, another player's events. A token is a bearer
// credential: keep it as short-lived as the page needs (at most 24 hours).
//
// # Format (version 1)
//
//	token   = "v1." payload "." signature
//	payload = base64url(json)     no padding (RFC 4648 §5)
//	json    = {"p":product,"k":kind,"i":id,"e":expires}
//	signature = base64url(HMAC-SHA256(key, "kid-relay-token.v1." payload))
//
// where product is the KidProduct as "namespace/name", kind is "challenge",
// "verification" or "session", id is k-ID's id (1 to 128 bytes of UTF-8
// without control characters), and expires is the expiry time in Unix seconds (a JSON integer).
// The MAC covers the payload exactly as sent (its base64url text), so the
// JSON need not be canonical: any serialisation of those four members
// verifies. The whole token is at most 1 KiB.
//
// key is the raw bytes of one value of the Secret (any non-empty value; a
// Secret may hold several, such as "current" and "previous", so that a key
// can be rotated without downtime: Verify tries every one).
//
// Verify refuses a token that is malformed (ErrMalformed), that no key signed
// (ErrBadSignature), that was minted for another product (ErrWrongProduct),
// that has expired (ErrExpired), or that expires more than MaxTTL after the
// time of verification (ErrTooLong). The format carries no issue time, so
// the last rule is what bounds a token's life: however long its minter made
// it, no token is accepted for more than 24 hours, and a stolen one is
// worth at most that. Removing a key from the Secret ends its tokens at
// once (within the receiver's Secret cache TTL).
//
// # Minting elsewhere
//
// With openssl (the key as text, here in $KEY; printf does no JSON
// escaping, which k-ID's ids, UUIDs, do not need):
//
//	b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
//	payload=$(printf '{"p":"%s","k":"%s","i":"%s","e":%d}' games/demo session "$SESSION" "$(($(date +%s) + 3600))" | b64url)
//	sig=$(printf 'kid-relay-token.v1.%s' "$payload" | openssl dgst -sha256 -hmac "$KEY" -binary | b64url)
//	echo "v1.$payload.$sig"
//
// With Node.js:
//
//	const crypto = require('node:crypto');
//	function mintRelayToken(key, product, kind, id, ttlSeconds) {
//	  const e = Math.floor(Date.now() / 1000) + ttlSeconds;
//	  const payload = Buffer.from(JSON.stringify({ p: product, k: kind, i: id, e })).toString('base64url');
//	  const sig = crypto.createHmac('sha256', key).update('kid-relay-token.v1.' + payload).digest('base64url');
//	  return `v1.${payload}.${sig}`;
//	}
//
// Test vector (TestVector; the openssl and Node.js lines above mint the same
// token): key "relay-key-1", product "games/demo", kind "challenge", id
// "a04467a0-83de-40ca-8572-8cc761e896aa", expires 1764003600:
//
//	v1.eyJwIjoiZ2FtZXMvZGVtbyIsImsiOiJjaGFsbGVuZ2UiLCJpIjoiYTA0NDY3YTAtODNkZS00MGNhLTg1NzItOGNjNzYxZTg5NmFhIiwiZSI6MTc2NDAwMzYwMH0.2M2CjtgobTmacpShkzmfQmDiu3Vcxhj4bryIQ4dkpbw
//
// `kidsim relay-token` mints one from the command line.
package relaytoken

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Subject kinds: the k-ID id a token is about.
const (
	KindChallenge    = "challenge"
	KindVerification = "verification"
	KindSession      = "session"
)

// Bounds.
const (
	// MaxTTL is how far ahead of now a token may expire, at minting and at
	// verification.
	MaxTTL = 24 * time.Hour
	// MaxIDLen bounds the subject's id, in bytes (as k-ID's ids in
	// KidEvents and KidUsers).
	MaxIDLen = 128
	// MaxProductLen bounds "namespace/name" (63 + 1 + 253).
	MaxProductLen = 317
	// MaxTokenLen bounds a token, in bytes.
	MaxTokenLen = 1024
)

const (
	prefix = "v1."
	// signingPrefix is prepended to the payload before the MAC, so that a
	// key used for anything else never produces a valid relay token.
	signingPrefix = "kid-relay-token.v1."
)

// Errors of Verify (and, for ErrTooLong, of Mint). Each error returned wraps
// exactly one of them; test with errors.Is.
var (
	ErrMalformed    = errors.New("malformed relay token")
	ErrBadSignature = errors.New("relay token signed by no current key")
	ErrExpired      = errors.New("relay token expired")
	ErrTooLong      = errors.New("relay token expires more than 24h ahead")
	ErrWrongProduct = errors.New("relay token minted for another product")
	// ErrNoKeys: Verify was given no non-empty key (the product's Secret
	// holds none), so nothing can be verified.
	ErrNoKeys = errors.New("no relay token key")
)

// Subject is the k-ID id a token is about.
type Subject struct {
	// Kind is KindChallenge, KindVerification or KindSession.
	Kind string
	// ID is k-ID's id.
	ID string
}

// String returns "kind/id".
func (s Subject) String() string { return s.Kind + "/" + s.ID }

// Validate checks the kind and the id.
func (s Subject) Validate() error {
	switch s.Kind {
	case KindChallenge, KindVerification, KindSession:
	default:
		return fmt.Errorf("subject kind %q is not challenge, verification or session", s.Kind)
	}
	return validText("subject id", s.ID, MaxIDLen)
}

// payload is the token's JSON. The field order is the documented one.
type payload struct {
	Product string `json:"p"`
	Kind    string `json:"k"`
	ID      string `json:"i"`
	Expires int64  `json:"e"`
}

var b64 = base64.RawURLEncoding.Strict()

// Mint returns a token for s in product ("namespace/name"), signed with key,
// that expires at expires: in the future and at most MaxTTL from now.
func Mint(key []byte, product string, s Subject, expires time.Time) (string, error) {
	return mint(key, product, s, expires, time.Now())
}

func mint(key []byte, product string, s Subject, expires, now time.Time) (string, error) {
	if len(key) == 0 {
		return "", errors.New("minting a relay token: empty key")
	}
	if err := validProduct(product); err != nil {
		return "", fmt.Errorf("minting a relay token: %w", err)
	}
	if err := s.Validate(); err != nil {
		return "", fmt.Errorf("minting a relay token: %w", err)
	}
	switch {
	case !expires.After(now):
		return "", errors.New("minting a relay token: expiry is not in the future")
	case expires.Sub(now) > MaxTTL:
		return "", fmt.Errorf("minting a relay token: %w", ErrTooLong)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// As JSON.stringify writes it, so that Go and JavaScript mint the same
	// bytes (either verifies regardless).
	enc.SetEscapeHTML(false)
	if err := enc.Encode(payload{Product: product, Kind: s.Kind, ID: s.ID, Expires: expires.Unix()}); err != nil {
		return "", fmt.Errorf("minting a relay token: %w", err)
	}
	p := b64.EncodeToString(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
	token := prefix + p + "." + b64.EncodeToString(sign(key, p))
	if len(token) > MaxTokenLen {
		return "", fmt.Errorf("minting a relay token: longer than %d bytes", MaxTokenLen)
	}
	return token, nil
}

// Verify returns the subject of token if one of keys signed it for product
// ("namespace/name") and it is valid at now. Every key is tried, with a
// constant-time comparison; empty keys are skipped.
func Verify(keys [][]byte, token, product string, now time.Time) (Subject, error) {
	c, err := VerifyClaims(keys, token, product, now)
	return c.Subject, err
}

// Claims is what a verified token says.
type Claims struct {
	// Product is "namespace/name".
	Product string
	Subject Subject
	Expires time.Time
}

// VerifyClaims is Verify, returning the token's expiry too (the receiver
// ends a status stream when its token expires).
func VerifyClaims(keys [][]byte, token, product string, now time.Time) (Claims, error) {
	if len(token) > MaxTokenLen {
		return Claims{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxTokenLen)
	}
	rest, ok := strings.CutPrefix(token, prefix)
	if !ok {
		return Claims{}, fmt.Errorf("%w: not a v1 token", ErrMalformed)
	}
	p, sigText, ok := strings.Cut(rest, ".")
	if !ok || p == "" || strings.Contains(sigText, ".") {
		return Claims{}, fmt.Errorf("%w: not three parts", ErrMalformed)
	}
	sig, err := b64.DecodeString(sigText)
	if err != nil || len(sig) != sha256.Size {
		return Claims{}, fmt.Errorf("%w: signature is not base64url of 32 bytes", ErrMalformed)
	}

	// The MAC first: nothing an unknown party wrote is decoded further.
	matched, haveKey := false, false
	for _, k := range keys {
		if len(k) == 0 {
			continue
		}
		haveKey = true
		// Every key, even after a match, so that the time taken does not
		// say which key matched.
		if hmac.Equal(sig, sign(k, p)) {
			matched = true
		}
	}
	switch {
	case !haveKey:
		return Claims{}, ErrNoKeys
	case !matched:
		return Claims{}, ErrBadSignature
	}

	raw, err := b64.DecodeString(p)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	var pl struct {
		Product *string `json:"p"`
		Kind    *string `json:"k"`
		ID      *string `json:"i"`
		Expires *int64  `json:"e"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pl); err != nil || dec.More() {
		return Claims{}, fmt.Errorf("%w: payload is not the v1 JSON object", ErrMalformed)
	}
	if pl.Product == nil || pl.Kind == nil || pl.ID == nil || pl.Expires == nil {
		return Claims{}, fmt.Errorf("%w: payload lacks p, k, i or e", ErrMalformed)
	}
	s := Subject{Kind: *pl.Kind, ID: *pl.ID}
	if err := s.Validate(); err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if *pl.Product != product {
		return Claims{}, ErrWrongProduct
	}
	expires := time.Unix(*pl.Expires, 0)
	switch {
	case !expires.After(now):
		return Claims{}, ErrExpired
	case expires.Sub(now) > MaxTTL:
		return Claims{}, ErrTooLong
	}
	return Claims{Product: product, Subject: s, Expires: expires}, nil
}

func sign(key []byte, payload string) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signingPrefix))
	mac.Write([]byte(payload))
	return mac.Sum(nil)
}

func validProduct(product string) error {
	ns, name, ok := strings.Cut(product, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("product %q is not namespace/name", product)
	}
	return validText("product", product, MaxProductLen)
}

// validText requires 1 to limit bytes of UTF-8 without control characters.
func validText(what, s string, limit int) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is empty", what)
	case len(s) > limit:
		return fmt.Errorf("%s is longer than %d bytes", what, limit)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not UTF-8", what)
	case strings.ContainsFunc(s, unicode.IsControl):
		return fmt.Errorf("%s holds a control character", what)
	}
	return nil
}
