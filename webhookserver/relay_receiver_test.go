package webhookserver_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/test/testenv"
	"github.com/kid-operator/kid-operator/webhookserver"
	"github.com/kid-operator/kid-operator/webhookserver/relaytoken"
)

const (
	pageOrigin  = "https://play.example.com"
	relayKey    = "relay-key-of-the-game"
	challengeID = "a04467a0-83de-40ca-8572-8cc761e896aa"
	sessionID   = "f1af4704-74b4-4966-b13a-18eb16bccf9c"
	verifyID    = "4e57301e-a4d1-498f-ac3f-f3d4de19abf6"

	domChallenge = `{"eventType":"Widget.AgeGate.Challenge","data":{"status":"PENDING","challengeId":"` + challengeID + `"}}`
	domVerified  = `{"eventType":"Verification.Result","data":{"verificationId":"` + verifyID + `","status":"PASS","method":"id-document","provider":"veratad","age":{"low":43,"high":43},"ageCategory":"adult","dob":"1981-06-20"}}`
)

// browserProduct makes the product "demo" in ns with spec.browser (burst 3
// at one a second, mutate adjusting it) and its token Secret, and waits
// until it is Ready (so the receiver's cache has it).
func browserProduct(ns string, mutate func(*kidv1.BrowserSpec)) *testenv.Product {
	GinkgoHelper()
	Expect(h.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "demo-relay", Namespace: ns, Labels: kidv1.SecretLabels()},
		StringData: map[string]string{"current": relayKey},
	})).To(Succeed())
	p, err := h.NewProduct(ctx, ns, "demo", func(p *kidv1.KidProduct) {
		p.Spec.Browser = &kidv1.BrowserSpec{
			AllowedOrigins:    []string{pageOrigin},
			TokenSecretRef:    kidv1.LocalObjectReference{Name: "demo-relay"},
			RequestsPerSecond: ptr.To[int32](1),
			Burst:             ptr.To[int32](3),
		}
		if mutate != nil {
			mutate(p.Spec.Browser)
		}
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(h.WaitReady(ctx, p)).To(Succeed())
	return p
}

func relayURL(ns string) string { return h.BaseURL + "/browser/" + ns + "/demo" }

// mint returns a relay token for ns/demo, valid for ttl.
func mint(ns, kind, id string, ttl time.Duration) string {
	GinkgoHelper()
	tok, err := relaytoken.Mint([]byte(relayKey), ns+"/demo", relaytoken.Subject{Kind: kind, ID: id}, time.Now().Add(ttl))
	Expect(err).NotTo(HaveOccurred())
	return tok
}

// relayTo posts body as a page of origin would ("" for no Origin), with
// the bearer token tok ("" for none).
func relayTo(url, origin, tok, body string) *http.Response {
	GinkgoHelper()
	headers := map[string]string{"Content-Type": "application/json"}
	if origin != "" {
		headers["Origin"] = origin
	}
	if tok != "" {
		headers["Authorization"] = "Bearer " + tok
	}
	resp := do(http.MethodPost, url, body, headers)
	DeferCleanup(resp.Body.Close)
	return resp
}

var _ = Describe("Relaying k-ID's widget events from a game's page", func() {
	var ns string
	BeforeEach(func() {
		var err error
		ns, err = h.NewNamespace(ctx)
		Expect(err).NotTo(HaveOccurred())
		browserProduct(ns, nil)
	})

	It("stores a relayed event as a browser KidEvent of the token's subject, without the date of birth, once however often it is relayed", func() {
		tok := mint(ns, relaytoken.KindVerification, verifyID, time.Hour)
		for range 2 {
			resp := relayTo(relayURL(ns), pageOrigin, tok, domVerified)
			body, _ := io.ReadAll(resp.Body)
			Expect(resp.StatusCode).To(Equal(http.StatusOK), string(body))
			Expect(string(body)).To(MatchJSON(`{"stored":true}`))
			Expect(resp.Header.Get("Access-Control-Allow-Origin")).To(Equal(pageOrigin))
		}
		stored := events(ns)
		Expect(stored).To(HaveLen(1))
		e := stored[0]
		Expect(e.Name).To(HavePrefix("demo-verification-result-"))
		Expect(e.Spec.Source).To(Equal(kidv1.SourceBrowser))
		Expect(e.Spec.Subject).To(Equal(kidv1.EventSubject{VerificationIDs: []string{verifyID}}))
		Expect(e.Spec.SignedAt).To(BeNil())
		// Of what is stored: the body held the date of birth.
		Expect(e.Spec.BodySHA256).To(Equal(sha256Hex(`{"data":{"age":{"high":43,"low":43},"ageCategory":"adult","method":"id-document","provider":"veratad","status":"PASS","verificationId":"` + verifyID + `"},"eventType":"Verification.Result"}`)))
		Expect(string(e.Spec.Data.Raw)).NotTo(Or(ContainSubstring(`"dob"`), ContainSubstring("1981-06-20")))
		Expect(string(e.Spec.Data.Raw)).To(ContainSubstring(`"provider":"veratad"`))
		Expect(e.Labels).To(HaveKeyWithValue(kidv1.ProductLabel, "demo"))
		Expect(e.Labels).To(HaveKeyWithValue(kidv1.EventTypeLabel, "Verification.Result"))
		Expect(e.OwnerReferences).To(ConsistOf(HaveField("Name", "demo")))

		// The receiver never folds: the controllers mark a browser event
		// Ignored (a hint), and no KidUser takes its status from it.
		Eventually(func() kidv1.EventPhase {
			return events(ns)[0].Status.Phase
		}).Should(Equal(kidv1.EventIgnored))
		var users kidv1.KidUserList
		Expect(h.Client.List(ctx, &users)).To(Succeed())
		for _, u := range users.Items {
			if u.Namespace == ns {
				Expect(u.Status.Verification.State).NotTo(Equal(kidv1.VerificationVerified))
			}
		}
	})

	It("answers a preflight from an allowed origin with the grant, and one from any other with 403 and none", func() {
		resp := do(http.MethodOptions, relayURL(ns), "", map[string]string{
			"Origin": pageOrigin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type",
		})
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusNoContent))
		Expect(resp.Header.Get("Access-Control-Allow-Origin")).To(Equal(pageOrigin))
		Expect(resp.Header.Get("Access-Control-Allow-Methods")).To(Equal("POST"))
		Expect(resp.Header.Get("Access-Control-Allow-Headers")).To(Equal("Authorization, Content-Type"))
		Expect(resp.Header.Get("Access-Control-Max-Age")).To(Equal("600"))
		Expect(resp.Header.Values("Vary")).To(ContainElement("Origin"))

		resp = do(http.MethodOptions, relayURL(ns), "", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusForbidden))
		Expect(resp.Header).NotTo(HaveKey("Access-Control-Allow-Origin"))
	})

	It("answers 429 with Retry-After past the product's burst, and stores only what it accepted; a request without a valid token is 401 and spends none of it", func() {
		tok := mint(ns, relaytoken.KindSession, sessionID, time.Hour)
		ok, limited := 0, 0
		for i := range 3 + 5 {
			body := `{"eventType":"Widget.ExitReview","data":{"n":` + strconv.Itoa(i) + `}}`
			resp := relayTo(relayURL(ns), pageOrigin, tok, body)
			switch resp.StatusCode {
			case http.StatusOK:
				ok++
			case http.StatusTooManyRequests:
				limited++
				Expect(resp.Header.Get("Retry-After")).To(MatchRegexp(`^[1-9][0-9]*$`))
			default:
				Fail("unexpected " + resp.Status)
			}
		}
		// Three at once, and at most one more refilled meanwhile.
		Expect(ok).To(BeNumerically(">=", 3))
		Expect(limited).To(BeNumerically(">=", 4))
		Expect(events(ns)).To(HaveLen(ok))
		Expect(relayTo(relayURL(ns), pageOrigin, "junk", domChallenge).StatusCode).To(Equal(http.StatusUnauthorized))
	})

	DescribeTable("refuses, storing nothing",
		func(send func(ns string) *http.Response, want int, cors bool) {
			resp := send(ns)
			body, _ := io.ReadAll(resp.Body)
			Expect(resp.StatusCode).To(Equal(want), string(body))
			var answer map[string]any
			Expect(json.Unmarshal(body, &answer)).To(Succeed())
			Expect(answer).To(HaveKeyWithValue("stored", false))
			if cors {
				Expect(resp.Header.Get("Access-Control-Allow-Origin")).To(Equal(pageOrigin))
			} else {
				Expect(resp.Header).NotTo(HaveKey("Access-Control-Allow-Origin"))
			}
			Consistently(func() []kidv1.KidEvent { return events(ns) }, "300ms", "50ms").Should(BeEmpty())
		},
		Entry("no token: 401", func(ns string) *http.Response {
			return relayTo(relayURL(ns), pageOrigin, "", domChallenge)
		}, http.StatusUnauthorized, true),
		Entry("a token signed with another key: 401", func(ns string) *http.Response {
			tok, err := relaytoken.Mint([]byte("guess"), ns+"/demo", relaytoken.Subject{Kind: relaytoken.KindChallenge, ID: challengeID}, time.Now().Add(time.Hour))
			Expect(err).NotTo(HaveOccurred())
			return relayTo(relayURL(ns), pageOrigin, tok, domChallenge)
		}, http.StatusUnauthorized, true),
		Entry("an expired token: 401", func(ns string) *http.Response {
			tok := mint(ns, relaytoken.KindChallenge, challengeID, time.Second)
			exp, _ := relaytoken.VerifyClaims([][]byte{[]byte(relayKey)}, tok, ns+"/demo", time.Now())
			time.Sleep(time.Until(exp.Expires) + 10*time.Millisecond)
			return relayTo(relayURL(ns), pageOrigin, tok, domChallenge)
		}, http.StatusUnauthorized, true),
		Entry("a token of another product: 401", func(ns string) *http.Response {
			tok, err := relaytoken.Mint([]byte(relayKey), ns+"/other", relaytoken.Subject{Kind: relaytoken.KindChallenge, ID: challengeID}, time.Now().Add(time.Hour))
			Expect(err).NotTo(HaveOccurred())
			return relayTo(relayURL(ns), pageOrigin, tok, domChallenge)
		}, http.StatusUnauthorized, true),
		Entry("an origin not allowed: 403, no CORS grant", func(ns string) *http.Response {
			return relayTo(relayURL(ns), "https://evil.example", mint(ns, relaytoken.KindChallenge, challengeID, time.Hour), domChallenge)
		}, http.StatusForbidden, false),
		Entry("no Origin (not a browser): 403", func(ns string) *http.Response {
			return relayTo(relayURL(ns), "", mint(ns, relaytoken.KindChallenge, challengeID, time.Hour), domChallenge)
		}, http.StatusForbidden, false),
		Entry("another player's challenge: 403", func(ns string) *http.Response {
			return relayTo(relayURL(ns), pageOrigin, mint(ns, relaytoken.KindChallenge, "someone-else", time.Hour), domChallenge)
		}, http.StatusForbidden, true),
		Entry("a webhook event type: 400", func(ns string) *http.Response {
			return relayTo(relayURL(ns), pageOrigin, mint(ns, relaytoken.KindChallenge, challengeID, time.Hour),
				`{"eventType":"Challenge.StateChange","data":{"id":"`+challengeID+`","status":"PASS","sessionId":"s"}}`)
		}, http.StatusBadRequest, true),
		Entry("a body over 8 KiB: 413", func(ns string) *http.Response {
			return relayTo(relayURL(ns), pageOrigin, mint(ns, relaytoken.KindChallenge, challengeID, time.Hour),
				`{"eventType":"Widget.ExitReview","data":{"pad":"`+strings.Repeat("x", webhookserver.RelayMaxBodyBytes)+`"}}`)
		}, http.StatusRequestEntityTooLarge, true),
		Entry("a product without spec.browser: 404", func(ns string) *http.Response {
			p, err := h.NewProduct(ctx, ns, "plain", nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(h.WaitReady(ctx, p)).To(Succeed())
			tok, err := relaytoken.Mint([]byte(relayKey), ns+"/plain", relaytoken.Subject{Kind: relaytoken.KindChallenge, ID: challengeID}, time.Now().Add(time.Hour))
			Expect(err).NotTo(HaveOccurred())
			return relayTo(h.BaseURL+"/browser/"+ns+"/plain", pageOrigin, tok, domChallenge)
		}, http.StatusNotFound, false),
	)
})
