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

// StartFakeKid starts a fake k-ID that delivers to the product ns/product
// on the harness's clock, retrying on k-ID's schedule scaled down (100 ms
// and 200 ms for 5 s and 10 s). Close stops it.
func (h *Harness) StartFakeKid(ns, product string) *FakeKid {
	f := kidsim.NewFake(kidsim.FakeOptions{
		APIKey:        FakeAPIKey,
		ProductID:     11472,
		WebhookURL:    h.WebhookURL(ns, product),
		WebhookSecret: []byte(h.WebhookSecret(ns, product)),
		Schedule:      []time.Duration{100 * time.Millisecond, 200 * time.Millisecond},
		Clock:         h.Clock,
	})
	srv := httptest.NewServer(f.Handler())
	return &FakeKid{Fake: f, URL: srv.URL + "/api/v1", srv: srv}
}

// Close stops serving and delivering.
func (f *FakeKid) Close() {
	f.srv.Close()
	f.Fake.Close()
}
