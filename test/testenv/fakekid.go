package testenv

import (
	"net/http/httptest"
	"time"

	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// FakeAPIKey is the API key a FakeKid accepts.
const FakeAPIKey = "api-key-of-the-test"

// FakeKid is the simulator's stateful fake of k-ID, serving its REST API on
// loopback and delivering its webhooks to one product of the harness.
type FakeKid struct {
	*kidsim.Fake
	// URL is its API base URL, up to /api/v1.
	URL string
	srv *httptest.Server
}

// FakePropagationDelay is how long a FakeKid's /session/get answers a
// session an approval just created with the propagation 404, as k-ID does
// for 1-2 s after a challenge's PASS (spec §4.2), so that every spec that
// approves a challenge exercises the controllers' propagation path.
const FakePropagationDelay = 1500 * time.Millisecond

// StartFakeKid starts a fake k-ID that delivers to the product ns/product
// on the harness's clock, retrying on k-ID's schedule scaled down (100 ms
// and 200 ms for 5 s and 10 s). It is as strict as k-ID's test environment:
// its API counts at most kidsim.TestRateLimit calls a second (429 over it)
// and a new session propagates for FakePropagationDelay. Close stops it.
func (h *Harness) StartFakeKid(ns, product string) *FakeKid {
	f := kidsim.NewFake(kidsim.FakeOptions{
		APIKey:           FakeAPIKey,
		ProductID:        11472,
		WebhookURL:       h.WebhookURL(ns, product),
		WebhookSecret:    []byte(h.WebhookSecret(ns, product)),
		Schedule:         []time.Duration{100 * time.Millisecond, 200 * time.Millisecond},
		Clock:            h.Clock,
		PropagationDelay: FakePropagationDelay,
	})
	if err := f.SetWindowLimit(kidsim.TestRateLimit); err != nil {
		panic(err) // a constant within the bound
	}
	srv := httptest.NewServer(f.Handler())
	return &FakeKid{Fake: f, URL: srv.URL + "/api/v1", srv: srv}
}

// Close stops delivering, lets go of calls a fault holds, then stops
// serving (which waits for the calls in flight).
func (f *FakeKid) Close() {
	f.Fake.Close()
	f.srv.Close()
}
