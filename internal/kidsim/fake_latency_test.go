package kidsim

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

func TestAPILatencyDelaysEveryAnswerAndACallerCanGiveUp(t *testing.T) {
	g := NewWithT(t)
	f := newTestFake(t, FakeOptions{})
	g.Expect(f.SetAPILatency(-time.Millisecond)).NotTo(Succeed())
	g.Expect(f.SetAPILatency(MaxAPILatency + time.Millisecond)).NotTo(Succeed())

	g.Expect(f.SetAPILatency(150 * time.Millisecond)).To(Succeed())
	began := time.Now()
	rec := get(f, "/api/v1/challenge/get-status?challengeId=unknown")
	g.Expect(time.Since(began)).To(BeNumerically(">=", 150*time.Millisecond))
	g.Expect(rec.Code).To(Equal(http.StatusBadRequest), "the answer is k-ID's, only later")
	g.Expect(f.Requests()).To(HaveLen(1))

	// A caller that gives up is not kept waiting the whole latency.
	g.Expect(f.SetAPILatency(MaxAPILatency)).To(Succeed())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/api/v1/challenge/get-status?challengeId=unknown", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Accept", "application/json")
	began = time.Now()
	f.Handler().ServeHTTP(httptest.NewRecorder(), req)
	g.Expect(time.Since(began)).To(BeNumerically("<", 10*time.Second))

}
