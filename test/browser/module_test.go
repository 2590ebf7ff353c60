package browser_test

import (
	"context"
	"net/http"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kid-operator/kid-operator/cmd/localrun/browserdemo"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// A page without a relay token: the module alone, no relay, no status.
func moduleOnlyPage(fake *widgetFake, widgetOrigin string) *page {
	GinkgoHelper()
	challenge := fake.StartChallenge()
	return newPage("default", "none", browserdemo.Config{
		WidgetOrigins: []string{fake.Origin},
		Start: func(context.Context, *http.Request) (browserdemo.Player, error) {
			return browserdemo.Player{ChallengeID: challenge, WidgetURL: kidsim.WidgetURL(widgetOrigin, challenge, "")}, nil
		},
	})
}

var _ = Describe("The browser module, imported by a page of another origin", func() {
	It("dispatches every shape of k-ID's DOM messages as its typed event, flat Verification.Error and bare Widget.ExitReview included", func() {
		fake := newWidgetFake(kidsim.FakeOptions{APIKey: "k"})
		p := moduleOnlyPage(fake, fake.Origin)
		p.open()

		buttons := []string{"post-challenge", "post-result", "post-verification", "post-verification-error", "post-consent", "post-exit"}
		want := []string{
			"Widget.AgeGate.Challenge", "Widget.AgeGate.Result", "Verification.Result",
			"Verification.Error", "Widget.DataNotices.ConsentApproved", "Widget.ExitReview",
		}
		// One at a time: some buttons ask the fake k-ID first.
		for i, button := range buttons {
			p.click(button)
			Eventually(p.eventTypes).Should(Equal(want[:i+1]))
		}
		Expect(p.logged()).To(Equal([]string{
			"kid:Widget.AgeGate.Challenge", "kid:Widget.AgeGate.Result", "kid:Verification.Result",
			"kid:Verification.Error", "kid:Widget.DataNotices.ConsentApproved", "kid:Widget.ExitReview",
		}), "the page's log shows each event under its kid: name")

		got := p.events()
		challenge := fake.State().Challenges[0].ChallengeID
		Expect(got[0]).To(Equal(map[string]any{"eventType": "Widget.AgeGate.Challenge", "data": map[string]any{"status": "PENDING", "challengeId": challenge}}))
		Expect(got[1]).To(Equal(map[string]any{"eventType": "Widget.AgeGate.Result", "data": map[string]any{"status": "PASS", "challengeId": challenge}}),
			"a challenge not approved yet has no session to name")
		verification := fake.State().Verifications[0]
		Expect(got[2]).To(Equal(map[string]any{"eventType": "Verification.Result", "data": map[string]any{
			"verificationId": verification.ID, "status": "PASS", "method": "id-document", "provider": "kidsim",
			"age": map[string]any{"low": 15.0, "high": 15.0}, "ageCategory": "digital-youth",
		}}))
		Expect(got[3]).To(Equal(map[string]any{"eventType": "Verification.Error", "method": "age-key", "status": "ERROR"}), "flat, as k-ID sends it")
		Expect(got[4]).To(Equal(map[string]any{"eventType": "Widget.DataNotices.ConsentApproved", "data": map[string]any{"jurisdiction": "US"}}))
		Expect(got[5]).To(Equal(map[string]any{"eventType": "Widget.ExitReview"}))
	})

	It("ignores, without an error on the page, messages that are not k-ID events", func() {
		fake := newWidgetFake(kidsim.FakeOptions{APIKey: "k"})
		p := moduleOnlyPage(fake, fake.Origin)
		p.open()
		trackErrors(p)

		for _, junk := range []string{
			`"Widget.AgeGate.Result"`,                                   // a JSON string
			`plain text`,                                                // a string
			`null`, `42`, `true`, `[{"eventType":"Widget.ExitReview"}]`, // not objects
			`{}`, `{"type":"Widget.ExitReview"}`, // no eventType
			`{"eventType":"Challenge.StateChange","data":{"id":"c"}}`, // a webhook type, not a DOM event
			`{"eventType":"widget.exitreview"}`,                       // types are exact
			`{"eventType":42}`,
			`{"eventType":"Widget.AgeGate.Result"}`,               // enveloped type without data
			`{"eventType":"Widget.AgeGate.Result","data":"PASS"}`, // data not an object
			`{"eventType":"Verification.Result","data":[1,2]}`,
			`{"eventType":"Widget.ExitReview","data":"done"}`,
		} {
			p.postRaw(junk)
		}
		// Messages from one window arrive in order: once this one is seen,
		// every one before it was handled.
		p.postRaw(`{"eventType":"Widget.ExitReview","data":{"reason":"done"}}`)
		Eventually(p.eventTypes).Should(Equal([]string{"Widget.ExitReview"}))
		Expect(p.widgetPosted()).To(ContainSubstring("plain text"), "the widget did post the junk")
		Expect(pageErrors(p)).To(BeEmpty())
	})

	It("dispatches on the target given, and stops at stop()", func() {
		fake := newWidgetFake(kidsim.FakeOptions{APIKey: "k"})
		p := moduleOnlyPage(fake, fake.Origin)
		p.open()
		_, err := evalOn(p, `(async () => {
			const cfg = JSON.parse(document.getElementById('config').textContent);
			const m = await import(cfg.moduleURL);
			const target = new EventTarget();
			window.onTarget = [];
			target.addEventListener('kid:Widget.ExitReview', (e) => window.onTarget.push(e.detail));
			window.stopListening = m.listen({ iframe: document.getElementById('widget'), origins: cfg.widgetOrigins, target });
			return true;
		})()`)
		Expect(err).NotTo(HaveOccurred())
		onTarget := func() any {
			got, err := evalOn(p, `window.onTarget`)
			Expect(err).NotTo(HaveOccurred())
			return got
		}

		p.click("post-exit")
		Eventually(onTarget).Should(Equal([]any{map[string]any{"eventType": "Widget.ExitReview"}}))
		Eventually(p.eventTypes).Should(HaveLen(1), "the page's own listener, on window, got it too")

		_, err = evalOn(p, `window.stopListening(); true`)
		Expect(err).NotTo(HaveOccurred())
		p.click("post-exit")
		Eventually(p.eventTypes).Should(HaveLen(2), "the page's listener still runs")
		Expect(onTarget()).To(HaveLen(1), "the stopped one does not")
	})

	It("accepts only its iframe's window, and only from an allowed origin", func() {
		fake := newWidgetFake(kidsim.FakeOptions{APIKey: "k"})

		By("a widget of an origin the page did not allow, in the very iframe listened to")
		third := moduleOnlyPage(fake, fake.Other)
		third.open()
		third.click("post-exit")
		third.click("post-challenge")
		Eventually(third.widgetPosted).Should(ContainSubstring("Widget.AgeGate.Challenge"))
		Consistently(third.eventTypes, "1s", "100ms").Should(BeEmpty())

		By("a widget of the allowed origin, in another iframe than the one listened to")
		p := moduleOnlyPage(fake, fake.Origin)
		p.open()
		_, err := evalOn(p, `new Promise((resolve) => {
			const other = document.createElement('iframe');
			other.id = 'other';
			other.style.height = '320px';
			other.addEventListener('load', () => resolve(true));
			other.src = document.getElementById('widget').src;
			document.querySelector('main').prepend(other);
		})`)
		Expect(err).NotTo(HaveOccurred())
		Expect(p.ClickInFrame("#other", "#post-exit")).To(Succeed())
		Eventually(func() (string, error) { return p.TextInFrame("#other", "#posted") }).Should(ContainSubstring("Widget.ExitReview"))

		By("the page itself, posting to its own window")
		_, err = evalOn(p, `window.postMessage({eventType: 'Widget.ExitReview'}, '*'); true`)
		Expect(err).NotTo(HaveOccurred())
		Consistently(p.eventTypes, "1s", "100ms").Should(BeEmpty())

		By("the listened iframe, of the allowed origin: accepted")
		p.click("post-exit")
		Eventually(p.eventTypes).Should(Equal([]string{"Widget.ExitReview"}))
	})

	It("checks origins exactly, where k-ID's documented endsWith('.k-id.com') accepts http: and any k-id.com host", func() {
		fake := newWidgetFake(kidsim.FakeOptions{APIKey: "k"})
		p := moduleOnlyPage(fake, fake.Origin)
		p.open()
		origins := []string{
			"https://family.k-id.com", "https://family.test.k-id.com",
			"http://family.k-id.com", "https://evil.k-id.com", "https://a.b.k-id.com",
			"https://family.k-id.com:8443", "https://k-id.com", "https://evil-k-id.com",
			"https://family.k-id.com.evil.example", "https://FAMILY.K-ID.COM", "null", "",
			"https://play.example.com", "http://play.example.com",
		}
		table, err := evalOn(p, `(async () => {
			const m = await import(JSON.parse(document.getElementById('config').textContent).moduleURL);
			const out = {};
			for (const o of `+jsonOf(origins)+`) {
				out[o] = { ours: m.isAllowedOrigin(o), withExtra: m.isAllowedOrigin(o, ['https://play.example.com']), documented: o.endsWith('.k-id.com') };
			}
			return out;
		})()`)
		Expect(err).NotTo(HaveOccurred())
		row := func(ours, withExtra, documented bool) any {
			return map[string]any{"ours": ours, "withExtra": withExtra, "documented": documented}
		}
		Expect(table).To(Equal(map[string]any{
			"https://family.k-id.com":      row(true, true, true),
			"https://family.test.k-id.com": row(true, true, true),
			// What the documented check accepts and ours does not:
			"http://family.k-id.com": row(false, false, true), // plain HTTP
			"https://evil.k-id.com":  row(false, false, true), // any host under k-id.com
			"https://a.b.k-id.com":   row(false, false, true), // at any depth
			// What both refuse:
			"https://family.k-id.com:8443":         row(false, false, false),
			"https://k-id.com":                     row(false, false, false),
			"https://evil-k-id.com":                row(false, false, false),
			"https://family.k-id.com.evil.example": row(false, false, false),
			"https://FAMILY.K-ID.COM":              row(false, false, false), // browsers serialize origins in lower case
			"null":                                 row(false, false, false),
			"":                                     row(false, false, false),
			// Added origins, matched exactly, scheme included:
			"https://play.example.com": row(false, true, false),
			"http://play.example.com":  row(false, false, false),
		}))
	})
})
