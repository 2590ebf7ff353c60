package webhookserver

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/scheme"
	"github.com/kid-operator/kid-operator/internal/secrets"
)

const testSecret = "s3cret"

var testNow = time.Unix(1764000000, 0)

func product(name, secret string) *kidv1.KidProduct {
	return &kidv1.KidProduct{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec: kidv1.KidProductSpec{
			ProductID: 11472, Environment: kidv1.EnvironmentTest,
			Webhook: kidv1.WebhookSpec{SecretRef: kidv1.LocalObjectReference{Name: secret}},
		},
	}
}

// newTestServer returns a ready receiver over a fake API server holding the
// product "demo" (a usable secret), "nosecret" (its Secret is missing) and
// "emptykey" (its Secret holds only an empty key).
func newTestServer(t *testing.T, funcs *interceptor.Funcs) (*Server, client.Client) {
	objs := []client.Object{
		product("demo", "demo-webhook"),
		product("nosecret", "missing"),
		product("emptykey", "empty"),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "demo-webhook", Namespace: "default", Labels: kidv1.SecretLabels()}, Data: map[string][]byte{"current": []byte(testSecret)}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "empty", Namespace: "default", Labels: kidv1.SecretLabels()}, Data: map[string][]byte{"current": {}}},
	}
	b := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(objs...)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	c := b.Build()
	s := &Server{reader: c, secrets: secrets.New(c, secrets.Options{}), store: inbox.ClientStore(c, c)}
	s.opts = Options{Clock: testingclock.NewFakePassiveClock(testNow)}
	s.opts.setDefaults()
	s.MarkReady()
	return s, c
}

// request is a delivery to send to the handler.
type request struct {
	method    string
	path      string
	body      string
	timestamp string // default: testNow
	signature string // default: a valid signature
	noHeaders bool
	chunked   bool
	cutShort  bool // the body breaks off with a read error
}

type brokenReader struct{}

func (brokenReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func (r request) do(s *Server) *httptest.ResponseRecorder {
	if r.method == "" {
		r.method = http.MethodPost
	}
	if r.path == "" {
		r.path = kidv1.WebhookPath("default", "demo")
	}
	if r.timestamp == "" {
		r.timestamp = strconv.FormatInt(testNow.Unix(), 10)
	}
	if r.signature == "" {
		r.signature = kid.Sign([]byte(testSecret), r.timestamp, []byte(r.body))
	}
	var body io.Reader = strings.NewReader(r.body)
	if r.cutShort {
		body = io.MultiReader(body, brokenReader{})
	}
	req := httptest.NewRequest(r.method, r.path, body)
	if r.chunked || r.cutShort {
		req.ContentLength = -1
	}
	if !r.noHeaders {
		req.Header.Set(kid.HeaderTimestamp, r.timestamp)
		req.Header.Set(kid.HeaderSignature, r.signature)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
}

func countEvents(t *testing.T, c client.Client) int {
	var list kidv1.KidEventList
	if err := c.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

func TestReceiveAnswers(t *testing.T) {
	valid := kid.Examples["challenge-pass"]
	stale := strconv.FormatInt(testNow.Add(-6*time.Minute).Unix(), 10)
	future := strconv.FormatInt(testNow.Add(6*time.Minute).Unix(), 10)
	big := `{"eventType":"Test","data":{"pad":"` + strings.Repeat("x", DefaultMaxBodyBytes) + `"}}`

	cases := []struct {
		name       string
		req        request
		want       int
		retryAfter bool
		stored     int
	}{
		{name: "GET is 405", req: request{method: http.MethodGet, body: valid}, want: 405},
		{name: "PUT is 405", req: request{method: http.MethodPut, body: valid}, want: 405},
		{name: "unknown product is 404", req: request{path: kidv1.WebhookPath("default", "nope"), body: valid}, want: 404},
		{name: "unknown namespace is 404", req: request{path: kidv1.WebhookPath("other", "demo"), body: valid}, want: 404},
		{name: "path without product is 404", req: request{path: "/webhooks/default", body: valid}, want: 404},
		{name: "product whose secret is missing is 503", req: request{path: kidv1.WebhookPath("default", "nosecret"), body: valid}, want: 503, retryAfter: true},
		{name: "product whose secret has only an empty key is 503", req: request{path: kidv1.WebhookPath("default", "emptykey"), body: valid}, want: 503, retryAfter: true},
		{name: "body over the cap is 413", req: request{body: big}, want: 413},
		{name: "chunked body over the cap is 413", req: request{body: big, chunked: true}, want: 413},
		{name: "body that breaks off is 400", req: request{body: `{"eventType":"Te`, cutShort: true}, want: 400},
		{name: "no signature headers is 401", req: request{body: valid, noHeaders: true}, want: 401},
		{name: "malformed signature is 401", req: request{body: valid, signature: "abc"}, want: 401},
		{name: "malformed timestamp is 401", req: request{body: valid, timestamp: "yesterday", signature: strings.Repeat("0", 64)}, want: 401},
		{name: "wrong signature is 401", req: request{body: valid, signature: kid.Sign([]byte("other"), strconv.FormatInt(testNow.Unix(), 10), []byte(valid))}, want: 401},
		{name: "stale timestamp is 401", req: request{body: valid, timestamp: stale}, want: 401},
		{name: "future timestamp is 401", req: request{body: valid, timestamp: future}, want: 401},
		{name: "signed non-JSON is 400", req: request{body: "hello"}, want: 400},
		{name: "signed JSON without eventType is 400", req: request{body: `{"data":{}}`}, want: 400},
		{name: "signed JSON without data is 400", req: request{body: `{"eventType":"Test"}`}, want: 400},
		{name: "signed empty body is 400", req: request{body: ""}, want: 400},
		{name: "valid delivery is 200 and stored", req: request{body: valid}, want: 200, stored: 1},
		{name: "valid unknown event type is 200 and stored", req: request{body: `{"eventType":"Future.Event","data":{"x":1}}`}, want: 200, stored: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			s, c := newTestServer(t, nil)
			rec := tc.req.do(s)
			g.Expect(rec.Code).To(Equal(tc.want), rec.Body.String())
			if tc.retryAfter {
				g.Expect(rec.Header().Get("Retry-After")).To(Equal(RetryAfterSeconds))
			}
			g.Expect(countEvents(t, c)).To(Equal(tc.stored))
		})
	}
}

func TestReceiveCountsSignatureFailuresByReason(t *testing.T) {
	g := NewWithT(t)
	s, _ := newTestServer(t, nil)
	stale := testutil.ToFloat64(signatureFailuresTotal.WithLabelValues("default/demo", "stale"))
	request{body: kid.Examples["test"], timestamp: strconv.FormatInt(testNow.Add(-time.Hour).Unix(), 10)}.do(s)
	g.Expect(testutil.ToFloat64(signatureFailuresTotal.WithLabelValues("default/demo", "stale"))).To(Equal(stale + 1))
}

func TestReceiveIsUnavailableUntilCachesSync(t *testing.T) {
	g := NewWithT(t)
	s, c := newTestServer(t, nil)
	s.synced.Store(false)
	rec := request{body: kid.Examples["test"]}.do(s)
	g.Expect(rec.Code).To(Equal(503))
	g.Expect(countEvents(t, c)).To(BeZero())
}

func TestReceiveAnswers503WhenTheAPIServerFails(t *testing.T) {
	g := NewWithT(t)
	s, c := newTestServer(t, &interceptor.Funcs{
		Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
			return errors.New("connection refused")
		},
	})
	rec := request{body: kid.Examples["challenge-pass"]}.do(s)
	g.Expect(rec.Code).To(Equal(503))
	g.Expect(rec.Header().Get("Retry-After")).To(Equal(RetryAfterSeconds))
	g.Expect(countEvents(t, c)).To(BeZero())
}

func TestReceiveAnswers503WithinTheStoreTimeout(t *testing.T) {
	g := NewWithT(t)
	s, _ := newTestServer(t, &interceptor.Funcs{
		Create: func(ctx context.Context, _ client.WithWatch, _ client.Object, _ ...client.CreateOption) error {
			<-ctx.Done() // an API server that never answers
			return ctx.Err()
		},
	})
	s.opts.StoreTimeout = 50 * time.Millisecond
	start := time.Now()
	rec := request{body: kid.Examples["test"]}.do(s)
	g.Expect(rec.Code).To(Equal(503))
	g.Expect(time.Since(start)).To(BeNumerically("<", 5*time.Second))
}

func TestReceiveDeduplicatesRetries(t *testing.T) {
	g := NewWithT(t)
	s, c := newTestServer(t, nil)
	body := kid.Examples["challenge-pass"]
	for _, offset := range []time.Duration{0, 5 * time.Second, 15 * time.Second} {
		ts := strconv.FormatInt(testNow.Add(offset).Unix(), 10)
		g.Expect(request{body: body, timestamp: ts}.do(s).Code).To(Equal(200))
	}
	g.Expect(countEvents(t, c)).To(Equal(1))

	g.Expect(request{body: kid.Examples["challenge-in-progress"]}.do(s).Code).To(Equal(200))
	g.Expect(countEvents(t, c)).To(Equal(2), "IN_PROGRESS and PASS of one challenge are two events")
}

func TestReceiveStoresWhatTheEventSays(t *testing.T) {
	g := NewWithT(t)
	s, c := newTestServer(t, nil)
	g.Expect(request{body: kid.Examples["challenge-pass"]}.do(s).Code).To(Equal(200))
	var list kidv1.KidEventList
	g.Expect(c.List(context.Background(), &list)).To(Succeed())
	g.Expect(list.Items).To(HaveLen(1))
	e := list.Items[0]
	g.Expect(e.Name).To(HavePrefix("demo-challenge-statechange-"))
	g.Expect(e.Labels).To(Equal(map[string]string{
		kidv1.ProductLabel:   "demo",
		kidv1.EventTypeLabel: "Challenge.StateChange",
		kidv1.SessionLabel:   "b6d1a7c2-8f34-4c83-bf0b-3a6d4a2f9d31",
	}))
	g.Expect(e.Spec.Subject).To(Equal(kidv1.EventSubject{
		ChallengeID: "9d6b056e-7d62-4a9e-907a-3d0f6f1d1b9a",
		SessionID:   "b6d1a7c2-8f34-4c83-bf0b-3a6d4a2f9d31",
		KUID:        "7a1f2c3d-4e5f-6789-abcd-ef0123456789",
	}))
	g.Expect(string(e.Spec.Data.Raw)).NotTo(ContainSubstring("parent@example.com"))
	g.Expect(string(e.Spec.Data.Raw)).NotTo(ContainSubstring("2011-07-12"))
	g.Expect(e.Spec.PersonalData).To(BeFalse())
	g.Expect(e.Spec.SignedAt.Time).To(BeTemporally("==", testNow))
	g.Expect(e.Spec.BodySHA256).To(HaveLen(64))
	g.Expect(e.OwnerReferences).To(HaveLen(1))
}

func FuzzHandler(f *testing.F) {
	ts := strconv.FormatInt(testNow.Unix(), 10)
	for _, body := range kid.Examples {
		f.Add([]byte(body), ts, true)
	}
	f.Add([]byte(`{"eventType":"Test","data":null}`), ts, true)
	f.Add([]byte(`{}`), "x", false)
	// Accepted creates are not stored, so that the fake API server does not
	// grow (and slow) over millions of executions; a small body cap keeps
	// each execution cheap without changing what is checked.
	s, _ := newTestServer(&testing.T{}, &interceptor.Funcs{
		Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error { return nil },
	})
	s.opts.MaxBodyBytes = 4 << 10
	f.Fuzz(func(t *testing.T, body []byte, timestamp string, sign bool) {
		signature := "00"
		if sign {
			signature = kid.Sign([]byte(testSecret), timestamp, body)
		}
		req := httptest.NewRequest(http.MethodPost, kidv1.WebhookPath("default", "demo"), strings.NewReader(string(body)))
		req.Header.Set(kid.HeaderTimestamp, timestamp)
		req.Header.Set(kid.HeaderSignature, signature)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 400:
			if !sign {
				t.Fatalf("answered %d to an unsigned delivery", rec.Code)
			}
		case 401, 413:
		default:
			t.Fatalf("unexpected answer %d: %s", rec.Code, rec.Body)
		}
	})
}
