package browser_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kid-operator/kid-operator/cmd/localrun/browserdemo"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/browser"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// These specs run the browser module in a real Chromium: a game's page
// (cmd/localrun/browserdemo) on one local origin imports it from the real
// receiver on another, and frames the fake k-ID's widget from a third; the
// operator runs on a local control plane. Distinct ports of 127.0.0.1 are
// distinct origins.

var (
	h        = testenv.SuiteHarness()
	ctx      = context.Background()
	chromium *browser.Browser
)

func TestBrowser(t *testing.T) {
	// Chromium first: without it the suite fails at once, saying how to
	// install it, rather than after starting a control plane.
	var err error
	if chromium, err = browser.Start(); err != nil {
		t.Fatalf("the browser tests need Chromium: %v", err)
	}
	defer chromium.Stop()
	RegisterFailHandler(Fail)
	RunSpecs(t, "The browser module in Chromium")
}

// serve starts an HTTP server on a free loopback port (a new origin) until
// the spec ends, and returns its URL, which is also its origin.
func serve(handler http.Handler) string {
	GinkgoHelper()
	srv := httptest.NewServer(handler)
	DeferCleanup(srv.Close)
	return srv.URL
}

// widgetFake is a fake k-ID whose widget is served from two origins: the
// one the page trusts (Origin) and another one (Other).
type widgetFake struct {
	*kidsim.Fake
	Origin string
	Other  string
}

// newWidgetFake starts a fake k-ID with the options, served on two origins.
func newWidgetFake(o kidsim.FakeOptions) *widgetFake {
	GinkgoHelper()
	if o.Schedule == nil {
		o.Schedule = []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}
	}
	if o.Clock == nil {
		o.Clock = h.Clock
	}
	f := kidsim.NewFake(o)
	DeferCleanup(f.Close)
	return &widgetFake{Fake: f, Origin: serve(f.Handler()), Other: serve(f.Handler())}
}

// page is a game's page that a spec drives.
type page struct {
	*browser.Tab
	URL string
}

// openPage serves a game's page for the product ns/product on a new
// origin, configured by cfg (ReceiverURL, Namespace and Product are set
// here), and returns it unopened with its origin.
func newPage(ns, product string, cfg browserdemo.Config) *page {
	GinkgoHelper()
	cfg.ReceiverURL, cfg.Namespace, cfg.Product = h.BaseURL, ns, product
	url := serve(browserdemo.Handler(cfg))
	tab, closeTab := chromium.NewTab()
	DeferCleanup(closeTab)
	return &page{Tab: tab, URL: url}
}

// open loads the page and waits until its module listens.
func (p *page) open() {
	GinkgoHelper()
	Expect(p.Navigate(p.URL + "/")).To(Succeed())
	Eventually(func(g Gomega) {
		state, err := browser.Eval[map[string]any](p.Tab, `window.kidDemo ? {ready: window.kidDemo.ready, widget: window.kidDemo.widgetLoaded, error: window.kidDemo.error} : {error: 'no kidDemo'}`)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(state["error"]).To(BeNil())
		g.Expect(state["ready"]).To(BeTrue())
		g.Expect(state["widget"]).To(BeTrue(), "the widget has loaded in its iframe")
	}).Should(Succeed())
}

// click clicks a button of the widget.
func (p *page) click(button string) {
	GinkgoHelper()
	Expect(p.ClickInFrame("#widget", "#"+button)).To(Succeed())
}

// postRaw makes the widget post a message typed into it: JSON, else the
// text itself as a string.
func (p *page) postRaw(message string) {
	GinkgoHelper()
	Expect(p.SetValueInFrame("#widget", "#raw", message)).To(Succeed())
	p.click("post-raw")
}

// events returns the details of the kid:<type> events the page received.
func (p *page) events() []map[string]any {
	GinkgoHelper()
	got, err := browser.Eval[[]map[string]any](p.Tab, `window.kidDemo.events`)
	Expect(err).NotTo(HaveOccurred())
	return got
}

// eventTypes returns the types of the events the page received, in order.
func (p *page) eventTypes() []string {
	GinkgoHelper()
	var types []string
	for _, e := range p.events() {
		types = append(types, e["eventType"].(string))
	}
	return types
}

// logged returns the types shown in the page's event log, oldest first.
func (p *page) logged() []string {
	GinkgoHelper()
	got, err := browser.Eval[[]string](p.Tab, `Array.from(document.querySelectorAll('#log li')).map((li) => li.dataset.type).reverse()`)
	Expect(err).NotTo(HaveOccurred())
	return got
}

// relays returns the kid:relay details the page received.
func (p *page) relays() []map[string]any {
	GinkgoHelper()
	got, err := browser.Eval[[]map[string]any](p.Tab, `window.kidDemo.relays`)
	Expect(err).NotTo(HaveOccurred())
	return got
}

// statusText returns a field of the page's live status panel.
func (p *page) statusText(field string) string {
	GinkgoHelper()
	got, err := browser.Eval[string](p.Tab, `document.getElementById('status-`+field+`').textContent`)
	Expect(err).NotTo(HaveOccurred())
	return got
}

// widgetPosted returns the widget's own list of what it posted (the page
// cannot read it: the widget is of another origin).
func (p *page) widgetPosted() string {
	GinkgoHelper()
	got, err := p.TextInFrame("#widget", "#posted")
	Expect(err).NotTo(HaveOccurred())
	return got
}

// evalOn evaluates an expression in the page.
func evalOn(p *page, expression string) (any, error) {
	return browser.Eval[any](p.Tab, expression)
}

// jsonOf renders v as JSON, for a JavaScript literal.
func jsonOf(v any) string {
	GinkgoHelper()
	b, err := json.Marshal(v)
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

// trackErrors records the page's uncaught errors and unhandled rejections
// from now on.
func trackErrors(p *page) {
	GinkgoHelper()
	_, err := evalOn(p, `window.kidErrors = [];
		window.addEventListener('error', (e) => window.kidErrors.push(String(e.message)));
		window.addEventListener('unhandledrejection', (e) => window.kidErrors.push(String(e.reason)));
		true`)
	Expect(err).NotTo(HaveOccurred())
}

// pageErrors returns what trackErrors recorded.
func pageErrors(p *page) []any {
	GinkgoHelper()
	errs, err := evalOn(p, `window.kidErrors`)
	Expect(err).NotTo(HaveOccurred())
	return errs.([]any)
}
