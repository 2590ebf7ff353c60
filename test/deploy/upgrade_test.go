package deploy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// withoutYAMLKey removes the block of the key (a line `<indent>key:` and
// every line indented deeper after it) from YAML text.
func withoutYAMLKey(text, indent, key string) (string, bool) {
	lines := strings.Split(text, "\n")
	var out []string
	found, skipping := false, false
	for _, line := range lines {
		if skipping {
			if strings.TrimSpace(line) == "" || strings.HasPrefix(line, indent+" ") {
				continue
			}
			skipping = false
		}
		if line == indent+key+":" {
			found, skipping = true, true
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n"), found
}

// retentionProps returns the KidProduct CRD's spec.retention properties,
// as the API server has them.
func retentionProps() map[string]apiextensionsv1.JSONSchemaProps {
	GinkgoHelper()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	Expect(c.Get(ctx, client.ObjectKey{Name: "kidproducts.kid.dev"}, crd)).To(Succeed())
	return crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["retention"].Properties
}

var _ = Describe("helm upgrade", func() {
	// Chart 0.1.0 kept its CRDs in crds/, which Helm installs once and
	// never upgrades: its users kept a KidProduct schema without
	// retention.users, which the API server would prune from every
	// KidProduct. This spec installs such a chart over such a cluster,
	// adopts the CRDs as README ("Upgrading the chart") says, and upgrades
	// to this chart.
	It("updates the CRDs, and an uninstall keeps them", func() {
		helm, err := helmBinary()
		Expect(err).NotTo(HaveOccurred())
		kubectl, err := kubectlBinary()
		Expect(err).NotTo(HaveOccurred())
		Expect(kubeconfig).To(BeAnExistingFile())
		ns := newNamespace("")
		const rel = "kid-upgrade"
		helmIn := func(args ...string) string {
			GinkgoHelper()
			out, err := run(nil, helm, append(args, "--namespace", ns, "--kubeconfig", kubeconfig)...)
			Expect(err).NotTo(HaveOccurred())
			return string(out)
		}

		By("making chart 0.1.0: this one with its CRDs in crds/, the KidProduct's without retention.users")
		old := filepath.Join(GinkgoT().TempDir(), "kid-operator")
		_, err = run(nil, "cp", "-r", filepath.Join(root, chart), old)
		Expect(err).NotTo(HaveOccurred())
		Expect(os.RemoveAll(filepath.Join(old, "templates", "crds"))).To(Succeed())
		Expect(os.MkdirAll(filepath.Join(old, "crds"), 0o755)).To(Succeed())
		bases, err := filepath.Glob(filepath.Join(root, "config/crd/bases/*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		for _, path := range bases {
			raw, err := os.ReadFile(path)
			Expect(err).NotTo(HaveOccurred())
			text := string(raw)
			if filepath.Base(path) == "kid.dev_kidproducts.yaml" {
				var found bool
				text, found = withoutYAMLKey(text, strings.Repeat(" ", 18), "users")
				Expect(found).To(BeTrue(), "no retention.users in %s", path)
			}
			Expect(os.WriteFile(filepath.Join(old, "crds", filepath.Base(path)), []byte(text), 0o644)).To(Succeed())
		}

		By("leaving the cluster as chart 0.1.0's first install did: its CRDs, owned by no release")
		objs, err := decode(must(os.ReadFile(filepath.Join(old, "crds", "kid.dev_kidproducts.yaml"))))
		Expect(err).NotTo(HaveOccurred())
		oldSchema, err := typed[apiextensionsv1.CustomResourceDefinition](objs[0])
		Expect(err).NotTo(HaveOccurred())
		live := &apiextensionsv1.CustomResourceDefinition{}
		Expect(c.Get(ctx, client.ObjectKey{Name: "kidproducts.kid.dev"}, live)).To(Succeed())
		current := live.Spec.DeepCopy()
		DeferCleanup(func() {
			// Leave the CRDs as the suite installed them, whatever happened.
			for _, name := range []string{"kidproducts", "kidevents", "kidusers", "kidactions"} {
				_, _ = run(nil, kubectl, "--kubeconfig", kubeconfig, "label", "crd", name+".kid.dev", "app.kubernetes.io/managed-by-", "helm.sh/chart-",
					"app.kubernetes.io/name-", "app.kubernetes.io/instance-", "app.kubernetes.io/version-")
				_, _ = run(nil, kubectl, "--kubeconfig", kubeconfig, "annotate", "crd", name+".kid.dev", "meta.helm.sh/release-name-",
					"meta.helm.sh/release-namespace-", "helm.sh/resource-policy-")
			}
			crd := &apiextensionsv1.CustomResourceDefinition{}
			Expect(c.Get(ctx, client.ObjectKey{Name: "kidproducts.kid.dev"}, crd)).To(Succeed())
			crd.Spec = *current
			Expect(c.Update(ctx, crd)).To(Succeed())
		})
		live.Spec = oldSchema.Spec
		Expect(c.Update(ctx, live)).To(Succeed())
		Expect(retentionProps()).NotTo(HaveKey("users"))

		By("installing chart 0.1.0: Helm skips crds/, whose CRDs exist")
		fmt.Fprintf(GinkgoWriter, "%s\n", helmIn("install", rel, old))
		Expect(retentionProps()).NotTo(HaveKey("users"))

		By("adopting the CRDs into the release, as README says")
		for _, name := range []string{"kidproducts", "kidevents", "kidusers", "kidactions"} {
			_, err := run(nil, kubectl, "--kubeconfig", kubeconfig, "label", "crd", name+".kid.dev", "app.kubernetes.io/managed-by=Helm", "--overwrite")
			Expect(err).NotTo(HaveOccurred())
			_, err = run(nil, kubectl, "--kubeconfig", kubeconfig, "annotate", "crd", name+".kid.dev",
				"meta.helm.sh/release-name="+rel, "meta.helm.sh/release-namespace="+ns, "--overwrite")
			Expect(err).NotTo(HaveOccurred())
		}

		By("upgrading to this chart")
		fmt.Fprintf(GinkgoWriter, "%s\n", helmIn("upgrade", rel, filepath.Join(root, chart)))
		Expect(retentionProps()).To(HaveKey("users"), "helm upgrade left the old KidProduct schema")
		Expect(c.Get(ctx, client.ObjectKey{Name: "kidproducts.kid.dev"}, live)).To(Succeed())
		Expect(live.Annotations).To(HaveKeyWithValue("helm.sh/resource-policy", "keep"))
		Expect(live.Labels).To(HaveKeyWithValue("helm.sh/chart", HavePrefix("kid-operator-")))

		By("uninstalling: the CRDs stay")
		fmt.Fprintf(GinkgoWriter, "%s\n", helmIn("uninstall", rel))
		for _, name := range []string{"kidproducts", "kidevents", "kidusers", "kidactions"} {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			Expect(c.Get(ctx, client.ObjectKey{Name: name + ".kid.dev"}, crd)).To(Succeed())
			Expect(crd.DeletionTimestamp).To(BeNil(), name)
		}
	})
})

func must[T any](v T, err error) T {
	GinkgoHelper()
	Expect(err).NotTo(HaveOccurred())
	return v
}
