package relaytoken

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

const (
	vectorKey     = "relay-key-1"
	vectorProduct = "games/demo"
	vectorID      = "a04467a0-83de-40ca-8572-8cc761e896aa"
	vectorExpires = 1764003600
	// vectorToken was minted by the openssl and Node.js recipes of the
	// package doc, independently of this package.
	vectorToken = "v1.eyJwIjoiZ2FtZXMvZGVtbyIsImsiOiJjaGFsbGVuZ2UiLCJpIjoiYTA0NDY3YTAtODNkZS00MGNhLTg1NzItOGNjNzYxZTg5NmFhIiwiZSI6MTc2NDAwMzYwMH0.2M2CjtgobTmacpShkzmfQmDiu3Vcxhj4bryIQ4dkpbw"
)

var (
	vectorSubject = Subject{Kind: KindChallenge, ID: vectorID}
	// vectorNow is an hour before the vector's expiry.
	vectorNow = time.Unix(vectorExpires, 0).Add(-time.Hour)
)

func keys(ks ...string) [][]byte {
	out := make([][]byte, len(ks))
	for i, k := range ks {
		out[i] = []byte(k)
	}
	return out
}

func TestVector(t *testing.T) {
	g := NewWithT(t)
	got, err := mint([]byte(vectorKey), vectorProduct, vectorSubject, time.Unix(vectorExpires, 0), vectorNow)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(Equal(vectorToken), "Go mints the bytes openssl and Node.js mint")

	c, err := VerifyClaims(keys(vectorKey), vectorToken, vectorProduct, vectorNow)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c).To(Equal(Claims{Product: vectorProduct, Subject: vectorSubject, Expires: time.Unix(vectorExpires, 0)}))
}

// forge signs an arbitrary payload text with key, for payloads Mint would
// refuse to make.
func forge(key, payloadJSON string) string {
	p := base64.RawURLEncoding.EncodeToString([]byte(payloadJSON))
	return "v1." + p + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(key), p))
}

func TestVerifyRefuses(t *testing.T) {
	parts := strings.Split(vectorToken, ".")
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	cases := []struct {
		name    string
		token   string
		product string
		now     time.Time
		keys    [][]byte
		want    error
	}{
		{name: "an empty token is malformed", token: "", want: ErrMalformed},
		{name: "a token of another version is malformed", token: "v2." + parts[1] + "." + parts[2], want: ErrMalformed},
		{name: "a token without a signature is malformed", token: "v1." + parts[1], want: ErrMalformed},
		{name: "a token of four parts is malformed", token: vectorToken + ".x", want: ErrMalformed},
		{name: "a signature that is not base64url is malformed", token: "v1." + parts[1] + ".!!!", want: ErrMalformed},
		{name: "a padded signature is malformed", token: vectorToken + "=", want: ErrMalformed},
		{name: "a truncated signature is malformed", token: vectorToken[:len(vectorToken)-4], want: ErrMalformed},
		{name: "a token over 1 KiB is malformed", token: vectorToken + strings.Repeat("A", MaxTokenLen), want: ErrMalformed},
		{name: "a tampered payload is a bad signature", token: "v1." + flip(parts[1], 10) + "." + parts[2], want: ErrBadSignature},
		{name: "a tampered signature is a bad signature", token: "v1." + parts[1] + "." + flip(parts[2], 3), want: ErrBadSignature},
		{name: "another key is a bad signature", token: vectorToken, keys: keys("relay-key-2"), want: ErrBadSignature},
		{name: "no key at all is ErrNoKeys", token: vectorToken, keys: [][]byte{}, want: ErrNoKeys},
		{name: "only empty keys is ErrNoKeys", token: vectorToken, keys: keys(""), want: ErrNoKeys},
		{name: "another product is refused", token: vectorToken, product: "games/other", want: ErrWrongProduct},
		{name: "another namespace is refused", token: vectorToken, product: "other/demo", want: ErrWrongProduct},
		{name: "at its expiry it has expired", token: vectorToken, now: time.Unix(vectorExpires, 0), want: ErrExpired},
		{name: "after its expiry it has expired", token: vectorToken, now: time.Unix(vectorExpires, 0).Add(time.Hour), want: ErrExpired},
		{name: "expiring more than 24h ahead is refused", token: vectorToken, now: time.Unix(vectorExpires, 0).Add(-MaxTTL - time.Second), want: ErrTooLong},
		{name: "a signed payload that is not JSON is malformed", token: forge(vectorKey, `not json`), want: ErrMalformed},
		{name: "a signed payload without e is malformed", token: forge(vectorKey, `{"p":"games/demo","k":"session","i":"s"}`), want: ErrMalformed},
		{name: "a signed payload with a fractional e is malformed", token: forge(vectorKey, `{"p":"games/demo","k":"session","i":"s","e":1764003600.5}`), want: ErrMalformed},
		{name: "a signed payload with an unknown member is malformed", token: forge(vectorKey, `{"p":"games/demo","k":"session","i":"s","e":1764003600,"x":1}`), want: ErrMalformed},
		{name: "a signed payload of an unknown kind is malformed", token: forge(vectorKey, `{"p":"games/demo","k":"account","i":"s","e":1764003600}`), want: ErrMalformed},
		{name: "a signed payload with an empty id is malformed", token: forge(vectorKey, `{"p":"games/demo","k":"session","i":"","e":1764003600}`), want: ErrMalformed},
		{name: "a signed payload with an id over 128 bytes is malformed", token: forge(vectorKey, `{"p":"games/demo","k":"session","i":"`+strings.Repeat("x", 129)+`","e":1764003600}`), want: ErrMalformed},
		{name: "a signed payload followed by more JSON is malformed", token: forge(vectorKey, `{"p":"games/demo","k":"session","i":"s","e":1764003600}{}`), want: ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			if tc.product == "" {
				tc.product = vectorProduct
			}
			if tc.now.IsZero() {
				tc.now = vectorNow
			}
			if tc.keys == nil {
				tc.keys = keys(vectorKey)
			}
			s, err := Verify(tc.keys, tc.token, tc.product, tc.now)
			g.Expect(err).To(MatchError(tc.want))
			for _, other := range []error{ErrMalformed, ErrBadSignature, ErrExpired, ErrTooLong, ErrWrongProduct, ErrNoKeys} {
				if other != tc.want {
					g.Expect(errors.Is(err, other)).To(BeFalse(), "wraps %v too", other)
				}
			}
			g.Expect(s).To(BeZero())
		})
	}
}

func TestVerifyAcceptsAnyKeyOfARotation(t *testing.T) {
	g := NewWithT(t)
	exp := time.Now().Add(time.Hour)
	old, err := Mint([]byte("previous"), vectorProduct, Subject{Kind: KindSession, ID: "s-1"}, exp)
	g.Expect(err).NotTo(HaveOccurred())
	cur, err := Mint([]byte("current"), vectorProduct, Subject{Kind: KindSession, ID: "s-2"}, exp)
	g.Expect(err).NotTo(HaveOccurred())

	both := keys("current", "", "previous")
	s, err := Verify(both, old, vectorProduct, time.Now())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(s).To(Equal(Subject{Kind: KindSession, ID: "s-1"}))
	s, err = Verify(both, cur, vectorProduct, time.Now())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(s).To(Equal(Subject{Kind: KindSession, ID: "s-2"}))

	// Once the previous key is removed, its tokens stop verifying.
	_, err = Verify(keys("current"), old, vectorProduct, time.Now())
	g.Expect(err).To(MatchError(ErrBadSignature))
}

func TestMintRefuses(t *testing.T) {
	now := time.Now()
	ok := Subject{Kind: KindVerification, ID: "v-1"}
	cases := []struct {
		name    string
		key     string
		product string
		subject Subject
		expires time.Time
		want    string
	}{
		{name: "an empty key", key: "", product: vectorProduct, subject: ok, expires: now.Add(time.Hour), want: "empty key"},
		{name: "a product without a namespace", key: "k", product: "demo", subject: ok, expires: now.Add(time.Hour), want: "namespace/name"},
		{name: "a product of three parts", key: "k", product: "a/b/c", subject: ok, expires: now.Add(time.Hour), want: "namespace/name"},
		{name: "an unknown kind", key: "k", product: vectorProduct, subject: Subject{Kind: "account", ID: "x"}, expires: now.Add(time.Hour), want: "kind"},
		{name: "an empty id", key: "k", product: vectorProduct, subject: Subject{Kind: KindSession}, expires: now.Add(time.Hour), want: "empty"},
		{name: "an id over 128 bytes", key: "k", product: vectorProduct, subject: Subject{Kind: KindSession, ID: strings.Repeat("x", 129)}, expires: now.Add(time.Hour), want: "longer than 128"},
		{name: "an id with a control character", key: "k", product: vectorProduct, subject: Subject{Kind: KindSession, ID: "a\nb"}, expires: now.Add(time.Hour), want: "control"},
		{name: "an id that is not UTF-8", key: "k", product: vectorProduct, subject: Subject{Kind: KindSession, ID: "\xff"}, expires: now.Add(time.Hour), want: "UTF-8"},
		{name: "an expiry in the past", key: "k", product: vectorProduct, subject: ok, expires: now.Add(-time.Second), want: "not in the future"},
		{name: "an expiry more than 24h ahead", key: "k", product: vectorProduct, subject: ok, expires: now.Add(MaxTTL + time.Minute), want: "24h"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			tok, err := mint([]byte(tc.key), tc.product, tc.subject, tc.expires, now)
			g.Expect(err).To(MatchError(ContainSubstring(tc.want)))
			g.Expect(tok).To(BeEmpty())
		})
	}
	g := NewWithT(t)
	_, err := Mint([]byte("k"), vectorProduct, ok, time.Now().Add(25*time.Hour))
	g.Expect(err).To(MatchError(ErrTooLong))
}

func TestMintedTokensRoundTripAndStayBounded(t *testing.T) {
	g := NewWithT(t)
	now := time.Now()
	// The longest product and id there can be, with characters JSON
	// escapes.
	product := strings.Repeat("n", 63) + "/" + strings.Repeat("p", 253)
	id := strings.Repeat("\"<", MaxIDLen/2)
	for _, kind := range []string{KindChallenge, KindVerification, KindSession} {
		tok, err := Mint([]byte("k"), product, Subject{Kind: kind, ID: id}, now.Add(MaxTTL))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(len(tok)).To(BeNumerically("<=", MaxTokenLen))
		s, err := Verify(keys("k"), tok, product, now)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(s).To(Equal(Subject{Kind: kind, ID: id}))
	}
}

func FuzzVerify(f *testing.F) {
	f.Add(vectorToken)
	f.Add(forge(vectorKey, `{"p":"games/demo","k":"session","i":"s","e":1764003600}`))
	f.Add("v1..")
	f.Fuzz(func(t *testing.T, token string) {
		s, err := Verify(keys(vectorKey), token, vectorProduct, vectorNow)
		if err == nil && s.Validate() != nil {
			t.Fatalf("accepted an invalid subject %+v", s)
		}
	})
}
