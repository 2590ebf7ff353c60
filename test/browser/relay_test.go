package browser_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/cmd/localrun/browserdemo"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
	"github.com/kid-operator/kid-operator/webhookserver/relaytoken"
)

const (
	apiKey   = "api-key-of-the-browser-tests"
	relayKey = "relay-key-of-the-browser-tests"
)

// scenario is one player's page of a game, with everything behind it: a
// namespace, a fake k-ID that delivers to the product's webhook URL and
// serves the widget, and a product "demo" whose spec.api points at the fake
// and whose spec.browser allows the page's origin.
type scenario struct {
	ns      string
	fake    *widgetFake
	product *testenv.Product
	page    *page
	// player is what the next load of the page shows.
	player browserdemo.Player
}

type scenarioOptions struct {
	// allowPage, when false, leaves the page's origin out of the product's
	// allowed origins (another origin is allowed instead).
	allowPage bool
	// browser adjusts the product's spec.browser.
	browser func(*kidv1.BrowserSpec)
}

func newScenario(o scenarioOptions) *scenario {
	GinkgoHelper()
	s := &scenario{}
	var err error
	s.ns, err = h.NewNamespace(ctx)
	Expect(err).NotTo(HaveOccurred())
	s.fake = newWidgetFake(kidsim.FakeOptions{
		APIKey: apiKey, ProductID: 11472,
		WebhookURL: h.WebhookURL(s.ns, "demo"), WebhookSecret: []byte(h.WebhookSecret(s.ns, "demo")),
	})
	s.page = newPage(s.ns, "demo", browserdemo.Config{
		WidgetOrigins: []string{s.fake.Origin},
		Start: func(context.Context, *http.Request) (browserdemo.Player, error) {
			return s.player, nil
		},
	})
	allowed := s.page.URL
	if !o.allowPage {
		allowed = "https://play.example.com"
	}
	Expect(h.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "demo-api", Namespace: s.ns, Labels: kidv1.SecretLabels()},
		StringData: map[string]string{"key": apiKey},
	})).To(Succeed())
	Expect(h.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "demo-relay", Namespace: s.ns, Labels: kidv1.SecretLabels()},
		StringData: map[string]string{"current": relayKey},
	})).To(Succeed())
	rps := int32(50)
	s.product, err = h.NewProduct(ctx, s.ns, "demo", func(p *kidv1.KidProduct) {
		p.Spec.API = &kidv1.APISpec{
			SecretRef:         kidv1.SecretKeySelector{Name: "demo-api", Key: "key"},
			BaseURL:           s.fake.Origin + "/api/v1",
			RequestsPerSecond: &rps,
		}
		p.Spec.Browser = &kidv1.BrowserSpec{
			AllowedOrigins: []string{allowed},
			TokenSecretRef: kidv1.LocalObjectReference{Name: "demo-relay"},
		}
		if o.browser != nil {
			o.browser(p.Spec.Browser)
		}
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(h.WaitReady(ctx, s.product)).To(Succeed())
	return s
}

// token mints a relay token for a challenge, valid for ttl.
func (s *scenario) token(challenge string, ttl time.Duration) string {
	GinkgoHelper()
	token, err := relaytoken.Mint([]byte(relayKey), s.ns+"/demo",
		relaytoken.Subject{Kind: relaytoken.KindChallenge, ID: challenge}, h.Clock.Now().Add(ttl))
	Expect(err).NotTo(HaveOccurred())
	return token
}

// openFor opens the page for a challenge, with a token and the widget of
// the given origin.
func (s *scenario) openFor(challenge, token, widgetOrigin string) {
	GinkgoHelper()
	s.player = browserdemo.Player{ChallengeID: challenge, Token: token, WidgetURL: kidsim.WidgetURL(widgetOrigin, challenge, "")}
	s.page.open()
}

// browserEvents lists the namespace's KidEvents relayed from a browser.
func (s *scenario) eventsFrom(source kidv1.EventSource) []kidv1.KidEvent {
	GinkgoHelper()
	var list kidv1.KidEventList
	Expect(h.Client.List(ctx, &list, client.InNamespace(s.ns))).To(Succeed())
	var out []kidv1.KidEvent
	for _, e := range list.Items {
		if e.Spec.Source == source {
			out = append(out, e)
		}
	}
	return out
}

func (s *scenario) allEvents() []kidv1.KidEvent {
	GinkgoHelper()
	var list kidv1.KidEventList
	Expect(h.Client.List(ctx, &list, client.InNamespace(s.ns))).To(Succeed())
	return list.Items
}

func (s *scenario) users() []kidv1.KidUser {
	GinkgoHelper()
	var list kidv1.KidUserList
	Expect(h.Client.List(ctx, &list, client.InNamespace(s.ns))).To(Succeed())
	return list.Items
}

// sessionUser waits until the session's KidUser satisfies check.
func (s *scenario) sessionUser(session string, check func(Gomega, *kidv1.KidUser)) {
	GinkgoHelper()
	key := client.ObjectKey{Namespace: s.ns, Name: kidv1.UserName("demo", kidv1.IdentitySession, session)}
	Eventually(func(g Gomega) {
		u := &kidv1.KidUser{}
		g.Expect(h.Client.Get(ctx, key, u)).To(Succeed())
		check(g, u)
	}).WithTimeout(30 * time.Second).Should(Succeed())
}

// relayStatuses returns the statuses of the page's kid:relay events.
func (p *page) relayStatuses() []int {
	GinkgoHelper()
	var out []int
	for _, r := range p.relays() {
		out = append(out, int(r["status"].(float64)))
	}
	return out
}

// fetchFromPage relays a message from the page with fetch, as the module
// does, with the given Authorization header ("" for none), and returns the
// answer's status (0 when the browser refused it: CORS) and Retry-After.
func (p *page) fetchFromPage(authorization string, messages ...string) []map[string]any {
	GinkgoHelper()
	got, err := evalOn(p, `(async () => {
		const cfg = JSON.parse(document.getElementById('config').textContent);
		const headers = {'Content-Type': 'application/json'};
		const authorization = `+jsonOf(authorization)+`;
		if (authorization) headers.Authorization = authorization;
		return Promise.all(`+jsonOf(messages)+`.map((body) =>
			fetch(cfg.relayURL, {method: 'POST', headers, body, mode: 'cors'})
				.then((r) => ({status: r.status, retryAfter: r.headers.get('Retry-After')}), (e) => ({status: 0, error: String(e)}))));
	})()`)
	Expect(err).NotTo(HaveOccurred())
	var out []map[string]any
	for _, r := range got.([]any) {
		out = append(out, r.(map[string]any))
	}
	return out
}

var _ = Describe("DOM events relayed from a page, confirmed at k-ID", func() {
	It("grants a player from the widget's PASS when every webhook is lost, and the page shows it live", func() {
		s := newScenario(scenarioOptions{allowPage: true})
		s.fake.SetDeliveryFault(kidsim.FaultDrop)
		challenge := s.fake.StartChallenge()
		session, err := s.fake.ApproveChallenge(challenge, kidsim.Approval{})
		Expect(err).NotTo(HaveOccurred())

		s.openFor(challenge, s.token(challenge, time.Hour), s.fake.Origin)
		Eventually(func() string { return s.page.statusText("consent") }).Should(Equal("None"),
			"the live status starts from what the cluster knows: nothing")

		s.page.click("post-result")
		Eventually(s.page.logged).Should(ContainElement("kid:Widget.AgeGate.Result"))
		Expect(s.page.events()).To(ConsistOf(map[string]any{"eventType": "Widget.AgeGate.Result",
			"data": map[string]any{"status": "PASS", "challengeId": challenge, "sessionId": session}}))
		Eventually(s.page.relayStatuses).Should(Equal([]int{http.StatusOK}))

		By("the relayed event is stored as a hint, about the token's challenge")
		Eventually(func(g Gomega) {
			relayed := s.eventsFrom(kidv1.SourceBrowser)
			g.Expect(relayed).To(HaveLen(1))
			g.Expect(relayed[0].Spec.EventType).To(Equal("Widget.AgeGate.Result"))
			g.Expect(relayed[0].Spec.Subject.ChallengeID).To(Equal(challenge))
		}).Should(Succeed())

		By("the operator asks k-ID, which answers PASS: the player is Granted")
		s.sessionUser(session, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentGranted))
			g.Expect(u.Status.Consent.ChallengeID).To(Equal(challenge))
		})
		Expect(s.eventsFrom(kidv1.SourcePoll)).To(ContainElement(HaveField("Spec.EventType", "Challenge.StateChange")),
			"the grant comes from k-ID's answer, stored as a poll")

		By("the page's live status shows it")
		Eventually(func() string { return s.page.statusText("consent") }).WithTimeout(30 * time.Second).Should(Equal("Granted"))
		Eventually(func() string { return s.page.statusText("final") }).Should(Equal("true"))
		Expect(s.page.statusText("session")).To(Equal("Active"))

		By("no webhook reached the receiver at all")
		Expect(s.eventsFrom(kidv1.SourceWebhook)).To(BeEmpty())
		Expect(s.fake.Deliveries()).NotTo(BeEmpty())
		for _, d := range s.fake.Deliveries() {
			Expect(d.Fault).To(Equal(kidsim.FaultDrop))
			Expect(d.Status).To(BeZero())
		}

		writeScreenshot(s.page, "dom-events-demo.png")
	})

	It("changes nothing on the page or in the cluster for the same message from a third origin, or from a window that is not the iframe", func() {
		s := newScenario(scenarioOptions{allowPage: true})
		s.fake.SetDeliveryFault(kidsim.FaultDrop)
		challenge := s.fake.StartChallenge()
		_, err := s.fake.ApproveChallenge(challenge, kidsim.Approval{})
		Expect(err).NotTo(HaveOccurred())
		token := s.token(challenge, time.Hour)

		By("the widget of a third origin, in the iframe the module listens to")
		s.openFor(challenge, token, s.fake.Other)
		s.page.click("post-result")
		Eventually(s.page.widgetPosted).Should(ContainSubstring("Widget.AgeGate.Result"))
		unchanged := func(g Gomega) {
			g.Expect(s.page.events()).To(BeEmpty())
			g.Expect(s.page.relays()).To(BeEmpty())
			g.Expect(s.page.statusText("consent")).To(Equal("None"))
			g.Expect(s.allEvents()).To(BeEmpty())
			g.Expect(s.users()).To(BeEmpty())
		}
		Consistently(unchanged, "2s", "200ms").Should(Succeed())

		By("the widget of the allowed origin, in a second iframe, and the page's own window")
		s.openFor(challenge, token, s.fake.Origin)
		_, err = evalOn(s.page, `new Promise((resolve) => {
			const other = document.createElement('iframe');
			other.id = 'other';
			other.style.height = '320px';
			other.addEventListener('load', () => resolve(true));
			other.src = document.getElementById('widget').src;
			document.querySelector('main').prepend(other);
		})`)
		Expect(err).NotTo(HaveOccurred())
		Expect(s.page.ClickInFrame("#other", "#post-result")).To(Succeed())
		Eventually(func() (string, error) { return s.page.TextInFrame("#other", "#posted") }).Should(ContainSubstring("Widget.AgeGate.Result"))
		_, err = evalOn(s.page, `window.postMessage({eventType: 'Widget.AgeGate.Result', data: {status: 'PASS', challengeId: `+jsonOf(challenge)+`}}, '*'); true`)
		Expect(err).NotTo(HaveOccurred())
		Consistently(unchanged, "2s", "200ms").Should(Succeed())

		By("the control: the same button in the listened iframe is relayed")
		s.page.click("post-result")
		Eventually(s.page.relayStatuses).Should(Equal([]int{http.StatusOK}))
		Eventually(func() []kidv1.KidEvent { return s.eventsFrom(kidv1.SourceBrowser) }).Should(HaveLen(1))
	})

	It("shows the parent's approval at k-ID live, from the webhook alone, over a stream whose URL holds no token", func() {
		s := newScenario(scenarioOptions{allowPage: true})
		challenge := s.fake.StartChallenge()
		token := s.token(challenge, time.Hour)
		s.openFor(challenge, token, s.fake.Origin)
		Eventually(func() string { return s.page.statusText("consent") }).Should(Equal("Pending"),
			"the IN_PROGRESS webhook made the challenge's user")

		session, err := s.fake.ApproveChallenge(challenge, kidsim.Approval{})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() string { return s.page.statusText("consent") }).WithTimeout(30 * time.Second).Should(Equal("Granted"))
		Eventually(func() string { return s.page.statusText("final") }).Should(Equal("true"))
		Expect(s.page.statusText("user")).To(Equal(kidv1.UserName("demo", kidv1.IdentitySession, session)))

		Expect(s.page.events()).To(BeEmpty(), "no DOM event was posted")
		Expect(s.eventsFrom(kidv1.SourceBrowser)).To(BeEmpty())
		Expect(s.eventsFrom(kidv1.SourceWebhook)).To(HaveLen(2), "IN_PROGRESS and PASS")

		By("the token travelled in a header: no URL the page requested holds it, which a proxy's log would keep")
		requested, err := evalOn(s.page, `performance.getEntriesByType('resource').map((e) => e.name)`)
		Expect(err).NotTo(HaveOccurred())
		Expect(requested).To(ContainElement(HaveSuffix("/browser/"+s.ns+"/demo/status")), "the stream was requested")
		for _, u := range requested.([]any) {
			Expect(u).NotTo(Or(ContainSubstring(token), ContainSubstring(url.QueryEscape(token)), ContainSubstring("token=")), "requested %s", u)
		}
	})

	It("relays every DOM message about the token's challenge, and refuses one about another id", func() {
		s := newScenario(scenarioOptions{allowPage: true})
		s.fake.SetDeliveryFault(kidsim.FaultDrop)
		challenge := s.fake.StartChallenge()
		s.openFor(challenge, s.token(challenge, time.Hour), s.fake.Origin)

		buttons := []string{"post-challenge", "post-result", "post-verification", "post-verification-error", "post-consent", "post-exit"}
		for i, button := range buttons {
			s.page.click(button)
			Eventually(s.page.relayStatuses).Should(HaveLen(i + 1))
		}
		Expect(s.page.relayStatuses()).To(Equal([]int{200, 200, http.StatusForbidden, 200, 200, 200}),
			"a Verification.Result names a verification, not the token's challenge")
		Eventually(func(g Gomega) {
			var types []string
			for _, e := range s.eventsFrom(kidv1.SourceBrowser) {
				g.Expect(e.Spec.Subject).To(Equal(kidv1.EventSubject{ChallengeID: challenge}), "the token's subject, whatever the message says")
				types = append(types, e.Spec.EventType)
			}
			g.Expect(types).To(ConsistOf("Widget.AgeGate.Challenge", "Widget.AgeGate.Result", "Verification.Error",
				"Widget.DataNotices.ConsentApproved", "Widget.ExitReview"))
		}).Should(Succeed())
	})

	Describe("refusals, seen from the page", func() {
		It("answers 401 to a bad, an expired or a missing token, and stores nothing", func() {
			s := newScenario(scenarioOptions{allowPage: true})
			challenge := s.fake.StartChallenge()
			Eventually(s.users).Should(HaveLen(1), "the IN_PROGRESS webhook made the challenge's user")

			By("a token signed with another key: the relay and the status stream refuse it")
			bad, err := relaytoken.Mint([]byte("not-the-product-key"), s.ns+"/demo",
				relaytoken.Subject{Kind: relaytoken.KindChallenge, ID: challenge}, h.Clock.Now().Add(time.Hour))
			Expect(err).NotTo(HaveOccurred())
			s.openFor(challenge, bad, s.fake.Origin)
			s.page.click("post-challenge")
			Eventually(s.page.relayStatuses).Should(Equal([]int{http.StatusUnauthorized}))
			Eventually(s.page.logged).Should(ContainElement("kid:status-error"))

			By("an expired token")
			expiry := h.Clock.Now().Add(time.Second)
			expiring, err := relaytoken.Mint([]byte(relayKey), s.ns+"/demo",
				relaytoken.Subject{Kind: relaytoken.KindChallenge, ID: challenge}, expiry)
			Expect(err).NotTo(HaveOccurred())
			Eventually(func() bool { return h.Clock.Now().After(expiry) }).Should(BeTrue())
			s.openFor(challenge, expiring, s.fake.Origin)
			s.page.click("post-challenge")
			Eventually(s.page.relayStatuses).Should(Equal([]int{http.StatusUnauthorized}))

			By("no token at all, and a token that is not one")
			answers := s.page.fetchFromPage("", `{"eventType":"Widget.ExitReview"}`)
			Expect(answers[0]["status"]).To(BeEquivalentTo(http.StatusUnauthorized))
			answers = s.page.fetchFromPage("Bearer not-a-token", `{"eventType":"Widget.ExitReview"}`)
			Expect(answers[0]["status"]).To(BeEquivalentTo(http.StatusUnauthorized))

			Consistently(func() []kidv1.KidEvent { return s.eventsFrom(kidv1.SourceBrowser) }, "1s", "200ms").Should(BeEmpty())
		})

		It("grants no CORS to a page of an origin the product does not allow, and stores nothing", func() {
			s := newScenario(scenarioOptions{allowPage: false})
			challenge := s.fake.StartChallenge()
			s.openFor(challenge, s.token(challenge, time.Hour), s.fake.Origin)
			trackErrors(s.page)

			s.page.click("post-challenge")
			Eventually(s.page.relays).Should(HaveLen(1))
			refused := s.page.relays()[0]
			Expect(refused["status"]).To(BeEquivalentTo(0), "the browser refused the answer: no Access-Control-Allow-Origin")
			Expect(refused["error"]).To(ContainSubstring("TypeError"))
			Eventually(s.page.logged).Should(ContainElement("kid:status-error"), "nor may it read the status stream")
			Expect(pageErrors(s.page)).To(BeEmpty(), "the refusal does not break the page")
			Expect(s.page.logged()).To(ContainElement("kid:Widget.AgeGate.Challenge"), "the page still gets its event")

			Consistently(func() []kidv1.KidEvent { return s.eventsFrom(kidv1.SourceBrowser) }, "1s", "200ms").Should(BeEmpty())
		})

		It("answers 429 with Retry-After past the product's rate, and stores only what it accepted", func() {
			s := newScenario(scenarioOptions{allowPage: true, browser: func(b *kidv1.BrowserSpec) {
				rps, burst := int32(1), int32(3)
				b.RequestsPerSecond, b.Burst = &rps, &burst
			}})
			challenge := s.fake.StartChallenge()
			token := s.token(challenge, time.Hour)
			s.openFor(challenge, token, s.fake.Origin)

			var flood []string
			for i := range 12 {
				flood = append(flood, `{"eventType":"Widget.ExitReview","data":{"n":`+jsonOf(i)+`}}`)
			}
			answers := s.page.fetchFromPage("Bearer "+token, flood...)
			accepted, limited := 0, 0
			for _, a := range answers {
				switch a["status"] {
				case float64(http.StatusOK):
					accepted++
				case float64(http.StatusTooManyRequests):
					limited++
					Expect(a["retryAfter"]).NotTo(BeEmpty(), "Retry-After is exposed to the page")
				default:
					Fail("unexpected answer " + jsonOf(a))
				}
			}
			Expect(accepted).To(BeNumerically(">=", 3))
			Expect(accepted).To(BeNumerically("<=", 5))
			Expect(limited).To(Equal(12 - accepted))
			Eventually(func() []kidv1.KidEvent { return s.eventsFrom(kidv1.SourceBrowser) }).Should(HaveLen(accepted))
			Consistently(func() []kidv1.KidEvent { return s.eventsFrom(kidv1.SourceBrowser) }, "1s", "200ms").Should(HaveLen(accepted))
		})
	})
})

// writeScreenshot saves a PNG of the page to .local/artifacts, and, with
// KID_UPDATE_SCREENSHOTS=1, to docs/images for the README too.
func writeScreenshot(p *page, name string) {
	GinkgoHelper()
	png, err := p.Screenshot()
	Expect(err).NotTo(HaveOccurred())
	dirs := []string{filepath.Join(testenv.RepoRoot(), ".local", "artifacts")}
	if os.Getenv("KID_UPDATE_SCREENSHOTS") == "1" {
		dirs = append(dirs, filepath.Join(testenv.RepoRoot(), "docs", "images"))
	}
	for _, dir := range dirs {
		Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
		path := filepath.Join(dir, name)
		Expect(os.WriteFile(path, png, 0o644)).To(Succeed())
		GinkgoWriter.Printf("screenshot of the page: %s\n", path)
	}
}
