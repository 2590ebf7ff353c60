package monitoring_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kid-operator/kid-operator/test/testenv"
)

// The monitoring files the specs check, from the repository's root.
var (
	rulesFile     = filepath.Join(testenv.RepoRoot(), "config", "prometheus", "kid-operator-rules.yaml")
	dashboardFile = filepath.Join(testenv.RepoRoot(), "config", "grafana", "kid-operator-dashboard.json")
	runbooksFile  = filepath.Join(testenv.RepoRoot(), "docs", "runbooks.md")
	// runbook is a runbook_url of a section docs/runbooks.md has.
	runbook = "https://github.com/kid-operator/kid-operator/blob/main/docs/runbooks.md#kidproductnotready"
)

// report is what hack/promql prints.
type report struct {
	Files       []string   `json:"files"`
	Expressions int        `json:"expressions"`
	Metrics     []string   `json:"metrics"`
	Selectors   []selector `json:"selectors"`
}

type selector struct {
	Where    string    `json:"where"`
	Metric   string    `json:"metric"`
	Matchers []matcher `json:"matchers"`
	// External names who exports a metric the operator does not
	// (hack/promql/external.go's allowlist: kube-state-metrics, cAdvisor,
	// etcd, the API server).
	External string `json:"external"`
}

type matcher struct {
	Label string `json:"label"`
	Op    string `json:"op"`
	Value string `json:"value"`
}

func (s selector) String() string {
	var m []string
	for _, x := range s.Matchers {
		m = append(m, x.Label+x.Op+strconv.Quote(x.Value))
	}
	return s.Metric + "{" + strings.Join(m, ",") + "}"
}

// buildChecker builds hack/promql, as `go -C hack/promql run .` would, once
// for all the specs. The first build on a machine downloads Prometheus's
// modules and compiles its parser: a minute or more.
func buildChecker() string {
	GinkgoHelper()
	dir, err := os.MkdirTemp("", "kid-promql-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	bin := filepath.Join(dir, "promql")
	cctx, cancel := context.WithTimeout(ctx, 8*time.Minute)
	defer cancel()
	// go test puts its own go first on PATH.
	cmd := exec.CommandContext(cctx, "go", "-C", filepath.Join(testenv.RepoRoot(), "hack", "promql"), "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "building hack/promql:\n%s", out)
	return bin
}

// runChecker runs the checker with args (its flags and files). It returns
// the report when the checker accepted them, else its error lines.
func runChecker(bin string, args ...string) (*report, string) {
	GinkgoHelper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		Expect(exit.ExitCode()).To(Equal(1), "the checker's usage error: %s", stderr.String())
		Expect(stdout.String()).To(BeEmpty(), "no report when it fails")
		return nil, stderr.String()
	}
	Expect(err).NotTo(HaveOccurred())
	r := &report{}
	Expect(json.Unmarshal(stdout.Bytes(), r)).To(Succeed(), stdout.String())
	return r, ""
}

// series is one exported series: its name as PromQL sees it (a
// histogram's _bucket, _sum and _count) and its labels.
type series struct {
	name   string
	labels map[string]string
}

// scrape reads the operator's /metrics as Prometheus would.
func scrape(g Gomega, addr string) []series {
	resp, err := http.Get("http://" + addr + "/metrics") //nolint:noctx // a loopback scrape with the client's defaults
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	var out []series
	add := func(name string, base map[string]string, extra ...string) {
		l := make(map[string]string, len(base)+1)
		for k, v := range base {
			l[k] = v
		}
		for i := 0; i+1 < len(extra); i += 2 {
			l[extra[i]] = extra[i+1]
		}
		out = append(out, series{name: name, labels: l})
	}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				for _, b := range m.GetHistogram().GetBucket() {
					add(name+"_bucket", l, "le", formatLe(b.GetUpperBound()))
				}
				add(name+"_bucket", l, "le", "+Inf")
				add(name+"_sum", l)
				add(name+"_count", l)
			case dto.MetricType_SUMMARY:
				for _, q := range m.GetSummary().GetQuantile() {
					add(name, l, "quantile", strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64))
				}
				add(name+"_sum", l)
				add(name+"_count", l)
			default:
				add(name, l)
			}
		}
	}
	return out
}

func formatLe(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// unexported lists, for each selector of the report, why no exported
// series answers it: its metric is not exported, or none of the metric's
// series has the label values it matches. A label a series lacks matches
// as "", as in PromQL.
func unexported(r *report, exported []series) []string {
	byName := map[string][]map[string]string{}
	for _, s := range exported {
		byName[s.name] = append(byName[s.name], s.labels)
	}
	var out []string
	for _, s := range r.Selectors {
		if s.External != "" {
			// Not the operator's: the checker vouched for its name and
			// the labels it matches.
			continue
		}
		all, ok := byName[s.Metric]
		if !ok {
			out = append(out, fmt.Sprintf("%s: %s is not exported", s.Where, s.Metric))
			continue
		}
		if !slices.ContainsFunc(all, func(l map[string]string) bool { return matchesAll(s.Matchers, l) }) {
			out = append(out, fmt.Sprintf("%s: no exported series of %s answers %s", s.Where, s.Metric, s))
		}
	}
	return out
}

func matchesAll(ms []matcher, l map[string]string) bool {
	for _, m := range ms {
		v := l[m.Label]
		switch m.Op {
		case "=":
			if v != m.Value {
				return false
			}
		case "!=":
			if v == m.Value {
				return false
			}
		case "=~", "!~":
			// Anchored as Prometheus anchors them.
			re, err := regexp.Compile("^(?s:" + m.Value + ")$")
			if err != nil || re.MatchString(v) != (m.Op == "=~") {
				return false
			}
		default:
			return false
		}
	}
	return true
}
