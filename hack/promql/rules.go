package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// promRule is the part of a PrometheusRule (monitoring.coreos.com/v1) the
// checker reads. Its spec.groups are Prometheus's own rule groups.
type promRule struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec yaml.Node `yaml:"spec"`
}

type ruleSpec struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        yaml.Node         `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// severities are the values of the severity label Alertmanager routes on.
var severities = map[string]bool{"critical": true, "warning": true, "info": true}

// annotations every alert carries: what fired, what it means, and where
// the runbook says what to do (checked by runbookURL).
var annotations = []string{"summary", "description", "runbook_url"}

// rules checks every PrometheusRule document of a file.
func (c *checker) rules(path string, data []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for doc := 1; ; doc++ {
		var pr promRule
		err := dec.Decode(&pr)
		if errors.Is(err, io.EOF) {
			if doc == 1 {
				c.errorf("%s: no document", path)
			}
			return
		}
		if err != nil {
			c.errorf("%s: %w", path, err)
			return
		}
		c.rule(path, &pr)
	}
}

func (c *checker) rule(path string, pr *promRule) {
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" {
		c.errorf("%s: %s %s is not a monitoring.coreos.com/v1 PrometheusRule", path, pr.APIVersion, pr.Kind)
		return
	}
	if pr.Metadata.Name == "" {
		c.errorf("%s: the PrometheusRule has no metadata.name", path)
	}
	var spec ruleSpec
	if err := pr.Spec.Decode(&spec); err != nil {
		c.errorf("%s: spec: %w", path, err)
		return
	}
	if len(spec.Groups) == 0 {
		c.errorf("%s: spec.groups is empty", path)
		return
	}
	before := len(c.errs)
	for _, g := range spec.Groups {
		for _, r := range g.Rules {
			name := "alert " + r.Alert
			if r.Record != "" {
				name = "record " + r.Record
				c.recorded[r.Record] = true
			}
			where := fmt.Sprintf("%s:%d: group %s, %s", path, r.Expr.Line, g.Name, name)
			c.expr(where, r.Expr.Value)
			if r.Alert == "" {
				continue
			}
			c.keepsLabels(where, r.Expr.Value)
			if d, err := model.ParseDuration(r.For); err != nil || d <= 0 {
				c.errorf("%s: needs a for: of more than 0s, so that one bad scrape does not page anyone (got %q)", where, r.For)
			}
			if !severities[r.Labels["severity"]] {
				c.errorf("%s: needs a severity label: critical, warning or info (got %q)", where, r.Labels["severity"])
			}
			for _, a := range annotations {
				if r.Annotations[a] == "" {
					c.errorf("%s: needs a %s annotation", where, a)
				}
			}
			if u := r.Annotations["runbook_url"]; u != "" {
				c.runbookURL(where, path, u)
			}
		}
	}
	if len(c.errs) > before {
		// The expressions' errors, above, name their lines; Prometheus's
		// own check would repeat them without.
		return
	}
	// Then everything else Prometheus checks when it loads the groups:
	// names, labels, durations, and that every annotation's template
	// parses. Unknown fields are errors (a misspelt "annotations" would
	// otherwise vanish).
	groups, err := yaml.Marshal(&pr.Spec)
	if err != nil {
		c.errorf("%s: %w", path, err)
		return
	}
	_, errs := rulefmt.Parse(groups, false, model.UTF8Validation, c.parser, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		var re *rulefmt.Error
		if errors.As(err, &re) {
			// Its positions are within spec, not the file: name the rule.
			c.errorf("%s: group %s, rule %d (%s): %w", path, re.Group, re.Rule, re.RuleName, errors.Unwrap(&re.Err))
			continue
		}
		c.errorf("%s: spec: %w", path, err)
	}
}

// keptLabels are what every alert keeps through its aggregations, so that
// Alertmanager can route and group by them: several clusters' alerts in
// one Alertmanager, a team per namespace.
var keptLabels = []string{"cluster", "namespace"}

// keepsLabels checks that each aggregation of an alert's expression keeps
// keptLabels: by (...) naming them, or without (...) naming neither. An
// aggregation of cluster-scoped metrics only (externalMetrics) keeps
// cluster alone.
func (c *checker) keepsLabels(where, input string) {
	e, err := c.parser.ParseExpr(input)
	if err != nil {
		return // expr reported it
	}
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		agg, ok := node.(*parser.AggregateExpr)
		if !ok {
			return nil
		}
		want := keptLabels
		if clusterScopedOnly(agg.Expr) {
			want = []string{"cluster"}
		}
		for _, l := range want {
			if slices.Contains(agg.Grouping, l) == agg.Without {
				c.errorf("%s: %s drops the %s label; every alert keeps %v (by (%s, ...))", where, agg.String(), l, want, strings.Join(want, ", "))
			}
		}
		return nil
	})
}

// clusterScopedOnly reports whether every series e selects is of a
// cluster-scoped external metric.
func clusterScopedOnly(e parser.Expr) bool {
	only, any := true, false
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			any = true
			only = only && externalMetrics[vs.Name].ClusterScoped
		}
		return nil
	})
	return any && only
}
