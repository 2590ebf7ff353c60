package webhookserver

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/webhookserver/relaytoken"
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

// TestRelayFloodLeavesKIDItsSlots holds every browser slot with relays the
// store does not answer (a flood of relays, an API server slow for them)
// and floods on: the relays past the slots get 503. Meanwhile k-ID
// delivers each of its example events: each is answered 200 and stored, one
// by one, because deliveries take slots of their own. With one shared pool
// of the same size, each would have been 503.
func TestRelayFloodLeavesKIDItsSlots(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	now := time.Now() // relay tokens are valid for a day at most
	s, c, _ := newRelayServer(t, nil, now)
	s.opts.MaxInFlight, s.opts.MaxBrowserInFlight = 2, 2
	s.opts.StoreTimeout = 30 * time.Second
	p := &kidv1.KidProduct{}
	g.Expect(c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "demo"}, p)).To(Succeed())
	p.Spec.Browser.Burst = ptr.To[int32](200) // the flood is within the rate: only the slots hold it
	g.Expect(c.Update(ctx, p)).To(Succeed())

	gate := make(chan struct{})
	held := make(chan struct{}, 64)
	stored := s.store
	s.store = func(ctx context.Context, p *kidv1.KidProduct, e *kidv1.KidEvent) error {
		if e.Spec.Source == kidv1.SourceBrowser {
			held <- struct{}{}
			select {
			case <-gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return stored(ctx, p, e)
	}
	rejected := func() float64 { return testutil.ToFloat64(inFlightRejectedTotal.WithLabelValues(endpointBrowser)) }
	rejectedBefore := rejected()

	// The flood: relays of distinct messages, with a valid token.
	const flood = 20
	tok := token(t, relaytoken.KindSession, sessionID)
	relay := func(i int) int {
		return relayRequest{body: `{"eventType":"Widget.ExitReview","data":{"n":` + strconv.Itoa(i) + `}}`, token: tok}.do(s).Code
	}
	answers := make(chan int, flood)
	for i := range 2 {
		go func() { answers <- relay(i) }()
	}
	for range 2 {
		select {
		case <-held:
		case <-time.After(5 * time.Second):
			t.Fatal("the first relays did not reach the store")
		}
	}
	var floodCodes []int
	for i := 2; i < flood; i++ {
		floodCodes = append(floodCodes, relay(i))
	}
	g.Expect(floodCodes).To(HaveEach(http.StatusServiceUnavailable), "the relays past the browser slots")
	g.Expect(rejected() - rejectedBefore).To(BeNumerically("==", flood-2))

	// k-ID's deliveries, while the browser slots stay taken.
	names := slices.Sorted(maps.Keys(kid.Examples))
	codes := map[string]int{}
	for _, name := range names {
		codes[name] = request{body: kid.Examples[name], timestamp: strconv.FormatInt(now.Unix(), 10)}.do(s).Code
	}
	for _, name := range names {
		g.Expect(codes[name]).To(Equal(http.StatusOK), "k-ID's %s", name)
	}
	var list kidv1.KidEventList
	g.Expect(c.List(ctx, &list)).To(Succeed())
	webhooks := map[string]bool{}
	for _, e := range list.Items {
		g.Expect(e.Spec.Source).To(Equal(kidv1.SourceWebhook), "no relay stored while held")
		webhooks[e.Name] = true
	}
	for _, name := range names {
		// Each example is stored under the name the inbox gives it (its
		// identity, never its body, which privacy may have cut).
		env, err := kid.ParseEnvelope([]byte(kid.Examples[name]))
		g.Expect(err).NotTo(HaveOccurred())
		want, err := inbox.Build(p, env, []byte(kid.Examples[name]), now, now, kidv1.SourceWebhook)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(webhooks).To(HaveKey(want.Name), "k-ID's %s stored", name)
	}
	t.Logf("browser slots held: 2; flood refused: %d x 503; k-ID deliveries: %d of %d answered 200 and stored", len(floodCodes), len(webhooks), len(names))

	close(gate)
	for range 2 {
		g.Expect(<-answers).To(Equal(http.StatusOK), "a held relay, once the store answers")
	}
}
