package webhookserver_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
	"github.com/kid-operator/kid-operator/webhookserver"
)

func events(ns string) []kidv1.KidEvent {
	var list kidv1.KidEventList
	ExpectWithOffset(1, h.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	return list.Items
}

func now() string { return strconv.FormatInt(time.Now().Unix(), 10) }

// deliver sends one attempt, signed as k-ID signs, and returns the answer.
func deliver(p *testenv.Product, body, timestamp string) kidsim.Attempt {
	return p.Sender().Deliver(ctx, []byte(body), timestamp, kid.Sign)
}

var _ = Describe("Receiving k-ID's deliveries", func() {
	var (
		ns string
		p  *testenv.Product
	)
	BeforeEach(func() { ns, p = readyProduct(h) })

	It("stores every example payload of k-ID's docs as exactly one KidEvent, and answers 200", func() {
		for _, name := range slices.Sorted(maps.Keys(kid.Examples)) {
			body := kid.Examples[name]
			a := deliver(p, body, now())
			Expect(a.Status).To(Equal(http.StatusOK), "%s: %s", name, a)
		}
		stored := events(ns)
		Expect(stored).To(HaveLen(len(kid.Examples)), "one object per example")

		byBodyHash := map[string]kidv1.KidEvent{}
		for _, e := range stored {
			byBodyHash[e.Spec.BodySHA256] = e
		}
		for name, body := range kid.Examples {
			env, err := kid.ParseEnvelope([]byte(body))
			Expect(err).NotTo(HaveOccurred())
			e, ok := byBodyHash[storedDigest(env, body)]
			Expect(ok).To(BeTrue(), name)
			want := env.Subject()
			Expect(e.Spec.EventType).To(Equal(env.EventType), name)
			Expect(e.Spec.Subject).To(Equal(kidv1.EventSubject{SessionID: want.SessionID, ChallengeID: want.ChallengeID, VerificationIDs: want.VerificationIDs, KUID: want.KUID}), name)
			Expect(e.Labels).To(HaveKeyWithValue(kidv1.ProductLabel, "demo"), name)
			Expect(e.Labels).To(HaveKeyWithValue(kidv1.EventTypeLabel, env.EventType), name)
			if want.SessionID != "" {
				Expect(e.Labels).To(HaveKeyWithValue(kidv1.SessionLabel, want.SessionID), name)
			}
			Expect(string(e.Spec.Data.Raw)).NotTo(ContainSubstring("parent@example.com"), name)
			Expect(string(e.Spec.Data.Raw)).NotTo(MatchRegexp(`"dob"`), name)
			Expect(e.Spec.Source).To(Equal(kidv1.SourceWebhook))
			Expect(e.OwnerReferences).To(ConsistOf(HaveField("Name", "demo")))
		}
	})

	It("keeps personal data when the product's privacy settings allow it", func() {
		keep, err := h.NewProduct(ctx, ns, "keeps", func(p *kidv1.KidProduct) {
			p.Spec.Privacy = kidv1.PrivacySpec{StoreApproverEmail: true, StoreDateOfBirth: true}
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(h.WaitReady(ctx, keep)).To(Succeed())
		Expect(deliver(keep, kid.Examples["challenge-pass"], now()).Status).To(Equal(200))
		var list kidv1.KidEventList
		Expect(h.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{kidv1.ProductLabel: "keeps"})).To(Succeed())
		Expect(list.Items).To(HaveLen(1))
		Expect(string(list.Items[0].Spec.Data.Raw)).To(And(ContainSubstring("parent@example.com"), ContainSubstring("2011-07-12")))
		Expect(list.Items[0].Spec.PersonalData).To(BeTrue())
	})

	It("makes one KidEvent of a delivery retried with three timestamps, and two of IN_PROGRESS then PASS", func() {
		base := time.Now()
		for _, offset := range []time.Duration{0, 5 * time.Second, 15 * time.Second} {
			ts := strconv.FormatInt(base.Add(offset).Unix(), 10)
			Expect(deliver(p, kid.Examples["challenge-in-progress"], ts).Status).To(Equal(200))
		}
		Expect(events(ns)).To(HaveLen(1))
		Expect(deliver(p, kid.Examples["challenge-pass"], now()).Status).To(Equal(200))
		Expect(events(ns)).To(HaveLen(2))
	})

	It("makes two KidEvents of two permission changes for one session a minute apart, and one of their retries", func() {
		body := kid.Examples["change-permissions"]
		first := time.Now().Truncate(kid.NotificationWindow).Add(-2 * kid.NotificationWindow)
		for _, at := range []time.Time{first, first.Add(10 * time.Second), first.Add(kid.NotificationWindow)} {
			Expect(deliver(p, body, strconv.FormatInt(at.Unix(), 10)).Status).To(Equal(200))
		}
		Expect(events(ns)).To(HaveLen(2))
	})

	DescribeTable("answers every other request without writing anything",
		func(send func(p *testenv.Product) *http.Response, want int) {
			resp := send(p)
			defer resp.Body.Close()
			Expect(resp.StatusCode).To(Equal(want))
			if want == http.StatusServiceUnavailable {
				Expect(resp.Header.Get("Retry-After")).To(Equal(webhookserver.RetryAfterSeconds))
			}
			Consistently(func() []kidv1.KidEvent { return events(p.Namespace) }, "300ms", "50ms").Should(BeEmpty())
		},
		Entry("GET: 405", func(p *testenv.Product) *http.Response {
			return do(http.MethodGet, p.URL, "", nil)
		}, http.StatusMethodNotAllowed),
		Entry("unknown product: 404", func(p *testenv.Product) *http.Response {
			return signed(p, strings.Replace(p.URL, "/demo", "/nope", 1), kid.Examples["test"], now())
		}, http.StatusNotFound),
		Entry("body over 64 KiB: 413", func(p *testenv.Product) *http.Response {
			body := `{"eventType":"Test","data":{"pad":"` + strings.Repeat("x", webhookserver.DefaultMaxBodyBytes) + `"}}`
			return signed(p, p.URL, body, now())
		}, http.StatusRequestEntityTooLarge),
		Entry("no signature headers: 401", func(p *testenv.Product) *http.Response {
			return do(http.MethodPost, p.URL, kid.Examples["test"], nil)
		}, http.StatusUnauthorized),
		Entry("malformed signature: 401", func(p *testenv.Product) *http.Response {
			return do(http.MethodPost, p.URL, kid.Examples["test"], map[string]string{kid.HeaderTimestamp: now(), kid.HeaderSignature: "not-hex"})
		}, http.StatusUnauthorized),
		Entry("wrong secret: 401", func(p *testenv.Product) *http.Response {
			ts := now()
			return do(http.MethodPost, p.URL, kid.Examples["test"], map[string]string{kid.HeaderTimestamp: ts, kid.HeaderSignature: kid.Sign([]byte("guess"), ts, []byte(kid.Examples["test"]))})
		}, http.StatusUnauthorized),
		Entry("timestamp six minutes old: 401", func(p *testenv.Product) *http.Response {
			return signed(p, p.URL, kid.Examples["test"], strconv.FormatInt(time.Now().Add(-6*time.Minute).Unix(), 10))
		}, http.StatusUnauthorized),
		Entry("timestamp six minutes ahead: 401", func(p *testenv.Product) *http.Response {
			return signed(p, p.URL, kid.Examples["test"], strconv.FormatInt(time.Now().Add(6*time.Minute).Unix(), 10))
		}, http.StatusUnauthorized),
		Entry("signed, not JSON: 400", func(p *testenv.Product) *http.Response {
			return signed(p, p.URL, "eventType=Test", now())
		}, http.StatusBadRequest),
		Entry("signed, no eventType: 400", func(p *testenv.Product) *http.Response {
			return signed(p, p.URL, `{"data":{"id":"x"}}`, now())
		}, http.StatusBadRequest),
		Entry("signed, no data: 400", func(p *testenv.Product) *http.Response {
			return signed(p, p.URL, `{"eventType":"Test"}`, now())
		}, http.StatusBadRequest),
	)

	It("answers 503 while the product has no usable secret, and accepts once it has", func() {
		Expect(h.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "demo-webhook", Namespace: ns}})).To(Succeed())
		Eventually(func(g Gomega) {
			got := &kidv1.KidProduct{}
			g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(p.KidProduct), got)).To(Succeed())
			g.Expect(got.Status.Conditions).To(ContainElement(And(HaveField("Type", kidv1.ReadyCondition), HaveField("Reason", kidv1.SecretNotFoundReason))))
		}).Should(Succeed())

		// k-ID's schedule, shortened: the first attempt meets no secret, the
		// retry meets the restored one.
		s := p.Sender()
		s.Schedule = []time.Duration{2 * time.Second, 2 * time.Second}
		s.OnAttempt = func(a kidsim.Attempt) {
			if a.Number == 1 {
				Expect(a.Status).To(Equal(http.StatusServiceUnavailable))
				Expect(events(ns)).To(BeEmpty())
				Expect(h.Client.Create(ctx, &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Name: "demo-webhook", Namespace: ns, Labels: kidv1.SecretLabels()},
					StringData: map[string]string{"current": p.Secret},
				})).To(Succeed())
			}
		}
		attempts, err := s.Send(ctx, []byte(kid.Examples["test"]))
		Expect(err).NotTo(HaveOccurred())
		Expect(attempts[len(attempts)-1].Status).To(Equal(http.StatusOK))
		Expect(events(ns)).To(HaveLen(1))
	})

	It("accepts a rotated secret under either key", func() {
		secret := &corev1.Secret{}
		Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "demo-webhook"}, secret)).To(Succeed())
		secret.Data["next"] = []byte("the-new-secret")
		Expect(h.Client.Update(ctx, secret)).To(Succeed())
		rotated := *p
		rotated.Secret = "the-new-secret"
		Eventually(func() int { return deliver(&rotated, kid.Examples["test"], now()).Status }).Should(Equal(200))
		Expect(deliver(p, kid.Examples["session-delete"], now()).Status).To(Equal(200))
	})

	It("passes Compliance Studio's Test Webhook button: 200 then 401", func() {
		got := p.Sender().TestButton(ctx, "12345678-1234-1234-1234-123456789abc")
		Expect(got[0].Status).To(Equal(200))
		Expect(got[1].Status).To(Equal(401))
		Expect(events(ns)).To(HaveLen(1))
		Eventually(func(g Gomega) {
			got := &kidv1.KidProduct{}
			g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(p.KidProduct), got)).To(Succeed())
			g.Expect(got.Status.LastTestEventTime).NotTo(BeNil())
		}).Should(Succeed())
	})
})

var _ = Describe("When the API server is down", Ordered, func() {
	It("answers 503 within a bounded time, and 200 to the same delivery once it is back", func() {
		ns, p := readyProduct(h)

		// Stop returns an error when the API server had to be killed after
		// its stop timeout; either way it is down.
		_ = h.Env.ControlPlane.APIServer.Stop()
		ts := now()
		a := deliver(p, kid.Examples["challenge-pass"], ts)
		Expect(a.Status).To(Equal(http.StatusServiceUnavailable), a.String())
		Expect(a.Duration).To(BeNumerically("<", 5*time.Second))

		Expect(h.Env.ControlPlane.APIServer.Start()).To(Succeed())
		Eventually(func() int { return deliver(p, kid.Examples["challenge-pass"], ts).Status }, "30s", "500ms").Should(Equal(http.StatusOK))
		Expect(events(ns)).To(HaveLen(1))
	})
})

// storedDigest is the bodySHA256 of body delivered to a product that keeps
// no personal data: of the body, or, when its data lost a field to the
// privacy settings, of what is stored, so that it gives none of it back.
func storedDigest(env *kid.Envelope, body string) string {
	GinkgoHelper()
	data, _, err := kid.Redact(env.Data, kid.Privacy{})
	Expect(err).NotTo(HaveOccurred())
	if string(data) == string(env.Data) {
		return sha256Hex(body)
	}
	var kept any
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.UseNumber()
	Expect(dec.Decode(&kept)).To(Succeed())
	stored, err := json.Marshal(map[string]any{"eventType": env.EventType, "data": kept})
	Expect(err).NotTo(HaveOccurred())
	return sha256Hex(string(stored))
}
