package webhookserver

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// BenchmarkHandle is the handler's own cost for a 1 KiB delivery: routing,
// reads from the (fake) cache, verification, parsing and building the
// KidEvent. The create is accepted without being stored, so that the figure is
// the receiver's, not the fake API server's; the API server's share is
// measured by the load benchmark.
func BenchmarkHandle(b *testing.B) {
	t := &testing.T{}
	s, _ := newTestServer(t, &interceptor.Funcs{
		Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error { return nil },
	})
	h := s.Handler()
	ts := strconv.FormatInt(testNow.Unix(), 10)
	base := kid.Examples["challenge-in-progress"]
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		body := strings.Replace(base, "9d6b056e-7d62-4a9e-907a-3d0f6f1d1b9a", strconv.Itoa(i), 1)
		body = strings.Replace(body, `"status"`, `"pad":"`+strings.Repeat("x", 1024-len(body)-9)+`","status"`, 1)
		req := httptest.NewRequest(http.MethodPost, kidv1.WebhookPath("default", "demo"), strings.NewReader(body))
		req.Header.Set(kid.HeaderTimestamp, ts)
		req.Header.Set(kid.HeaderSignature, kid.Sign([]byte(testSecret), ts, []byte(body)))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("answer %d: %s", rec.Code, rec.Body)
		}
	}
}
