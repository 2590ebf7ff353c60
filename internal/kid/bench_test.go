package kid

import (
	"strconv"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

// bench1KiB is a Challenge.StateChange padded to 1 KiB with an unknown field,
// the size the receiver's benchmarks use.
func bench1KiB() []byte {
	base := Examples["challenge-pass"]
	pad := 1024 - len(base) - len(`,"pad":""`)
	return []byte(strings.Replace(base, `"status":"PASS"`, `"status":"PASS","pad":"`+strings.Repeat("x", pad)+`"`, 1))
}

func BenchmarkVerifyAndParse1KiB(b *testing.B) {
	body := bench1KiB()
	if len(body) != 1024 {
		b.Fatalf("body is %d bytes", len(body))
	}
	now := time.Unix(1764000000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	v := NewVerifier([]Key{{Name: "current", Secret: []byte("s3cret")}}, 5*time.Minute, testingclock.NewFakePassiveClock(now))
	sig := Sign([]byte("s3cret"), ts, body)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := v.Verify(ts, sig, body); err != nil {
			b.Fatal(err)
		}
		env, err := ParseEnvelope(body)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := Redact(env.Data, Privacy{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEventName(b *testing.B) {
	body := []byte(Examples["challenge-pass"])
	env, err := ParseEnvelope(body)
	if err != nil {
		b.Fatal(err)
	}
	at := time.Unix(1764000000, 0)
	b.ReportAllocs()
	for b.Loop() {
		_ = EventName("demo", env.EventType, env.Identity(body, at))
	}
}
