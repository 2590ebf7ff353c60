// Command promql checks kid-operator's monitoring files: the PrometheusRule
// (config/prometheus) and the Grafana dashboard (config/grafana). It parses
// every expression with Prometheus's own PromQL parser, and every alerting
// rule as Prometheus would load it, and prints as JSON the metric names the
// expressions use and each selector's label matchers, so that a test can
// compare them with what the operator exports (test/monitoring).
//
// It is a module of its own: github.com/prometheus/prometheus would upgrade
// half of the operator's dependency graph.
//
//	go -C hack/promql run . ../../config/prometheus/kid-operator-rules.yaml ../../config/grafana/kid-operator-dashboard.json
//
// A file ending in .yaml or .yml is a PrometheusRule; one ending in .json is
// a Grafana dashboard. Each alert's runbook_url must name a section of
// docs/runbooks.md (found above the rules file, or given with -runbooks).
// A metric kid-operator does not export is accepted only from the
// allowlist in external.go, and is marked "external" in the report. On any error it prints one line per error, naming the
// file, the rule or panel and the parser's message, to stderr, prints no
// JSON, and exits 1.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// maxFileBytes bounds what is read of one file; the real ones are a few
// tens of KiB.
const maxFileBytes = 4 << 20

// Report is what the checker prints.
type Report struct {
	// Files are the files checked, as given.
	Files []string `json:"files"`
	// Expressions is how many expressions were parsed.
	Expressions int `json:"expressions"`
	// Metrics are the metric names the expressions select, sorted, less
	// those a recording rule in the same files produces.
	Metrics []string `json:"metrics"`
	// Recorded are the names recording rules produce.
	Recorded []string `json:"recorded,omitempty"`
	// Selectors are the expressions' series selectors, each once per place.
	Selectors []Selector `json:"selectors"`
}

// Selector is one series selector of an expression.
type Selector struct {
	// Where names the file and the rule, panel or variable.
	Where  string `json:"where"`
	Metric string `json:"metric"`
	// Matchers are the selector's label matchers other than the name.
	Matchers []Matcher `json:"matchers,omitempty"`
	// External names who exports the metric when it is not kid-operator
	// (externalMetrics): the operator's /metrics cannot answer it.
	External string `json:"external,omitempty"`
}

// Matcher is one label matcher; Op is =, !=, =~ or !~.
type Matcher struct {
	Label string `json:"label"`
	Op    string `json:"op"`
	Value string `json:"value"`
}

// checker gathers what the files' expressions use, and every error.
type checker struct {
	parser    parser.Parser
	report    Report
	metrics   map[string]bool
	recorded  map[string]bool
	selectors map[string]bool
	// runbooks is the -runbooks file, or "" to find docs/runbooks.md
	// above each rules file; anchors caches each file's anchors.
	runbooks string
	anchors  map[string]map[string]bool
	errs     []error
}

func newChecker() *checker {
	return &checker{
		parser:    parser.NewParser(parser.Options{}),
		metrics:   map[string]bool{},
		recorded:  map[string]bool{},
		selectors: map[string]bool{},
		anchors:   map[string]map[string]bool{},
	}
}

func (c *checker) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// expr parses one expression found at where and records its selectors.
// extra matchers (a Grafana label_values variable's label) are added to
// each selector's.
func (c *checker) expr(where, input string, extra ...Matcher) {
	c.substituted(where, input, input, extra...)
}

// substituted is expr for an expression whose Grafana variables were
// replaced (original is the text before): a parse error then shows the
// text parsed, which its positions refer to.
func (c *checker) substituted(where, original, input string, extra ...Matcher) {
	c.report.Expressions++
	e, err := c.parser.ParseExpr(input)
	if err != nil {
		if input != original {
			c.errorf("%s: %w (positions are in the expression as parsed: %s)", where, err, input)
			return
		}
		c.errorf("%s: %w", where, err)
		return
	}
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		s := Selector{Where: where, Metric: vs.Name}
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel {
				if m.Type == labels.MatchEqual {
					s.Metric = m.Value
				}
				continue
			}
			s.Matchers = append(s.Matchers, Matcher{Label: m.Name, Op: m.Type.String(), Value: m.Value})
		}
		// Without an exact name the set of metrics used could not be
		// told, and the test could not check it.
		if s.Metric == "" {
			c.errorf("%s: selector %s names no metric exactly", where, vs.String())
			return nil
		}
		s.Matchers = append(s.Matchers, extra...)
		c.checkExternal(&s)
		c.addSelector(s)
		return nil
	})
}

func (c *checker) addSelector(s Selector) {
	key, _ := json.Marshal(s)
	if c.selectors[string(key)] {
		return
	}
	c.selectors[string(key)] = true
	c.metrics[s.Metric] = true
	c.report.Selectors = append(c.report.Selectors, s)
}

func (c *checker) file(path string) {
	c.report.Files = append(c.report.Files, path)
	f, err := os.Open(path)
	if err != nil {
		c.errorf("%w", err)
		return
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		c.errorf("%s: %w", path, err)
		return
	}
	if len(data) > maxFileBytes {
		c.errorf("%s: larger than %d bytes", path, maxFileBytes)
		return
	}
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".yaml", ".yml":
		c.rules(path, data)
	case ".json":
		c.dashboard(path, data)
	default:
		c.errorf("%s: unknown kind of file %q: .yaml or .yml (a PrometheusRule) or .json (a Grafana dashboard)", path, ext)
	}
}

func (c *checker) done() (*Report, error) {
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	for name := range c.metrics {
		if !c.recorded[name] {
			c.report.Metrics = append(c.report.Metrics, name)
		}
	}
	for name := range c.recorded {
		c.report.Recorded = append(c.report.Recorded, name)
	}
	slices.Sort(c.report.Metrics)
	slices.Sort(c.report.Recorded)
	return &c.report, nil
}

func main() {
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: promql [-runbooks docs/runbooks.md] FILE...  (.yaml/.yml: a PrometheusRule; .json: a Grafana dashboard)")
		flag.PrintDefaults()
	}
	runbooks := flag.String("runbooks", "", "the runbooks file each alert's runbook_url must name a section of (default: "+runbooksPath+" in the rules file's directory or the nearest above it)")
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	c := newChecker()
	c.runbooks = *runbooks
	for _, path := range flag.Args() {
		c.file(path)
	}
	report, err := c.done()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
