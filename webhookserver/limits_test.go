package webhookserver

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// TestInFlightBound holds two deliveries in a store that blocks, with the
// bound set to 2: a third is answered 503 with Retry-After at once and
// stores nothing; once the two are released, all three are stored.
func TestInFlightBound(t *testing.T) {
	g := NewWithT(t)
	s, c := newTestServer(t, nil)
	s.opts.MaxInFlight = 2
	s.opts.StoreTimeout = 30 * time.Second

	entered := make(chan struct{}, 3)
	gate := make(chan struct{})
	stored := s.store
	s.store = func(ctx context.Context, p *kidv1.KidProduct, e *kidv1.KidEvent) error {
		entered <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		return stored(ctx, p, e)
	}

	held := []string{"challenge-pass", "session-delete"}
	answers := make(chan *httptest.ResponseRecorder, len(held))
	for _, name := range held {
		go func() { answers <- request{body: kid.Examples[name]}.do(s) }()
	}
	for range held {
		select {
		case <-entered:
		case <-time.After(5 * time.Second):
			t.Fatal("the held deliveries did not reach the store")
		}
	}

	third := request{body: kid.Examples["challenge-in-progress"]}
	start := time.Now()
	rec := third.do(s)
	took := time.Since(start)
	g.Expect(rec.Code).To(Equal(http.StatusServiceUnavailable))
	g.Expect(rec.Header().Get("Retry-After")).To(Equal(RetryAfterSeconds))
	g.Expect(took).To(BeNumerically("<", time.Second), "answered at once, not after a wait")
	g.Expect(entered).To(BeEmpty(), "the third never reached the store")
	g.Expect(countEvents(t, c)).To(Equal(0))
	t.Logf("injected: bound 2, 2 deliveries held in the store; third answered %d Retry-After=%s in %s; stored while held: %d",
		rec.Code, rec.Header().Get("Retry-After"), took.Round(time.Microsecond), countEvents(t, c))

	close(gate)
	for range held {
		g.Expect((<-answers).Code).To(Equal(http.StatusOK))
	}
	g.Expect(third.do(s).Code).To(Equal(http.StatusOK), "the retry of the third, after release")
	g.Expect(countEvents(t, c)).To(Equal(3))
	t.Logf("after release: held deliveries 200, third's retry 200, stored %d of 3", countEvents(t, c))
}
