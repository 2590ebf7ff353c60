package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// readmeInstall is the README's install section, from its heading to the
// next heading outside a code block.
func readmeInstall(g Gomega) string {
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	g.Expect(err).NotTo(HaveOccurred())
	const heading = "### Installing: from `make image` to a running operator"
	var section []string
	in, fenced := false, false
	for line := range strings.SplitSeq(string(data), "\n") {
		switch {
		case line == heading:
			in = true
			continue
		case strings.HasPrefix(line, "```"):
			fenced = !fenced
		case in && !fenced && strings.HasPrefix(line, "#"):
			return strings.Join(section, "\n")
		}
		if in {
			section = append(section, line)
		}
	}
	g.Expect(in).To(BeTrue(), "README.md has no %q", heading)
	return strings.Join(section, "\n")
}

// makeCall finds `make` in a shell line; the words after it (but flags)
// that look like a target are the targets it runs, up to the first that
// does not (a variable assignment, the end of a $(...)).
var (
	makeCall = regexp.MustCompile(`\bmake\b`)
	target   = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
)

// The README's install section goes from `make image` to a running
// operator: every make target it names exists, the values file it writes
// renders with every helm install and upgrade it shows, and the values
// take effect (the image by digest, the Ingress, the ServiceMonitor).
func TestTheReadmeInstallIsTrueToTheChart(t *testing.T) {
	g := NewWithT(t)
	helm, err := helmBinary()
	g.Expect(err).NotTo(HaveOccurred())
	section := readmeInstall(g)
	doc := filepath.Join(t.TempDir(), "install.md")
	g.Expect(os.WriteFile(doc, []byte(section), 0o600)).To(Succeed())

	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	g.Expect(err).NotTo(HaveOccurred())

	yamlBlocks, err := codeBlocks(doc, "yaml")
	g.Expect(err).NotTo(HaveOccurred())
	valuesFile := filepath.Join(t.TempDir(), "kid-values.yaml")
	var products int
	for _, block := range yamlBlocks {
		if strings.HasPrefix(block, "# kid-values.yaml\n") {
			g.Expect(os.WriteFile(valuesFile, []byte(block), 0o600)).To(Succeed())
			continue
		}
		// Any other block is an object to apply: a KidProduct, whose
		// fields must be the API's.
		var p kidv1.KidProduct
		g.Expect(yaml.UnmarshalStrict([]byte(block), &p)).To(Succeed(), block)
		g.Expect(p.Kind).To(Equal("KidProduct"))
		products++
	}
	g.Expect(valuesFile).To(BeAnExistingFile(), "the section writes kid-values.yaml")
	g.Expect(products).To(Equal(1))

	// What make -s image-push printed, as the section captures it in REF.
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	sh, err := codeBlocks(doc, "sh")
	g.Expect(err).NotTo(HaveOccurred())
	var targets, rendered []string
	for _, block := range sh {
		for line := range strings.SplitSeq(block, "\n") {
			line, _, _ = strings.Cut(line, " #")
			for _, m := range makeCall.FindAllStringIndex(line, -1) {
				for _, w := range strings.Fields(line[m[0]+len("make"):]) {
					if strings.HasPrefix(w, "-") {
						continue
					}
					if !target.MatchString(w) {
						break // a variable (IMG=...), or the end of the command
					}
					g.Expect(regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(w)+`:`).Match(makefile)).To(BeTrue(), "make %s: no such target (%s)", w, line)
					targets = append(targets, w)
				}
			}
			line = strings.ReplaceAll(line, `"${REF#*@}"`, digest)
			words, err := shellWords(line)
			g.Expect(err).NotTo(HaveOccurred(), line)
			args, ok := helmTemplateArgs(words)
			if !ok {
				continue
			}
			g.Expect(args[2]).To(Equal(chart), "%s: the chart is %s", line, chart)
			for i, a := range args {
				if a == "kid-values.yaml" {
					args[i] = valuesFile
				}
			}
			out, err := run(nil, helm, args...)
			g.Expect(err).NotTo(HaveOccurred(), "README.md: %s", line)
			objs, err := decode(out)
			g.Expect(err).NotTo(HaveOccurred())
			kinds := map[string]bool{}
			for _, o := range objs {
				kinds[o.GetKind()] = true
			}
			g.Expect(kinds).To(HaveKey("CustomResourceDefinition"), "the chart installs the CRDs: %s", line)
			g.Expect(kinds).To(HaveKey("Ingress"), line)
			g.Expect(kinds).To(HaveKey("ServiceMonitor"), line)
			g.Expect(kinds).To(HaveKey("PrometheusRule"), line)
			g.Expect(string(out)).To(ContainSubstring("image: registry.example.com/games/kid-operator@"+digest), line)
			g.Expect(string(out)).To(ContainSubstring("kid.example.com"), line)
			rendered = append(rendered, words[1])
		}
	}
	g.Expect(targets).To(ContainElements("image", "image-push"))
	g.Expect(rendered).To(ContainElements("install", "upgrade"))
}
