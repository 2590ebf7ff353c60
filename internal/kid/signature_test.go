package kid

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	testingclock "k8s.io/utils/clock/testing"
)

// The test vector of kid-events-spec.md §1.3.
const (
	vectorSecret    = "your-secret"
	vectorTimestamp = "1700000000"
	vectorBody      = `{"eventType":"Test","data":{"id":"12345678-1234-1234-1234-123456789abc"}}`
	vectorSignature = "15ae46eedc66bc07bb2a19ba5ebfdf8b360151ae022c1d12c1a5c84488634f0f"
)

func TestSignMatchesSpecVector(t *testing.T) {
	g := NewWithT(t)
	g.Expect(Sign([]byte(vectorSecret), vectorTimestamp, []byte(vectorBody))).To(Equal(vectorSignature))
}

// Whatever Sign produces, Verify accepts with the same secret, and refuses
// with any other: the simulator and kubectl kid sign with Sign.
func FuzzSignIsWhatVerifyAccepts(f *testing.F) {
	f.Add([]byte(vectorSecret), uint32(1700000000), []byte(vectorBody))
	f.Add([]byte("k"), uint32(0), []byte{})
	f.Add([]byte{0xff, 0}, uint32(4294967295), []byte("\x00 not json"))
	f.Fuzz(func(t *testing.T, secret []byte, secs uint32, body []byte) {
		timestamp := strconv.FormatUint(uint64(secs), 10)
		at := time.Unix(int64(secs), 0)
		v := NewVerifier([]Key{{Name: "other", Secret: append([]byte("x"), secret...)}, {Name: "k", Secret: secret}}, time.Second, testingclock.NewFakePassiveClock(at))
		_, key, err := v.Verify(timestamp, Sign(secret, timestamp, body), body)
		if err != nil || key != "k" {
			t.Fatalf("Sign's signature: key %q, error %v", key, err)
		}
	})
}

func TestVerify(t *testing.T) {
	signedAt := time.Unix(1700000000, 0)
	tolerance := 5 * time.Minute
	keys := []Key{{Name: "previous", Secret: []byte("old-secret")}, {Name: "current", Secret: []byte(vectorSecret)}}

	cases := []struct {
		name      string
		now       time.Time
		keys      []Key
		timestamp string
		signature string
		body      string
		wantKey   string
		wantErr   SignatureFailure
	}{
		{name: "spec vector verifies with the matching key", now: signedAt, keys: keys, timestamp: vectorTimestamp, signature: vectorSignature, body: vectorBody, wantKey: "current"},
		{name: "upper-case hex verifies", now: signedAt, keys: keys, timestamp: vectorTimestamp, signature: strings.ToUpper(vectorSignature), body: vectorBody, wantKey: "current"},
		{name: "exactly at the past edge verifies", now: signedAt.Add(tolerance), keys: keys, timestamp: vectorTimestamp, signature: vectorSignature, body: vectorBody, wantKey: "current"},
		{name: "one second past the past edge is stale", now: signedAt.Add(tolerance + time.Second), keys: keys, timestamp: vectorTimestamp, signature: vectorSignature, body: vectorBody, wantErr: FailureStale},
		{name: "exactly at the future edge verifies", now: signedAt.Add(-tolerance), keys: keys, timestamp: vectorTimestamp, signature: vectorSignature, body: vectorBody, wantKey: "current"},
		{name: "one second past the future edge is future", now: signedAt.Add(-tolerance - time.Second), keys: keys, timestamp: vectorTimestamp, signature: vectorSignature, body: vectorBody, wantErr: FailureFuture},
		{name: "missing timestamp", now: signedAt, keys: keys, timestamp: "", signature: vectorSignature, body: vectorBody, wantErr: FailureMissing},
		{name: "missing signature", now: signedAt, keys: keys, timestamp: vectorTimestamp, signature: "", body: vectorBody, wantErr: FailureMissing},
		{name: "non-numeric timestamp is malformed", now: signedAt, keys: keys, timestamp: "17e8", signature: vectorSignature, body: vectorBody, wantErr: FailureMalformed},
		{name: "signed timestamp is malformed", now: signedAt, keys: keys, timestamp: "+1700000000", signature: vectorSignature, body: vectorBody, wantErr: FailureMalformed},
		{name: "negative timestamp is malformed", now: signedAt, keys: keys, timestamp: "-1", signature: vectorSignature, body: vectorBody, wantErr: FailureMalformed},
		{name: "huge timestamp is malformed", now: signedAt, keys: keys, timestamp: strings.Repeat("9", 40), signature: vectorSignature, body: vectorBody, wantErr: FailureMalformed},
		{name: "millisecond timestamp is far in the future", now: signedAt, keys: keys, timestamp: "1700000000000", signature: vectorSignature, body: vectorBody, wantErr: FailureFuture},
		{name: "short signature is malformed", now: signedAt, keys: keys, timestamp: vectorTimestamp, signature: vectorSignature[:62], body: vectorBody, wantErr: FailureMalformed},
		{name: "non-hex signature is malformed", now: signedAt, keys: keys, timestamp: vectorTimestamp, signature: "zz" + vectorSignature[2:], body: vectorBody, wantErr: FailureMalformed},
		{name: "one changed body byte is a mismatch", now: signedAt, keys: keys, timestamp: vectorTimestamp, signature: vectorSignature, body: strings.Replace(vectorBody, "Test", "Tesu", 1), wantErr: FailureMismatch},
		{name: "re-serialised body is a mismatch", now: signedAt, keys: keys, timestamp: vectorTimestamp, signature: vectorSignature, body: strings.ReplaceAll(vectorBody, ":", ": "), wantErr: FailureMismatch},
		{name: "timestamp with leading zero signs other bytes: mismatch", now: signedAt, keys: keys, timestamp: "0" + vectorTimestamp, signature: vectorSignature, body: vectorBody, wantErr: FailureMismatch},
		{name: "wrong secret is a mismatch", now: signedAt, keys: keys[:1], timestamp: vectorTimestamp, signature: vectorSignature, body: vectorBody, wantErr: FailureMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			v := NewVerifier(tc.keys, tolerance, testingclock.NewFakePassiveClock(tc.now))
			_, key, err := v.Verify(tc.timestamp, tc.signature, []byte(tc.body))
			if tc.wantErr != "" {
				var se *SignatureError
				g.Expect(errors.As(err, &se)).To(BeTrue(), "error %v", err)
				g.Expect(se.Reason).To(Equal(tc.wantErr))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(key).To(Equal(tc.wantKey))
		})
	}
}

func TestVerifyWithoutKeysNeverAccepts(t *testing.T) {
	g := NewWithT(t)
	v := NewVerifier(nil, time.Hour, nil)
	_, _, err := v.Verify(strconv.FormatInt(time.Now().Unix(), 10), vectorSignature, []byte(vectorBody))
	g.Expect(err).To(MatchError(ErrNoKeys))
}

func FuzzParseSignatureHeaders(f *testing.F) {
	f.Add(vectorTimestamp, vectorSignature)
	f.Add("", "")
	f.Add("+1", strings.Repeat("0", 64))
	f.Add("99999999999999999999", strings.Repeat("g", 64))
	f.Fuzz(func(t *testing.T, timestamp, signature string) {
		signedAt, sig, err := ParseSignatureHeaders(timestamp, signature)
		if err != nil {
			return
		}
		// What parses must be an exact decimal and 32 bytes of signature.
		if strconv.FormatInt(signedAt.Unix(), 10) != strings.TrimLeft(timestamp, "0") && signedAt.Unix() != 0 {
			t.Fatalf("timestamp %q parsed as %d", timestamp, signedAt.Unix())
		}
		if len(sig) != 32 {
			t.Fatalf("signature of %d bytes accepted", len(sig))
		}
	})
}
