package actions

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

func event() *kidv1.KidEvent {
	return &kidv1.KidEvent{
		ObjectMeta: metav1.ObjectMeta{Name: "demo-challenge-statechange-abc", Namespace: "games"},
		Spec: kidv1.KidEventSpec{
			ProductRef: kidv1.LocalObjectReference{Name: "demo"},
			EventType:  "Challenge.StateChange",
			Subject:    kidv1.EventSubject{ChallengeID: "c-1", SessionID: "s-1"},
			Data:       &apiextensionsv1.JSON{Raw: []byte(`{"id":"c-1","status":"PASS","sessionId":"s-1"}`)},
			ReceivedAt: metav1.NewTime(time.Unix(1764000000, 0)),
		},
	}
}

func action(filter string) *kidv1.KidAction {
	return &kidv1.KidAction{
		ObjectMeta: metav1.ObjectMeta{Name: "notify", Namespace: "games", UID: "uid-1", Generation: 1},
		Spec:       kidv1.KidActionSpec{Filter: filter, HTTP: &kidv1.HTTPAction{URL: "http://x"}},
	}
}

func TestMatches(t *testing.T) {
	user := &kidv1.KidUserStatus{Consent: kidv1.ConsentStatus{State: kidv1.ConsentGranted}}
	in, err := NewInput(event(), user)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		mutate  func(*kidv1.KidAction)
		want    bool
		wantErr string
	}{
		{name: "no conditions match everything", mutate: func(*kidv1.KidAction) {}, want: true},
		{name: "listed product matches", mutate: func(a *kidv1.KidAction) { a.Spec.Products = []string{"other", "demo"} }, want: true},
		{name: "unlisted product does not", mutate: func(a *kidv1.KidAction) { a.Spec.Products = []string{"other"} }},
		{name: "listed type matches", mutate: func(a *kidv1.KidAction) { a.Spec.EventTypes = []string{"Challenge.StateChange"} }, want: true},
		{name: "unlisted type does not", mutate: func(a *kidv1.KidAction) { a.Spec.EventTypes = []string{"Session.Delete"} }},
		{name: "true filter on data matches", mutate: func(a *kidv1.KidAction) { a.Spec.Filter = `event.data.status == "PASS"` }, want: true},
		{name: "false filter does not", mutate: func(a *kidv1.KidAction) { a.Spec.Filter = `event.data.status == "FAIL"` }},
		{name: "filter on the user after the fold", mutate: func(a *kidv1.KidAction) {
			a.Spec.Filter = `user.consent.state == "Granted" && event.subject.sessionId == "s-1"`
		}, want: true},
		{name: "a field the event lacks is an error, not a match", mutate: func(a *kidv1.KidAction) { a.Spec.Filter = `event.data.nope == "x"` }, wantErr: "no such key"},
		{name: "a syntax error is the compiler's message", mutate: func(a *kidv1.KidAction) { a.Spec.Filter = `event.data.status ==` }, wantErr: "Syntax error"},
		{name: "a non-boolean filter is refused", mutate: func(a *kidv1.KidAction) { a.Spec.Filter = `"PASS"` }, wantErr: "boolean"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			a := action("")
			tc.mutate(a)
			ok, err := NewFilters().Matches(context.Background(), a, event(), in)
			if tc.wantErr != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tc.wantErr)))
				g.Expect(ok).To(BeFalse())
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(ok).To(Equal(tc.want))
		})
	}
}

func TestFiltersCompileOncePerGeneration(t *testing.T) {
	g := NewWithT(t)
	f := NewFilters()
	a := action(`true`)
	p1, err := f.Compile(a)
	g.Expect(err).NotTo(HaveOccurred())
	p2, _ := f.Compile(a)
	g.Expect(p2).To(BeIdenticalTo(p1))
	a.Generation, a.Spec.Filter = 2, `false`
	p3, _ := f.Compile(a)
	g.Expect(p3).NotTo(BeIdenticalTo(p1))
}

func TestSignStandardWebhook(t *testing.T) {
	g := NewWithT(t)
	key := []byte("0123456789abcdef")
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("msg_1.1764000000.{}"))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	g.Expect(SignStandardWebhook([]byte(secret), "msg_1", "1764000000", []byte("{}"))).To(Equal(want))

	raw := hmac.New(sha256.New, []byte("plain"))
	raw.Write([]byte("msg_1.1.x"))
	g.Expect(SignStandardWebhook([]byte("plain"), "msg_1", "1", []byte("x"))).To(Equal("v1," + base64.StdEncoding.EncodeToString(raw.Sum(nil))))
}

func TestPostClassifiesAnswers(t *testing.T) {
	now := time.Unix(1764000000, 0)
	cases := []struct {
		code       int
		retryAfter string
		wantErr    bool
		permanent  bool
		wait       time.Duration
	}{
		{code: 200}, {code: 204},
		{code: 400, wantErr: true, permanent: true},
		{code: 404, wantErr: true, permanent: true},
		{code: 408, wantErr: true},
		{code: 429, retryAfter: "7", wantErr: true, wait: 7 * time.Second},
		{code: 503, retryAfter: now.Add(30 * time.Second).UTC().Format(http.TimeFormat), wantErr: true, wait: 30 * time.Second},
		{code: 500, wantErr: true},
		// A target cannot park a run for years, nor overflow the wait.
		{code: 503, retryAfter: "99999999", wantErr: true, wait: MaxDelay},
		{code: 429, retryAfter: "99999999999999999999999", wantErr: true, wait: MaxDelay},
		{code: 503, retryAfter: now.Add(90 * 24 * time.Hour).UTC().Format(http.TimeFormat), wantErr: true, wait: MaxDelay},
	}
	for _, tc := range cases {
		t.Run(http.StatusText(tc.code)+" "+tc.retryAfter, func(t *testing.T) {
			g := NewWithT(t)
			var got http.Header
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = r.Header.Clone()
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.code)
			}))
			defer srv.Close()
			a := &kidv1.HTTPAction{URL: srv.URL, Headers: []kidv1.HTTPHeader{{Name: "X-Game", Value: "g"}}}
			out := Post(context.Background(), srv.Client(), a, "kid_1", []byte(`{}`), []byte("s"), now)
			g.Expect(out.Status).To(Equal(tc.code))
			g.Expect(out.Err != nil).To(Equal(tc.wantErr))
			g.Expect(out.Permanent).To(Equal(tc.permanent))
			g.Expect(out.RetryAfter).To(Equal(tc.wait))
			g.Expect(got.Get("webhook-id")).To(Equal("kid_1"))
			g.Expect(got.Get("webhook-timestamp")).To(Equal("1764000000"))
			g.Expect(got.Get("webhook-signature")).To(Equal(SignStandardWebhook([]byte("s"), "kid_1", "1764000000", []byte(`{}`))))
			g.Expect(got.Get("X-Game")).To(Equal("g"))
		})
	}
}

func TestNextDelayGrowsAndHonoursRetryAfter(t *testing.T) {
	g := NewWithT(t)
	for n := int32(1); n <= 25; n++ {
		d := NextDelay(n, 0)
		base := MaxDelay
		if n < 20 {
			base = min(BaseDelay<<(n-1), MaxDelay)
		}
		g.Expect(d).To(BeNumerically(">=", time.Duration(float64(base)*0.8)))
		g.Expect(d).To(BeNumerically("<=", time.Duration(float64(base)*1.2)))
	}
	g.Expect(NextDelay(1, time.Minute)).To(Equal(time.Minute))
	g.Expect(NextDelay(1, 1000*time.Hour)).To(BeNumerically("<=", MaxDelay), "Retry-After is capped at the backoff's maximum")
}

func TestBodyTemplate(t *testing.T) {
	g := NewWithT(t)
	in, err := NewInput(event(), &kidv1.KidUserStatus{SessionID: "s-1"})
	g.Expect(err).NotTo(HaveOccurred())
	b, err := Body(context.Background(), &kidv1.HTTPAction{}, "kid_1", in)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(b)).To(And(ContainSubstring(`"id":"kid_1"`), ContainSubstring(`"type":"Challenge.StateChange"`), ContainSubstring(`"sessionId":"s-1"`)))
	b, err = Body(context.Background(), &kidv1.HTTPAction{BodyTemplate: `{"player":"{{.user.sessionId}}","status":{{json .event.data.status}}}`}, "kid_1", in)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(b)).To(Equal(`{"player":"s-1","status":"PASS"}`))
	_, err = Body(context.Background(), &kidv1.HTTPAction{BodyTemplate: `{{`}, "kid_1", in)
	g.Expect(err).To(HaveOccurred())
}

func TestRenderResource(t *testing.T) {
	g := NewWithT(t)
	in, err := NewInput(event(), &kidv1.KidUserStatus{SessionID: "s-1"})
	g.Expect(err).NotTo(HaveOccurred())
	a := &kidv1.KidAction{ObjectMeta: metav1.ObjectMeta{Name: "erase"}, Spec: kidv1.KidActionSpec{Resource: &kidv1.ResourceAction{Template: apiextensionsv1.JSON{Raw: []byte(
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ignored","namespace":"elsewhere"},"data":{"session":"{{.user.sessionId}}","type":"{{.event.type}}","n":"1"}}`)}}}}
	obj, err := Render(context.Background(), a, event(), in)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(obj.GetName()).To(Equal(ResourceName("erase", event().Name)))
	g.Expect(obj.GetNamespace()).To(Equal("games"), "never another namespace")
	g.Expect(obj.GetLabels()).To(HaveKeyWithValue(EventLabel, event().Name))
	g.Expect(obj.Object["data"]).To(Equal(map[string]any{"session": "s-1", "type": "Challenge.StateChange", "n": "1"}))
	g.Expect(ResourceName("erase", "e1")).To(Equal(ResourceName("erase", "e1")))
	g.Expect(ResourceName("erase", "e1")).NotTo(Equal(ResourceName("erase", "e2")))
	g.Expect(len(ResourceName(strings.Repeat("a", 200), "e"))).To(BeNumerically("<=", 63))
}
