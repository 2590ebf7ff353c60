package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ruleDoc is a PrometheusRule with one alert of expression expr and
// runbook_url url ("" for none).
func ruleDoc(expr, url string) string {
	doc := `apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: t}
spec:
  groups:
  - name: t
    rules:
    - alert: KidTest
      expr: ` + expr + `
      for: 5m
      labels: {severity: warning}
      annotations:
        summary: s
        description: d
`
	if url != "" {
		doc += "        runbook_url: " + url + "\n"
	}
	return doc
}

// check runs the checker on a rules file written into a repository-like
// tree whose docs/runbooks.md has one section, "KidTest", and returns its
// errors ("" when it accepts the file) and report.
func check(t *testing.T, rules string) (string, *Report) {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "docs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "config", "prometheus"), 0o755); err != nil {
		t.Fatal(err)
	}
	runbooks := "# Runbooks\n\n```\n## KidInAFence\n```\n\n## KidTest\n\nWhat to do.\n"
	if err := os.WriteFile(filepath.Join(root, "docs", "runbooks.md"), []byte(runbooks), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "config", "prometheus", "rules.yaml")
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newChecker()
	c.file(path)
	r, err := c.done()
	if err != nil {
		return err.Error(), nil
	}
	return "", r
}

const (
	good = "https://github.com/kid-operator/kid-operator/blob/main/docs/runbooks.md#kidtest"
	expr = "max by (cluster, namespace, name) (kid_product_ready) == 0"
)

// runbook_url must name a section that docs/runbooks.md has.
func TestRunbookURL(t *testing.T) {
	if errs, _ := check(t, ruleDoc(expr, good)); errs != "" {
		t.Fatalf("a runbook_url of an existing section: %s", errs)
	}
	for name, tc := range map[string]struct{ url, want string }{
		"no runbook_url":   {"", "alert KidTest: needs a runbook_url annotation"},
		"missing section":  {strings.Replace(good, "#kidtest", "#kidother", 1), "has no section #kidother"},
		"a fenced heading": {strings.Replace(good, "#kidtest", "#kidinafence", 1), "has no section #kidinafence"},
		"no anchor":        {strings.TrimSuffix(good, "#kidtest"), "must be an https URL of docs/runbooks.md"},
		"another file":     {strings.Replace(good, "runbooks.md", "design.md", 1), "must be an https URL of docs/runbooks.md"},
		"plain http":       {strings.Replace(good, "https:", "http:", 1), "must be an https URL of docs/runbooks.md"},
	} {
		t.Run(name, func(t *testing.T) {
			errs, _ := check(t, ruleDoc(expr, tc.url))
			if !strings.Contains(errs, tc.want) {
				t.Errorf("errors %q, want %q", errs, tc.want)
			}
		})
	}
}

func TestAnchors(t *testing.T) {
	got := anchors([]byte("# Runbooks\n## `KidX` fires: what now?\n## Twice\n## Twice\n```sh\n# not a heading\n```\n"))
	for _, a := range []string{"runbooks", "kidx-fires-what-now", "twice", "twice-1"} {
		if !got[a] {
			t.Errorf("no anchor %q in %v", a, got)
		}
	}
	if got["not-a-heading"] {
		t.Error("a comment in a code block made an anchor")
	}
}

// Every aggregation of an alert keeps cluster and namespace; one of
// etcd's database alone keeps cluster.
func TestAlertsKeepClusterAndNamespace(t *testing.T) {
	for name, tc := range map[string]struct{ expr, want string }{
		"by both":                 {expr, ""},
		"without neither":         {"max without (pod) (kid_product_ready) == 0", ""},
		"no grouping":             {"max(kid_product_ready) == 0", "drops the cluster label"},
		"by name only":            {"max by (cluster, name) (kid_product_ready) == 0", "drops the namespace label"},
		"without namespace":       {"max without (namespace) (kid_product_ready) == 0", "drops the namespace label"},
		"etcd by cluster":         {"max by (cluster) (etcd_mvcc_db_total_size_in_bytes) > 0", ""},
		"etcd without cluster":    {"max(etcd_mvcc_db_total_size_in_bytes) > 0", "drops the cluster label"},
		"etcd beside an operator": {"max by (cluster) (etcd_mvcc_db_total_size_in_bytes * on () group_left kid_product_ready) > 0", "drops the namespace label"},
	} {
		t.Run(name, func(t *testing.T) {
			errs, _ := check(t, ruleDoc(tc.expr, good))
			if tc.want == "" && errs != "" || !strings.Contains(errs, tc.want) {
				t.Errorf("errors %q, want %q", errs, tc.want)
			}
		})
	}
}

// A metric of the allowlist is marked external, with its source, and a
// selector may match only the labels its source sets.
func TestExternalMetrics(t *testing.T) {
	errs, r := check(t, ruleDoc(`max by (cluster, namespace, pod) (kube_pod_container_status_restarts_total{container="manager"}) > 0`, good))
	if errs != "" {
		t.Fatal(errs)
	}
	if len(r.Selectors) != 1 || r.Selectors[0].External != "kube-state-metrics" {
		t.Errorf("selectors %+v, want one external, from kube-state-metrics", r.Selectors)
	}
	errs, _ = check(t, ruleDoc(`max by (cluster, namespace, pod) (kube_pod_container_status_restarts_total{deployment="kid"}) > 0`, good))
	if !strings.Contains(errs, `kube_pod_container_status_restarts_total (from kube-state-metrics) has no label "deployment"`) {
		t.Errorf("errors %q", errs)
	}
	// A name not on the list is the operator's to export: the report does
	// not mark it, and test/monitoring fails it when the operator does not
	// export it.
	errs, r = check(t, ruleDoc(`max by (cluster, namespace, pod) (kube_pod_container_status_restart_total) > 0`, good))
	if errs != "" || len(r.Selectors) != 1 || r.Selectors[0].External != "" {
		t.Errorf("a misspelt external name: %q, %+v", errs, r)
	}
}
