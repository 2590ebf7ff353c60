package actions

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

func cloudEventAction(uri string, mode kidv1.CloudEventContentMode) *kidv1.KidAction {
	return &kidv1.KidAction{
		ObjectMeta: metav1.ObjectMeta{Name: "to-sink", Namespace: "games"},
		Spec: kidv1.KidActionSpec{CloudEvent: &kidv1.CloudEventAction{
			Sink: kidv1.Destination{URI: uri}, ContentMode: mode,
			Headers: []kidv1.HTTPHeader{{Name: "X-Game", Value: "g"}, {Name: "Ce-Id", Value: "spoofed"}, {Name: "Content-Type", Value: "text/plain"}},
		}},
	}
}

// TestCloudEventsReadBackWithTheSDK sends one attempt in each mode to a
// server that reads it with the SDK, as any CloudEvents receiver would.
func TestCloudEventsReadBackWithTheSDK(t *testing.T) {
	signed := event()
	signed.Spec.SignedAt = &metav1.Time{Time: time.Unix(1764000123, 0)}
	folded, err := NewInput(signed, &kidv1.KidUserStatus{SessionID: "s-1", Consent: kidv1.ConsentStatus{State: kidv1.ConsentPending}})
	if err != nil {
		t.Fatal(err)
	}
	folded.UserName = "demo-session-s-1"
	unfolded, err := NewInput(event(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		mode    kidv1.CloudEventContentMode
		e       *kidv1.KidEvent
		in      *Input
		subject string
		time    time.Time
		ext     map[string]any
		ctype   string
	}{
		{name: "binary, folded into a user, signed", mode: "", e: signed, in: folded, subject: "demo-session-s-1", time: signed.Spec.SignedAt.Time,
			ext: map[string]any{"kidproduct": "demo", "kidnamespace": "games", "kidconsent": "Pending"}, ctype: "application/json"},
		{name: "structured, folded into a user, signed", mode: kidv1.ContentModeStructured, e: signed, in: folded, subject: "demo-session-s-1", time: signed.Spec.SignedAt.Time,
			ext: map[string]any{"kidproduct": "demo", "kidnamespace": "games", "kidconsent": "Pending"}, ctype: "application/cloudevents+json"},
		{name: "binary, no user, recovered (unsigned): the time it was received, no subject nor consent", mode: kidv1.ContentModeBinary, e: event(), in: unfolded,
			time: event().Spec.ReceivedAt.Time, ext: map[string]any{"kidproduct": "demo", "kidnamespace": "games"}, ctype: "application/json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			var got *cloudevents.Event
			var header http.Header
			var body []byte
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				header = r.Header.Clone()
				body, _ = io.ReadAll(r.Body)
				r.Body = io.NopCloser(bytes.NewReader(body))
				ev, err := cehttp.NewEventFromHTTPRequest(r)
				g.Expect(err).NotTo(HaveOccurred())
				got = ev
			}))
			defer srv.Close()
			out := DeliverCloudEvent(context.Background(), srv.Client(), nil, cloudEventAction(srv.URL, tc.mode), tc.e, "kid_1", tc.in, nil, time.Unix(1764000000, 0))
			g.Expect(out.Err).NotTo(HaveOccurred())
			g.Expect(got).NotTo(BeNil())
			g.Expect(got.Validate()).To(Succeed())
			g.Expect(got.SpecVersion()).To(Equal("1.0"))
			g.Expect(got.ID()).To(Equal("kid_1"), "the action's header does not override it")
			g.Expect(got.Type()).To(Equal("dev.kid.Challenge.StateChange"))
			g.Expect(got.Source()).To(Equal("/apis/kid.dev/v1alpha1/namespaces/games/kidproducts/demo"))
			g.Expect(got.Subject()).To(Equal(tc.subject))
			g.Expect(got.Time().Equal(tc.time)).To(BeTrue(), "%s", got.Time())
			g.Expect(got.DataContentType()).To(Equal("application/json"))
			g.Expect(got.Extensions()).To(Equal(tc.ext))
			want, err := Body(context.Background(), &kidv1.HTTPAction{}, "kid_1", tc.in)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got.Data()).To(MatchJSON(want), "the data is what an http action sends by default")
			g.Expect(header.Get("Content-Type")).To(HavePrefix(tc.ctype))
			if tc.mode == kidv1.ContentModeStructured {
				g.Expect(body).To(MatchJSON(structured(got, want)), "data is JSON, not data_base64")
			} else {
				g.Expect(body).To(MatchJSON(want))
			}
			g.Expect(header.Get("X-Game")).To(Equal("g"))
			g.Expect(header.Get("webhook-id")).To(Equal("kid_1"))
		})
	}
}

// structured is the envelope of ev in structured mode, its data JSON.
func structured(ev *cloudevents.Event, data []byte) string {
	envelope := map[string]any{
		"specversion": "1.0", "id": ev.ID(), "type": ev.Type(), "source": ev.Source(), "subject": ev.Subject(),
		"time": ev.Time().Format(time.RFC3339Nano), "datacontenttype": "application/json", "data": json.RawMessage(data),
	}
	maps.Copy(envelope, ev.Extensions())
	b, _ := json.Marshal(envelope)
	return string(b)
}

func TestSinkURLsMustBeAbsoluteHTTP(t *testing.T) {
	for _, tc := range []struct {
		url, wantErr string
	}{
		{url: "http://sink.example/kid"},
		{url: "https://sink.example:8443/"},
		{url: "/relative", wantErr: "not an absolute http(s) URL"},
		{url: "file:///etc/passwd", wantErr: "not an absolute http(s) URL"},
		{url: "http:///no-host", wantErr: "not an absolute http(s) URL"},
		{url: "https://sink.example/" + strings.Repeat("u", maxSinkURLBytes), wantErr: "longer than 2048 bytes"},
	} {
		t.Run(tc.url[:min(len(tc.url), 40)], func(t *testing.T) {
			g := NewWithT(t)
			got, err := checkSinkURL(tc.url, "sink.uri")
			if tc.wantErr != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tc.wantErr)))
				g.Expect(err.Error()).NotTo(ContainSubstring(tc.url), "the message names the field, not the URL")
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tc.url))
		})
	}
}

func TestASinkRefNeedsAServiceAccount(t *testing.T) {
	g := NewWithT(t)
	a := cloudEventAction("", "")
	a.Spec.CloudEvent.Sink = kidv1.Destination{Ref: &kidv1.AddressableReference{APIVersion: "eventing.knative.dev/v1", Kind: "Broker", Name: "default"}}
	_, err := ResolveSink(context.Background(), nil, a)
	g.Expect(err).To(MatchError(ErrSinkServiceAccountRequired))
	a.Spec.CloudEvent.Sink.Ref.Namespace = "kid-system"
	_, err = ResolveSink(context.Background(), nil, a)
	g.Expect(err).To(MatchError(ContainSubstring("resolves in the action's own namespace only")))
}

func TestADataTemplateMustRenderJSON(t *testing.T) {
	g := NewWithT(t)
	in, err := NewInput(event(), nil)
	g.Expect(err).NotTo(HaveOccurred())
	posts := 0
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { posts++ }))
	defer srv.Close()
	a := cloudEventAction(srv.URL, "")
	a.Spec.CloudEvent.DataTemplate = `player {{.event.subject.sessionId}}`
	out := DeliverCloudEvent(context.Background(), srv.Client(), nil, a, event(), "kid_1", in, nil, time.Now())
	g.Expect(out.Err).To(MatchError("dataTemplate did not render JSON"))
	g.Expect(out.Permanent).To(BeTrue())
	g.Expect(posts).To(BeZero())

	a.Spec.CloudEvent.DataTemplate = `{{range 3}}x{{end}}`
	g.Expect(CheckTemplates(a)).To(MatchError(ContainSubstring("dataTemplate: range is not allowed")))
}
