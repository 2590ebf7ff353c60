package kidapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// keyedKID accepts one key at a time, as k-ID does, and counts the requests
// it received with each key, and what it answered them.
type keyedKID struct {
	mu       sync.Mutex
	accept   string
	fail     int // answer this status to the accepted key, when set
	received []string
	srv      *httptest.Server
}

func newKeyedKID(t *testing.T, accept string) *keyedKID {
	f := &keyedKID{accept: accept}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		f.mu.Lock()
		f.received = append(f.received, key)
		accept, fail := f.accept, f.fail
		f.mu.Unlock()
		switch {
		case key != accept:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"UNAUTHORIZED","errorMessage":"The API key is missing or invalid."}`))
		case fail != 0:
			w.WriteHeader(fail)
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"status":"PASS"}`))
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *keyedKID) set(accept string, fail int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accept, f.fail = accept, fail
}

// take returns the keys received since the last take, in order.
func (f *keyedKID) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.received
	f.received = nil
	return out
}

func TestA401TriesTheOtherKeyAndKeepsTheOneKIDAccepts(t *testing.T) {
	g := NewWithT(t)
	f := newKeyedKID(t, "next-key")
	var switches []int
	c := New(Config{
		BaseURL: f.srv.URL, APIKey: "current-key", NextAPIKey: "next-key", Product: "test/rotation",
		HTTPClient: loopbackClient, Clock: newStepClock(), KeySwitched: func(i int) { switches = append(switches, i) },
	})
	g.Expect(c.KeyInUse()).To(Equal(CurrentKey))

	// k-ID switched to the next key: the current one is refused once, the
	// same request goes again with the next one.
	_, err := c.ChallengeStatus(context.Background(), "c-1")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.take()).To(Equal([]string{"current-key", "next-key"}))
	g.Expect(c.KeyInUse()).To(Equal(NextKey))
	g.Expect(switches).To(Equal([]int{NextKey}))

	// From then on only the next key is sent.
	for range 3 {
		_, err = c.ChallengeStatus(context.Background(), "c-1")
		g.Expect(err).NotTo(HaveOccurred())
	}
	g.Expect(f.take()).To(Equal([]string{"next-key", "next-key", "next-key"}))

	// k-ID switched back: the client follows.
	f.set("current-key", 0)
	_, err = c.ChallengeStatus(context.Background(), "c-1")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.take()).To(Equal([]string{"next-key", "current-key"}))
	g.Expect(c.KeyInUse()).To(Equal(CurrentKey))
	g.Expect(switches).To(Equal([]int{NextKey, CurrentKey}))
}

func TestBothKeysRefusedIsUnauthorizedAfterOneTryEach(t *testing.T) {
	g := NewWithT(t)
	f := newKeyedKID(t, "a-third-key")
	c := New(Config{BaseURL: f.srv.URL, APIKey: "current-key", NextAPIKey: "next-key", HTTPClient: loopbackClient, Clock: newStepClock()})
	_, err := c.ChallengeStatus(context.Background(), "c-1")
	g.Expect(IsUnauthorized(err)).To(BeTrue(), "%v", err)
	g.Expect(f.take()).To(Equal([]string{"current-key", "next-key"}))
	g.Expect(c.KeyInUse()).To(Equal(CurrentKey), "no key was accepted: the current one stays")
}

func TestWithoutANextKeyA401IsOneRequest(t *testing.T) {
	g := NewWithT(t)
	f := newKeyedKID(t, "next-key")
	c := New(Config{BaseURL: f.srv.URL, APIKey: "current-key", HTTPClient: loopbackClient, Clock: newStepClock()})
	_, err := c.ChallengeStatus(context.Background(), "c-1")
	g.Expect(IsUnauthorized(err)).To(BeTrue())
	g.Expect(f.take()).To(Equal([]string{"current-key"}))
}

func TestAnAnswerThatSaysNothingOfTheKeyDoesNotSwitchIt(t *testing.T) {
	g := NewWithT(t)
	f := newKeyedKID(t, "next-key")
	f.set("next-key", http.StatusServiceUnavailable)
	c := New(Config{BaseURL: f.srv.URL, APIKey: "current-key", NextAPIKey: "next-key", HTTPClient: loopbackClient, Clock: newStepClock(), MaxAttempts: 1})
	_, err := c.ChallengeStatus(context.Background(), "c-1")
	g.Expect(err).To(HaveOccurred())
	g.Expect(IsUnauthorized(err)).To(BeFalse(), "the 503 is what the caller sees")
	g.Expect(f.take()).To(Equal([]string{"current-key", "next-key"}))
	g.Expect(c.KeyInUse()).To(Equal(CurrentKey), "a 503 does not show that k-ID accepts the key")
}

func TestTheOtherKeysAttemptTakesAToken(t *testing.T) {
	g := NewWithT(t)
	f := newKeyedKID(t, "next-key")
	clock := newStepClock()
	c := New(Config{BaseURL: f.srv.URL, APIKey: "current-key", NextAPIKey: "next-key", RPS: 1, Burst: 1, HTTPClient: loopbackClient, Clock: clock})
	g.Expect(c.Reserve()).To(BeZero())
	_, err := c.WithReservation().ChallengeStatus(context.Background(), "c-1")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.take()).To(HaveLen(2))
	// The reserved token paid the first attempt; the second waited a
	// rate-interval for its own, and for no backoff.
	g.Expect(clock.Sleeps()).To(Equal([]time.Duration{time.Second}))
}

// backlogOf reads kid_api_backlog of one product from the collector.
func backlogOf(g Gomega, product string) (float64, bool) {
	ch := make(chan prometheus.Metric, 100)
	backlogs.Collect(ch)
	close(ch)
	for m := range ch {
		var out dto.Metric
		g.Expect(m.Write(&out)).To(Succeed())
		for _, l := range out.GetLabel() {
			if l.GetName() == "product" && l.GetValue() == product {
				return out.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func TestBacklogCountsTheSlotsNotYetCome(t *testing.T) {
	g := NewWithT(t)
	clock := newStepClock()
	c := New(Config{BaseURL: "http://127.0.0.1:1/api/v1", Product: "test/backlog", RPS: 10, Burst: 1, Clock: clock, HTTPClient: loopbackClient})
	g.Expect(c.Book()).To(BeZero(), "the burst is free, and nobody waits")
	g.Expect(c.Backlog()).To(BeZero())
	for range 5 {
		c.Book()
	}
	g.Expect(c.Backlog()).To(Equal(5))
	got, ok := backlogOf(g, "test/backlog")
	g.Expect(ok).To(BeTrue())
	g.Expect(got).To(Equal(5.0))

	// The slots at 100 and 200 ms have come; those at 300, 400, 500 not.
	clock.Step(250 * time.Millisecond)
	g.Expect(c.Backlog()).To(Equal(3))
	clock.Step(time.Second)
	got, _ = backlogOf(g, "test/backlog")
	g.Expect(got).To(BeZero())

	// A newer client of the product replaces it; Forget drops the series.
	c2 := New(Config{BaseURL: "http://127.0.0.1:1/api/v1", Product: "test/backlog", RPS: 10, Burst: 1, Clock: clock, HTTPClient: loopbackClient})
	c2.Book()
	c2.Book()
	got, _ = backlogOf(g, "test/backlog")
	g.Expect(got).To(Equal(1.0))
	Forget("test/backlog")
	_, ok = backlogOf(g, "test/backlog")
	g.Expect(ok).To(BeFalse())
}
