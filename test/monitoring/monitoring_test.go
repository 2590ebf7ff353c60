package monitoring_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
)

var _ = Describe("The alerts and the dashboard", Ordered, ContinueOnFailure, func() {
	var (
		checker     string
		metricsAddr string
		parsed      *report
	)

	BeforeAll(func() {
		checker = buildChecker()

		opts := h.OperatorOptions()
		metricsAddr = "127.0.0.1:" + freePort()
		opts.MetricsAddr = metricsAddr
		// As config/manager deploys it: leader_election_master_status is
		// exported only under leader election.
		opts.LeaderElection = true
		opts.LeaderElectionNamespace = "default"
		op, stop, err := testenv.StartOperator(h.Config, opts)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(stop()).To(Succeed()) })
		// The harness's helpers build webhook URLs from it.
		h.Operator, h.BaseURL = op, "http://"+op.Receiver.Addr()

		driveTraffic(metricsAddr)
	})

	It("parse with Prometheus's parser, every expression of both files", func() {
		var errs string
		parsed, errs = runChecker(checker, rulesFile, dashboardFile)
		Expect(errs).To(BeEmpty())
		Expect(parsed.Files).To(HaveLen(2))
		// Every metric comes with the selectors the next spec checks.
		Expect(len(parsed.Selectors)).To(BeNumerically(">=", len(parsed.Metrics)))
		// Sixteen alerts; the dashboard's panels and its product variable.
		Expect(parsed.Expressions).To(BeNumerically(">=", 16+20))
		Expect(parsed.Metrics).To(ContainElements(
			"kid_webhook_requests_total", "kid_webhook_request_duration_seconds_bucket",
			"kid_events_pending", "kid_action_attempts_total", "kid_api_requests_total",
		))
		GinkgoWriter.Printf("metrics used: %v\n", parsed.Metrics)
	})

	It("use only metrics, and label values, that the running operator exports", func() {
		Expect(parsed).NotTo(BeNil())
		// driveTraffic waited for every series that needs a poll, a sync,
		// a retry or a throttled call: they are all there by now, and
		// stay (counters, and gauges of objects that stay). The wait is
		// for a scrape that races a gauge's first pass, no more.
		var missing []string
		DeferCleanup(func() {
			if len(missing) > 0 {
				GinkgoWriter.Printf("selectors no exported series answers:\n%s", joinLines(missing))
			}
		})
		Eventually(func(g Gomega) {
			missing = unexported(parsed, scrape(g, metricsAddr))
			// The list first, so that a log cut short still shows it.
			g.Expect(missing).To(BeEmpty(), "%d selectors no exported series answers:\n%s", len(missing), joinLines(missing))
		}, 30*time.Second, time.Second).Should(Succeed())
	})

	It("fail the checker on a rule's parse error, naming the file, the alert and the parser's message", func() {
		path := writeTemp("rules.yaml", `apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: broken}
spec:
  groups:
  - name: broken
    rules:
    - alert: KidBroken
      expr: |
        sum by (product) (rate(kid_webhook_requests_total[5m]) > 0
      for: 5m
      labels: {severity: warning}
      annotations: {summary: s, description: d, runbook_url: "https://github.com/kid-operator/kid-operator/blob/main/docs/runbooks.md#kidproductnotready"}
    - alert: KidNoFor
      expr: vector(1)
      labels: {severity: page}
      annotations: {summary: s, description: d}
`)
		r, errs := runChecker(checker, path)
		Expect(r).To(BeNil())
		Expect(errs).To(ContainSubstring(path + ":9: group broken, alert KidBroken: 2:1: parse error: unclosed left parenthesis"))
		Expect(errs).To(ContainSubstring("alert KidNoFor: needs a for:"))
		Expect(errs).To(ContainSubstring(`alert KidNoFor: needs a severity label: critical, warning or info (got "page")`))
		Expect(errs).To(ContainSubstring("alert KidNoFor: needs a runbook_url annotation"))
	})

	It("fail the checker on a panel's parse error, and on a Grafana variable it does not know", func() {
		path := writeTemp("dashboard.json", `{"title": "t", "uid": "u", "templating": {"list": []}, "panels": [
  {"id": 1, "title": "Broken", "type": "timeseries", "targets": [
    {"refId": "A", "expr": "rate(kid_webhook_requests_total[$__rate_interval]"},
    {"refId": "B", "expr": "rate(kid_webhook_requests_total{product=~\"$game\"}[5m])"}]}]}`)
		r, errs := runChecker(checker, path)
		Expect(r).To(BeNil())
		Expect(errs).To(ContainSubstring(path + `: panel 1 "Broken", query A: 1:`))
		Expect(errs).To(ContainSubstring("parse error"))
		Expect(errs).To(ContainSubstring(`as parsed: rate(kid_webhook_requests_total[1m]`))
		Expect(errs).To(ContainSubstring(path + `: panel 1 "Broken", query B: unknown variable $game`))
	})

	It("fail on a rule naming a metric, or a label value, that the operator does not export", func() {
		path := writeTemp("unexported.yaml", `apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: unexported}
spec:
  groups:
  - name: unexported
    rules:
    - alert: KidNoSuchMetric
      expr: sum by (cluster, namespace) (rate(kid_no_such_metric_total[5m])) > 0
      for: 5m
      labels: {severity: warning}
      annotations: {summary: s, description: d, runbook_url: "`+runbook+`"}
    - alert: KidNoSuchResult
      expr: sum by (cluster, namespace) (rate(kid_action_attempts_total{result="failed"}[5m])) > 0
      for: 5m
      labels: {severity: warning}
      annotations: {summary: s, description: d, runbook_url: "`+runbook+`"}
    - alert: KidKubeStateMetrics
      expr: sum by (cluster, namespace) (kube_pod_container_status_restarts_total{container="manager"}) > 0
      for: 5m
      labels: {severity: warning}
      annotations: {summary: s, description: d, runbook_url: "`+runbook+`"}
    - alert: KidMisspeltExternal
      expr: sum by (cluster, namespace) (kube_pod_container_status_restart_total{container="manager"}) > 0
      for: 5m
      labels: {severity: warning}
      annotations: {summary: s, description: d, runbook_url: "`+runbook+`"}
`)
		r, errs := runChecker(checker, "-runbooks", runbooksFile, path)
		Expect(errs).To(BeEmpty(), "all parse")
		// kube-state-metrics' name is on the checker's allowlist
		// (hack/promql/external.go); a name off it is the operator's to
		// export, and fails like any other.
		Expect(unexported(r, scrape(Default, metricsAddr))).To(ConsistOf(
			ContainSubstring("alert KidNoSuchMetric: kid_no_such_metric_total is not exported"),
			ContainSubstring(`alert KidNoSuchResult: no exported series of kid_action_attempts_total answers kid_action_attempts_total{result="failed"}`),
			ContainSubstring("alert KidMisspeltExternal: kube_pod_container_status_restart_total is not exported"),
		))
	})

	It("fail the checker on a runbook_url whose section docs/runbooks.md lacks", func() {
		path := writeTemp("runbook.yaml", `apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: runbook}
spec:
  groups:
  - name: runbook
    rules:
    - alert: KidNoSection
      expr: max by (cluster, namespace, name) (kid_product_ready) == 0
      for: 5m
      labels: {severity: warning}
      annotations: {summary: s, description: d, runbook_url: "https://github.com/kid-operator/kid-operator/blob/main/docs/runbooks.md#kidnosection"}
`)
		r, errs := runChecker(checker, "-runbooks", runbooksFile, path)
		Expect(r).To(BeNil())
		Expect(errs).To(ContainSubstring("alert KidNoSection: runbook_url"))
		Expect(errs).To(ContainSubstring("has no section #kidnosection"))
	})
})

var _ = Describe("The alerts' conditions", func() {
	It("hold when they should, on series shaped like the operator's (hack/promql's tests, on Prometheus's engine)", func() {
		// A module of its own, so `go test ./...` does not reach it. The
		// first run compiles Prometheus's engine and its test storage.
		cctx, cancel := context.WithTimeout(ctx, 8*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(cctx, "go", "-C", filepath.Join(testenv.RepoRoot(), "hack", "promql"), "test", "./...")
		cmd.Env = append(os.Environ(), "GOWORK=off")
		out, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "go -C hack/promql test ./...:\n%s", out)
		GinkgoWriter.Printf("%s", out)
	})
})

// driveTraffic makes the operator export every labelled series the alerts
// and the dashboard select: deliveries answered 200, 401 and 503, a retry,
// actions that succeed and fail, and calls to k-ID's API answered 200, 503,
// 429 and not at all, one held back by the product's own rate limit. Each
// series that needs a poll, a sync, a retry or a throttled call is made by
// a fault of the fake k-ID that lands for certain, and waited for by name
// (waitForSeries), so that the spec that compares does not depend on how
// the operator's calls happen to fall on a loaded machine.
func driveTraffic(metricsAddr string) {
	GinkgoHelper()
	ns, err := h.NewNamespace(ctx)
	Expect(err).NotTo(HaveOccurred())

	// A fake k-ID, whose API the product calls and which delivers the
	// product's webhooks.
	const apiKey = testenv.FakeAPIKey
	fake := h.StartFakeKid(ns, "demo")
	DeferCleanup(fake.Close)
	apiSecret(ns, "demo-api", apiKey)
	// One call a second: the polls and syncs below queue behind it.
	one := int32(1)
	p, err := h.NewProduct(ctx, ns, "demo", func(p *kidv1.KidProduct) {
		p.Spec.API = &kidv1.APISpec{
			SecretRef:         kidv1.SecretKeySelector{Name: "demo-api", Key: "key"},
			BaseURL:           fake.URL,
			RequestsPerSecond: &one,
			Burst:             &one,
			Recovery: kidv1.RecoverySpec{
				FirstPoll:   &metav1.Duration{Duration: time.Second},
				MaxInterval: &metav1.Duration{Duration: 2 * time.Second},
			},
		}
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(h.WaitReady(ctx, p)).To(Succeed())

	// Two actions on every event: one whose backend accepts, one whose
	// backend refuses for good (400).
	accepts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	refuses := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadRequest) }))
	DeferCleanup(accepts.Close)
	DeferCleanup(refuses.Close)
	for name, url := range map[string]string{"accepts": accepts.URL, "refuses": refuses.URL} {
		Expect(h.Client.Create(ctx, &kidv1.KidAction{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       kidv1.KidActionSpec{Products: []string{"demo"}, HTTP: &kidv1.HTTPAction{URL: url, MaxAttempts: 1}},
		})).To(Succeed())
		Eventually(func(g Gomega) {
			a := &kidv1.KidAction{}
			g.Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, a)).To(Succeed())
			g.Expect(a.Status.ObservedGeneration).To(Equal(a.Generation))
		}).Should(Succeed())
	}

	// A player's consent, from k-ID: the fake delivers it, and the operator
	// then reads the new session from the API.
	challenge := fake.StartChallenge()
	_, err = fake.ApproveChallenge(challenge, kidsim.Approval{})
	Expect(err).NotTo(HaveOccurred())
	// Two challenges a game follows (README, "Recovery"): polled. Their
	// IN_PROGRESS webhooks are lost at k-ID, so that the polls' copies are
	// the ones stored (kid_polled_events_total); delivered, they would race
	// the first poll, and a webhook stored first makes the poll's a
	// duplicate, which that counter leaves out. The approval's two
	// webhooks are delivered first: the session sync needs them.
	Eventually(func() int {
		ok := 0
		for _, d := range fake.Deliveries() {
			if d.Status == http.StatusOK {
				ok++
			}
		}
		return ok
	}, 30*time.Second).Should(Equal(2), "the approval's IN_PROGRESS and PASS delivered")
	fake.SetDeliveryFault(kidsim.FaultDrop)
	var followed []string
	for i := range 2 {
		id := fake.StartChallenge()
		followed = append(followed, id)
		Expect(h.Client.Create(ctx, &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{Name: "game-challenge-" + strconv.Itoa(i), Namespace: ns},
			Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "demo"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentityChallenge, ID: id}},
		})).To(Succeed())
	}

	// k-ID's retry of a delivery already stored, and a delivery signed
	// with the wrong secret.
	body, err := kidsim.Build(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-retried", Status: kid.StatusPass, SessionID: "s-retried"})
	Expect(err).NotTo(HaveOccurred())
	ts := strconv.FormatInt(h.Clock.Now().Unix(), 10)
	Expect(p.Sender().Deliver(ctx, body, ts, kid.Sign).Status).To(Equal(http.StatusOK))
	Expect(p.Sender().Deliver(ctx, body, ts, kid.Sign).Status).To(Equal(http.StatusOK))
	Expect(p.Sender().Deliver(ctx, body, ts, kidsim.BadSignature).Status).To(Equal(http.StatusUnauthorized))

	// A product whose webhook Secret does not exist: 503 (404 until the
	// receiver's cache has the product).
	Expect(h.Client.Create(ctx, &kidv1.KidProduct{
		ObjectMeta: metav1.ObjectMeta{Name: "no-secret", Namespace: ns},
		Spec: kidv1.KidProductSpec{
			ProductID: 11472, Environment: kidv1.EnvironmentTest,
			Webhook: kidv1.WebhookSpec{SecretRef: kidv1.LocalObjectReference{Name: "missing"}},
		},
	})).To(Succeed())
	unready := &kidsim.Sender{URL: h.WebhookURL(ns, "no-secret"), Secret: []byte("any"), Clock: h.Clock}
	Eventually(func() int { return unready.Deliver(ctx, body, ts, kid.Sign).Status }).Should(Equal(http.StatusServiceUnavailable))

	// A product whose k-ID API does not answer: calls that end in "error".
	apiSecret(ns, "unreachable-api", apiKey)
	_, err = h.NewProduct(ctx, ns, "unreachable", func(p *kidv1.KidProduct) {
		p.Spec.API = &kidv1.APISpec{
			SecretRef: kidv1.SecretKeySelector{Name: "unreachable-api", Key: "key"},
			BaseURL:   "http://127.0.0.1:" + freePort() + "/api/v1",
		}
	})
	Expect(err).NotTo(HaveOccurred())

	// Once the session is synced and each followed challenge polled (its
	// IN_PROGRESS stored as a poll event), k-ID starts failing, then
	// refusing, the product's calls. Failed or refused first, a poll could
	// back off past the spec's wait.
	Eventually(func(g Gomega) {
		answered := map[string]bool{}
		for _, r := range fake.Requests() {
			if r.Status == http.StatusOK {
				answered[r.Endpoint+"/"+r.Query.Get("challengeId")] = true
			}
		}
		g.Expect(answered).To(HaveKey("session/get/"), "the operator reads the approved session")
		for _, id := range followed {
			g.Expect(answered).To(HaveKey(kidsim.EndpointChallengeGetStatus+"/"+id), "the operator polls the challenge the game follows")
		}
	}, 60*time.Second).Should(Succeed())
	demo := map[string]string{"product": ns + "/demo"}
	waitForSeries(metricsAddr, "kid_session_syncs_total", demo)
	waitForSeries(metricsAddr, "kid_recovery_polls_total", demo)
	waitForSeries(metricsAddr, "kid_polled_events_total", demo)
	fake.SetDeliveryFault(kidsim.FaultNone)
	waitForSeries(metricsAddr, "kid_api_slot_wait_seconds_bucket", demo)
	waitForSeries(metricsAddr, "kid_action_attempts_total", map[string]string{"action": ns + "/refuses", "result": "failure"})
	waitForSeries(metricsAddr, "kid_api_requests_total", map[string]string{"product": ns + "/unreachable", "code": "error"})

	// One poll answered 503: the client retries it within the same call,
	// a backoff (about 250 ms) after the first attempt, and at one call a
	// second (burst 1) the product's own limiter holds that retry back
	// (kid_api_ratelimited_total). Waiting for two of the followed
	// challenges' polls at once would be a matter of timing.
	Expect(fake.SetAPIFault(kidsim.EndpointChallengeGetStatus, kidsim.APIFault{Status: http.StatusServiceUnavailable, Calls: 1})).To(Succeed())
	Eventually(func() bool { return served(fake, http.StatusServiceUnavailable) }, 60*time.Second).Should(BeTrue(), "the fake k-ID answered a poll 503")
	waitForSeries(metricsAddr, "kid_api_requests_total", map[string]string{"product": ns + "/demo", "code": "503"})
	waitForSeries(metricsAddr, "kid_api_ratelimited_total", demo)

	// Then k-ID refuses the product's calls past one every five seconds:
	// the polls (each challenge every 2 s at most) get 429s.
	fake.SetRateLimit(0.2, 1)
	Eventually(func() bool { return served(fake, http.StatusTooManyRequests) }, 60*time.Second).Should(BeTrue(), "the fake k-ID answered a call 429")
	waitForSeries(metricsAddr, "kid_api_requests_total", map[string]string{"product": ns + "/demo", "code": "429"})
}

// served reports whether the fake k-ID answered a call of its API with
// status.
func served(fake *testenv.FakeKid, status int) bool {
	for _, r := range fake.Requests() {
		if r.Status == status {
			return true
		}
	}
	return false
}

// waitForSeries waits until the operator exports a series of name that
// carries labels, and fails naming both if it does not within a minute.
func waitForSeries(metricsAddr, name string, labels map[string]string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		for _, s := range scrape(g, metricsAddr) {
			if s.name != name {
				continue
			}
			ok := true
			for k, v := range labels {
				ok = ok && s.labels[k] == v
			}
			if ok {
				return
			}
		}
		g.Expect(name).To(BeEmpty(), "driveTraffic: no series %s%v exported yet", name, labels)
	}, 60*time.Second, 250*time.Millisecond).Should(Succeed(), "driveTraffic: the operator never exported %s%v", name, labels)
}

func apiSecret(ns, name, key string) {
	GinkgoHelper()
	Expect(h.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: kidv1.SecretLabels()},
		StringData: map[string]string{"key": key},
	})).To(Succeed())
}

// freePort is a loopback port nothing listens on.
func freePort() string {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func writeTemp(name, content string) string {
	GinkgoHelper()
	path := filepath.Join(GinkgoT().TempDir(), name)
	Expect(os.WriteFile(path, []byte(content), 0o600)).To(Succeed())
	return path
}

func joinLines(lines []string) string {
	out := ""
	for _, l := range lines {
		out += "  " + l + "\n"
	}
	return out
}
