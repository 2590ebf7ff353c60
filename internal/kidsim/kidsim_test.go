package kidsim

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	testingclock "k8s.io/utils/clock/testing"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// recorder answers from a script and records what it was sent.
type recorder struct {
	mu         sync.Mutex
	answers    []int
	timestamps []string
	verified   []bool
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	body := new(bytes.Buffer)
	_, _ = body.ReadFrom(r.Body)
	ts := r.Header.Get(kid.HeaderTimestamp)
	rec.timestamps = append(rec.timestamps, ts)
	rec.verified = append(rec.verified, kid.Sign([]byte("s"), ts, body.Bytes()) == r.Header.Get(kid.HeaderSignature))
	status := 200
	if len(rec.answers) > 0 {
		status, rec.answers = rec.answers[0], rec.answers[1:]
	}
	w.WriteHeader(status)
}

func TestSendRetriesOnKIDsScheduleUntil200(t *testing.T) {
	g := NewWithT(t)
	rec := &recorder{answers: []int{503, 204}}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	clk := testingclock.NewFakeClock(time.Unix(1764000000, 0))
	s := &Sender{URL: srv.URL, Secret: []byte("s"), Schedule: []time.Duration{time.Millisecond, time.Millisecond}, Clock: clk,
		// k-ID's clock moves between attempts; the signed time must follow.
		OnAttempt: func(Attempt) { clk.Step(5 * time.Second) }}
	attempts, err := s.Send(context.Background(), []byte(kid.Examples["test"]))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(attempts).To(HaveLen(3), "a 204 is not success for k-ID: it retries")
	g.Expect([]int{attempts[0].Status, attempts[1].Status, attempts[2].Status}).To(Equal([]int{503, 204, 200}))
	g.Expect(rec.verified).To(Equal([]bool{true, true, true}))
	g.Expect(rec.timestamps[0]).NotTo(Equal(rec.timestamps[1]), "each attempt is signed anew by default")

	rec = &recorder{answers: []int{500, 500, 500}}
	srv2 := httptest.NewServer(rec)
	defer srv2.Close()
	s = &Sender{URL: srv2.URL, Secret: []byte("s"), Schedule: []time.Duration{time.Millisecond, time.Millisecond}, KeepTimestamp: true, Clock: clk,
		OnAttempt: func(Attempt) { clk.Step(5 * time.Second) }}
	attempts, err = s.Send(context.Background(), []byte(kid.Examples["test"]))
	g.Expect(err).To(MatchError(ContainSubstring("not delivered after 3 attempts")))
	g.Expect(attempts).To(HaveLen(3))
	g.Expect(rec.timestamps[0]).To(Equal(rec.timestamps[2]))
	g.Expect(RetrySchedule).To(Equal([]time.Duration{5 * time.Second, 10 * time.Second}))
}

func TestTestButtonSendsOneSignedAndOneUnsigned(t *testing.T) {
	g := NewWithT(t)
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	NewSender(srv.URL, []byte("s")).TestButton(context.Background(), "id-1")
	g.Expect(rec.verified).To(Equal([]bool{true, false}))
}

func TestBuildMakesEveryTypeParseable(t *testing.T) {
	for _, typ := range []string{kid.ChallengeStateChange, kid.VerificationResult, kid.VerificationRevoke, kid.AccountDelete,
		kid.AgeAssuranceResult, kid.ParentalConsentGranted, kid.SessionChangePermissions, kid.SessionDelete, kid.TestEvent} {
		g := NewWithT(t)
		body, err := Build(typ, Fields{SessionID: "s", ChallengeID: "c", KUID: "k", VerificationIDs: []string{"v"}})
		g.Expect(err).NotTo(HaveOccurred())
		env, err := kid.ParseEnvelope(body)
		g.Expect(err).NotTo(HaveOccurred(), typ)
		g.Expect(env.EventType).To(Equal(typ))
	}
	_, err := Build("Nope", Fields{})
	NewWithT(t).Expect(err).To(HaveOccurred())
}

func TestTargetChecksTheSignature(t *testing.T) {
	g := NewWithT(t)
	var out bytes.Buffer
	srv := httptest.NewServer(&Target{Secret: []byte("whsec_c2VjcmV0"), Out: &out})
	defer srv.Close()
	post := func(sig string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("{}"))
		req.Header.Set("webhook-id", "kid_1")
		req.Header.Set("webhook-timestamp", "1")
		req.Header.Set("webhook-signature", sig)
		resp, err := http.DefaultClient.Do(req)
		g.Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
	}
	post(actions.SignStandardWebhook([]byte("whsec_c2VjcmV0"), "kid_1", "1", []byte("{}")))
	post("v1,AAAA")
	g.Expect(out.String()).To(And(ContainSubstring("signature ok"), ContainSubstring("signature INVALID")))
}

func TestTargetCountsEachWebhookIDAndTakesARepeatOnceWithDedupe(t *testing.T) {
	g := NewWithT(t)
	var out bytes.Buffer
	failing := &Target{Status: http.StatusServiceUnavailable}
	dedupe := &Target{Dedupe: true, Out: &out}
	post := func(url, id string) int {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("{}"))
		req.Header.Set("webhook-id", id)
		resp, err := http.DefaultClient.Do(req)
		g.Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		return resp.StatusCode
	}
	f, d := httptest.NewServer(failing), httptest.NewServer(dedupe)
	defer f.Close()
	defer d.Close()

	g.Expect(post(f.URL, "kid_1")).To(Equal(http.StatusServiceUnavailable))
	g.Expect(failing.Taken()).To(BeEmpty(), "a failed delivery is not taken")

	g.Expect(post(d.URL, "kid_1")).To(Equal(http.StatusOK))
	g.Expect(post(d.URL, "kid_2")).To(Equal(http.StatusOK))
	g.Expect(post(d.URL, "kid_1")).To(Equal(http.StatusOK), "a repeat is answered 200, so the sender stops")
	g.Expect(dedupe.Taken()).To(Equal(map[string]int{"kid_1": 2, "kid_2": 1}))
	g.Expect(strings.Count(out.String(), "repeat (not taken again)")).To(Equal(1))
}

func TestTargetPrintsCloudEventsInBothModes(t *testing.T) {
	g := NewWithT(t)
	var out bytes.Buffer
	srv := httptest.NewServer(&Target{Out: &out})
	defer srv.Close()
	e := &kidv1.KidEvent{
		ObjectMeta: metav1.ObjectMeta{Name: "demo-challenge-1", Namespace: "games"},
		Spec:       kidv1.KidEventSpec{ProductRef: kidv1.LocalObjectReference{Name: "demo"}, EventType: kid.ChallengeStateChange, ReceivedAt: metav1.Now()},
	}
	in, err := actions.NewInput(e, &kidv1.KidUserStatus{Consent: kidv1.ConsentStatus{State: kidv1.ConsentGranted}})
	g.Expect(err).NotTo(HaveOccurred())
	in.UserName = "demo-session-s-1"
	for _, mode := range []kidv1.CloudEventContentMode{kidv1.ContentModeBinary, kidv1.ContentModeStructured} {
		out.Reset()
		a := &kidv1.KidAction{Spec: kidv1.KidActionSpec{CloudEvent: &kidv1.CloudEventAction{Sink: kidv1.Destination{URI: srv.URL}, ContentMode: mode}}}
		g.Expect(actions.DeliverCloudEvent(context.Background(), srv.Client(), nil, a, e, "kid_1", in, nil, time.Now()).Err).NotTo(HaveOccurred())
		g.Expect(out.String()).To(And(
			ContainSubstring("CloudEvent, "+strings.ToLower(string(mode))+" mode"),
			ContainSubstring("type: dev.kid.Challenge.StateChange"),
			ContainSubstring("source: /apis/kid.dev/v1alpha1/namespaces/games/kidproducts/demo"),
			ContainSubstring("subject: demo-session-s-1"),
			ContainSubstring("kidconsent: Granted"),
			ContainSubstring(`"name": "demo-challenge-1"`),
		), string(mode))
	}
	out.Reset()
	resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{"plain":true}`))
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	g.Expect(out.String()).To(And(ContainSubstring(`{"plain":true}`), Not(ContainSubstring("CloudEvent"))))
}
