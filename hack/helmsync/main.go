// Command helmsync keeps the Helm chart (config/helm/kid-operator) in step
// with the manifests controller-gen generates, so that the chart and
// config/default never grant or define different things:
//
//   - config/crd/bases/*.yaml become templates/crds/*.yaml, each wrapped in
//     `if .Values.crds.enabled` and given the chart's labels and, with
//     crds.keep, `helm.sh/resource-policy: keep`. Templates, not crds/:
//     Helm installs crds/ once and never upgrades it, so a changed schema
//     would never reach a cluster through `helm upgrade` (cert-manager's
//     chart does the same);
//   - config/prometheus/kid-operator-rules.yaml and
//     config/grafana/kid-operator-dashboard.json are copied into the
//     chart's files/, which templates read with .Files.Get (they hold {{ }}
//     of their own, which Helm must not read as a template);
//   - the rules of the ClusterRoles in config/rbac (the manager's, generated
//     from the code's RBAC markers, the receiver's and the two metrics
//     roles) become named templates in templates/_rbac_rules.tpl, which the
//     chart's hand-written RBAC templates include.
//
// `make manifests` runs it after controller-gen, and `make verify-generated`
// fails when its output is not committed. Run it from the repository root.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

const chartDir = "config/helm/kid-operator"

// roles are the ClusterRoles of config/rbac the chart grants, each with the
// name of the template that holds its rules.
var roles = []struct{ file, define string }{
	{"config/rbac/role.yaml", "kid-operator.rules.manager"},
	{"config/rbac/receiver_role.yaml", "kid-operator.rules.receiver"},
	{"config/rbac/metrics_auth_role.yaml", "kid-operator.rules.metricsAuth"},
	{"config/rbac/metrics_reader_role.yaml", "kid-operator.rules.metricsReader"},
}

func main() {
	root := flag.String("root", ".", "the repository's root")
	flag.Parse()
	if err := run(*root); err != nil {
		fmt.Fprintln(os.Stderr, "helmsync:", err)
		os.Exit(1)
	}
}

// files are copied into the chart's files/ as they are.
var files = []string{
	"config/prometheus/kid-operator-rules.yaml",
	"config/grafana/kid-operator-dashboard.json",
}

func run(root string) error {
	if err := syncCRDs(root); err != nil {
		return err
	}
	if err := syncFiles(root); err != nil {
		return err
	}
	return syncRules(root)
}

// syncCRDs makes templates/crds hold exactly the CRDs of config/crd/bases,
// each as a template (crdTemplate), and removes any that no longer exist.
// The chart's crds/ directory, where earlier versions kept them, must stay
// away: Helm would install those first and never upgrade them.
func syncCRDs(root string) error {
	src := filepath.Join(root, "config/crd/bases")
	dst := filepath.Join(root, chartDir, "templates", "crds")
	if err := os.RemoveAll(filepath.Join(root, chartDir, "crds")); err != nil {
		return err
	}
	bases, err := filepath.Glob(filepath.Join(src, "*.yaml"))
	if err != nil {
		return err
	}
	if len(bases) == 0 {
		return fmt.Errorf("no CRDs in %s: run controller-gen first (make manifests)", src)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	want := map[string]bool{}
	for _, path := range bases {
		name := filepath.Base(path)
		want[name] = true
		crd, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		tpl, err := crdTemplate(name, crd)
		if err != nil {
			return err
		}
		if err := writeIfChanged(filepath.Join(dst, name), tpl); err != nil {
			return err
		}
	}
	existing, err := filepath.Glob(filepath.Join(dst, "*"))
	if err != nil {
		return err
	}
	for _, path := range existing {
		if !want[filepath.Base(path)] {
			if err := os.Remove(path); err != nil {
				return err
			}
		}
	}
	return nil
}

// crdMetadata is what the chart adds to each CRD's metadata, right after
// `metadata:`: the chart's labels (so `helm upgrade` finds its own) and the
// keep annotation, which tells Helm never to delete the CRD (an uninstall,
// or crds.enabled turned off, would otherwise delete every KidProduct,
// KidEvent and KidUser with it).
const crdMetadata = `metadata:
  labels:
    {{- include "kid-operator.labels" . | nindent 4 }}
  annotations:
    {{- if .Values.crds.keep }}
    helm.sh/resource-policy: keep
    {{- end }}
`

// crdTemplate turns a CRD as controller-gen writes it into a template:
// rendered only with crds.enabled, with crdMetadata merged into its
// metadata. controller-gen's CRDs start `metadata:` then `  annotations:`
// (its version); anything else is refused rather than guessed at.
func crdTemplate(name string, crd []byte) ([]byte, error) {
	if bytes.Contains(crd, []byte("{{")) {
		return nil, fmt.Errorf("config/crd/bases/%s contains {{, which Helm would read as a template", name)
	}
	const want = "\nmetadata:\n  annotations:\n"
	if bytes.Count(crd, []byte(want)) != 1 {
		return nil, fmt.Errorf("config/crd/bases/%s: want one %q, as controller-gen writes it", name, want)
	}
	body := bytes.Replace(bytes.TrimPrefix(crd, []byte("---\n")), []byte(want[1:]), []byte(crdMetadata), 1)
	var out bytes.Buffer
	fmt.Fprintf(&out, "{{- /* Generated by hack/helmsync from config/crd/bases/%s (make manifests). Do not edit. */}}\n", name)
	out.WriteString("{{- if .Values.crds.enabled }}\n")
	out.Write(body)
	out.WriteString("{{- end }}\n")
	return out.Bytes(), nil
}

// syncFiles copies files into the chart's files/, byte for byte.
func syncFiles(root string) error {
	dst := filepath.Join(root, chartDir, "files")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return err
		}
		if err := writeIfChanged(filepath.Join(dst, filepath.Base(f)), data); err != nil {
			return err
		}
	}
	return nil
}

// syncRules writes templates/_rbac_rules.tpl: one named template per
// ClusterRole of config/rbac with its rules, plus two the chart needs when
// it grants Roles in watched namespaces instead: the manager's rules
// without leader election's, and leader election's alone (for the release
// namespace), split from the generated role so that a new marker reaches
// both.
func syncRules(root string) error {
	var out bytes.Buffer
	out.WriteString("{{/*\nGenerated by hack/helmsync from config/rbac (make manifests). Do not edit:\n" +
		"change the RBAC markers in the code, or the roles in config/rbac, and run make manifests.\n*/}}\n")
	for _, r := range roles {
		rules, err := readRules(filepath.Join(root, r.file))
		if err != nil {
			return err
		}
		if err := writeDefine(&out, r.define, r.file, rules); err != nil {
			return err
		}
		if r.define != "kid-operator.rules.manager" {
			continue
		}
		election, rest, err := splitLeaderElection(rules)
		if err != nil {
			return fmt.Errorf("%s: %w", r.file, err)
		}
		if err := writeDefine(&out, "kid-operator.rules.managerNamespaced", r.file+", without leader election's rules", rest); err != nil {
			return err
		}
		if err := writeDefine(&out, "kid-operator.rules.leaderElection", r.file+", leader election's rules (leases, events)", election); err != nil {
			return err
		}
	}
	return writeIfChanged(filepath.Join(root, chartDir, "templates", "_rbac_rules.tpl"), out.Bytes())
}

func readRules(path string) ([]rbacv1.PolicyRule, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var role rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(bytes.TrimPrefix(data, []byte("---\n")), &role); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if role.Kind != "ClusterRole" || len(role.Rules) == 0 {
		return nil, fmt.Errorf("%s: want one ClusterRole with rules, found kind %q with %d rules", path, role.Kind, len(role.Rules))
	}
	return role.Rules, nil
}

// splitLeaderElection separates the rules on leases (which the manager
// needs only in its own namespace, for leader election) from the others,
// and collects the lease and event rules as the leader election Role.
func splitLeaderElection(rules []rbacv1.PolicyRule) (election, rest []rbacv1.PolicyRule, err error) {
	for _, rule := range rules {
		leases := slices.Contains(rule.Resources, "leases")
		events := slices.Contains(rule.Resources, "events")
		if (leases || events) && len(rule.Resources) > 1 {
			return nil, nil, fmt.Errorf("a rule grants leases or events together with %v: split it so that leader election's rules stand alone", rule.Resources)
		}
		if events || leases {
			election = append(election, rule)
		}
		if !leases {
			rest = append(rest, rule)
		}
	}
	if len(election) == 0 {
		return nil, nil, fmt.Errorf("no rule on leases: the manager cannot elect a leader")
	}
	return election, rest, nil
}

func writeDefine(out *bytes.Buffer, name, source string, rules []rbacv1.PolicyRule) error {
	body, err := yaml.Marshal(rules)
	if err != nil {
		return err
	}
	if strings.Contains(string(body), "{{") {
		return fmt.Errorf("%s: a rule contains {{, which Helm would read as a template", source)
	}
	fmt.Fprintf(out, "\n{{/* From %s. */}}\n{{- define %q -}}\n%s{{- end }}\n", source, name, body)
	return nil
}

// writeIfChanged leaves a file's modification time alone when its content
// is already right, so make and editors see no change.
func writeIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return os.WriteFile(path, data, 0o644)
}
