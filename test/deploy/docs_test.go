package deploy_test

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// codeBlocks returns the fenced code blocks of a Markdown file with the
// given info string (sh, yaml).
func codeBlocks(path, lang string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var blocks []string
	var cur []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && line == "```"+lang:
			in, cur = true, nil
		case in && line == "```":
			blocks = append(blocks, strings.Join(cur, "\n"))
			in = false
		case in:
			cur = append(cur, line)
		}
	}
	return blocks, sc.Err()
}

// helmTemplateArgs turns a documented `helm install|upgrade RELEASE CHART
// flags` into `helm template` arguments: the values flags kept, the flags
// that only matter to a cluster (namespace, --create-namespace,
// --reuse-values) left out.
func helmTemplateArgs(words []string) ([]string, bool) {
	if len(words) < 4 || words[0] != "helm" || (words[1] != "install" && words[1] != "upgrade") {
		return nil, false
	}
	args := []string{"template", words[2], words[3], "--namespace", releaseNamespace}
	for i := 4; i < len(words); i++ {
		switch w := words[i]; w {
		case "-n", "--namespace":
			i++
		case "--create-namespace", "--reuse-values":
		default:
			args = append(args, w)
		}
	}
	return args, true
}

// docs/getting-started.md must stay true to the chart: every helm command
// in it renders, and so do the values its Flux HelmRelease and Argo CD
// Application give the chart.
func TestGettingStartedUsesTheChartsRealValues(t *testing.T) {
	g := NewWithT(t)
	helm, err := helmBinary()
	g.Expect(err).NotTo(HaveOccurred())
	doc := filepath.Join(root, "docs", "getting-started.md")

	sh, err := codeBlocks(doc, "sh")
	g.Expect(err).NotTo(HaveOccurred())
	var commands int
	for _, block := range sh {
		for line := range strings.SplitSeq(block, "\n") {
			line, _, _ = strings.Cut(line, " #")
			words, err := shellWords(line)
			g.Expect(err).NotTo(HaveOccurred(), line)
			args, ok := helmTemplateArgs(words)
			if !ok {
				continue
			}
			commands++
			g.Expect(args[2]).To(Equal(chart), "%s: the chart is %s", line, chart)
			_, err = run(nil, helm, args...)
			g.Expect(err).NotTo(HaveOccurred(), "docs/getting-started.md: %s", line)
		}
	}
	g.Expect(commands).To(BeNumerically(">=", 2), "the page shows helm install and helm upgrade")

	yamlBlocks, err := codeBlocks(doc, "yaml")
	g.Expect(err).NotTo(HaveOccurred())
	var values []string
	for _, block := range yamlBlocks {
		objs, err := decode([]byte(block))
		g.Expect(err).NotTo(HaveOccurred(), block)
		for _, o := range objs {
			var v map[string]any
			switch o.GetKind() {
			case "HelmRelease":
				chartPath, _, _ := unstructured.NestedString(o.Object, "spec", "chart", "spec", "chart")
				g.Expect(chartPath).To(Equal("./" + chart))
				v, _, _ = unstructured.NestedMap(o.Object, "spec", "values")
			case "Application":
				if path, _, _ := unstructured.NestedString(o.Object, "spec", "source", "path"); path != chart {
					continue
				}
				v, _, _ = unstructured.NestedMap(o.Object, "spec", "source", "helm", "valuesObject")
			default:
				continue
			}
			g.Expect(v).NotTo(BeEmpty(), "%s %s gives the chart no values", o.GetKind(), o.GetName())
			data, err := yaml.Marshal(v)
			g.Expect(err).NotTo(HaveOccurred())
			file := filepath.Join(t.TempDir(), o.GetKind()+".yaml")
			g.Expect(os.WriteFile(file, data, 0o600)).To(Succeed())
			_, err = renderChart(releaseNamespace, "-f", file)
			g.Expect(err).NotTo(HaveOccurred(), "the values of the %s in docs/getting-started.md", o.GetKind())
			values = append(values, o.GetKind())
		}
	}
	slices.Sort(values)
	g.Expect(values).To(Equal([]string{"Application", "HelmRelease"}))
}
