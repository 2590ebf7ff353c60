package deploy_test

import (
	"fmt"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const fieldOwner = client.FieldOwner("kid-operator-deploytest")

// newNamespace creates a namespace for real (the dry runs need it to
// exist) under the restricted Pod Security Standard, enforced and warned.
func newNamespace(name string) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
		"pod-security.kubernetes.io/warn":    "restricted",
	}}}
	if name == "" {
		ns.GenerateName = "kid-chart-"
	} else {
		ns.Name = name
	}
	Expect(c.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// dryRunApply sends every object to the API server with a server-side dry
// run: created with strict field validation (an unknown field is an
// error), or, for the CRDs the control plane already has, applied. It
// returns the objects whose kind the API server does not serve, which it
// cannot check (a ServiceMonitor without prometheus-operator's CRD).
func dryRunApply(objs []*unstructured.Unstructured) (skipped []string) {
	GinkgoHelper()
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		id := fmt.Sprintf("%s %s/%s", gvk.Kind, o.GetNamespace(), o.GetName())
		_, err := c.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
		if meta.IsNoMatchError(err) {
			skipped = append(skipped, gvk.GroupVersion().String()+" "+id)
			continue
		}
		Expect(err).NotTo(HaveOccurred(), id)
		if gvk.Kind == "CustomResourceDefinition" {
			Expect(c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()), client.DryRunAll, fieldOwner, client.ForceOwnership)).
				To(Succeed(), id)
			continue
		}
		Expect(c.Create(ctx, o.DeepCopy(), client.DryRunAll, client.FieldValidation("Strict"), fieldOwner)).To(Succeed(), id)
	}
	if len(skipped) > 0 {
		fmt.Fprintf(GinkgoWriter, "not checked, the control plane serves no such kind: %s\n", strings.Join(skipped, ", "))
		AddReportEntry("not checked (kind not served)", strings.Join(skipped, ", "))
	}
	return skipped
}

// podsOf returns a Pod for each Deployment's template, as its ReplicaSet
// would create it.
func podsOf(objs []*unstructured.Unstructured) []*corev1.Pod {
	GinkgoHelper()
	var pods []*corev1.Pod
	for _, o := range ofKind(objs, "Deployment") {
		d, err := typed[appsv1.Deployment](o)
		Expect(err).NotTo(HaveOccurred())
		pods = append(pods, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-pod", Namespace: d.Namespace, Labels: d.Spec.Template.Labels},
			Spec:       d.Spec.Template.Spec,
		})
	}
	Expect(pods).To(HaveLen(2))
	return pods
}

var _ = Describe("The Helm chart", func() {
	// Each rendering is applied (dry run) to a release namespace of its
	// own, which enforces the restricted Pod Security Standard.
	DescribeTable("is accepted by the API server",
		func(values []string, wantSkipped []string, watched []string) {
			ns := newNamespace("")
			for _, w := range watched {
				newNamespace(w)
			}
			objs, err := renderChart(ns, values...)
			Expect(err).NotTo(HaveOccurred())
			warnings.take()

			skipped := dryRunApply(objs)
			Expect(skipped).To(HaveLen(len(wantSkipped)))
			for i, want := range wantSkipped {
				Expect(skipped[i]).To(HavePrefix(want))
			}
			Expect(warnings.take()).To(BeEmpty(), "the API server warned about the chart's objects")

			By("running its pods under the restricted Pod Security Standard")
			// The ServiceAccounts exist for real, so the pods are judged on
			// their security alone.
			for _, sa := range ofKind(objs, "ServiceAccount") {
				Expect(c.Create(ctx, sa.DeepCopy())).To(Succeed())
			}
			// And the PriorityClasses they name (the API server refuses a
			// pod naming one that does not exist).
			for _, pod := range podsOf(objs) {
				if name := pod.Spec.PriorityClassName; name != "" {
					pc := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Value: 1000000}
					Expect(client.IgnoreAlreadyExists(c.Create(ctx, pc))).To(Succeed())
				}
			}
			for _, pod := range podsOf(objs) {
				Expect(c.Create(ctx, pod, client.DryRunAll, client.FieldValidation("Strict"))).To(Succeed(), pod.Name)
			}
			Expect(warnings.take()).To(BeEmpty())
		},
		Entry("with the default values", nil, nil, nil),
		Entry("with every option on (Ingress, NetworkPolicy, products and their Secret, metrics readers and certificate, "+
			"the scraper's token Secret, the dashboard, extra env and volumes, a priority class; "+
			"the PrometheusRule and the ServiceMonitor are not checked: the control plane has no prometheus-operator CRDs)",
			[]string{"-f", filepath.Join(chart, "ci", "all-on-values.yaml")},
			[]string{"monitoring.coreos.com/v1 PrometheusRule ", "monitoring.coreos.com/v1 ServiceMonitor "}, nil),
		Entry("without the CRDs (crds.enabled=false)", []string{"--set", "crds.enabled=false"}, nil, nil),
		Entry("serving two namespaces, with Roles there",
			[]string{"--set", "watchNamespaces={kid-games,kid-arcade}", "--set", "products[0].name=demo", "--set", "products[0].namespace=kid-games",
				"--set", "products[0].spec.productId=11472", "--set", "products[0].spec.environment=test",
				"--set", "products[0].spec.webhook.secretRef.name=demo-webhook", "--set", "products[0].webhookSecret=s3cret"},
			nil, []string{"kid-games", "kid-arcade"}),
	)

	It("would have its pods refused if they broke the restricted Pod Security Standard", func() {
		// The check above can fail: the same pod, with one capability
		// added that the restricted standard does not allow.
		ns := newNamespace("")
		objs, err := renderChart(ns)
		Expect(err).NotTo(HaveOccurred())
		for _, sa := range ofKind(objs, "ServiceAccount") {
			Expect(c.Create(ctx, sa.DeepCopy())).To(Succeed())
		}
		pod := podsOf(objs)[0]
		Expect(c.Create(ctx, pod.DeepCopy(), client.DryRunAll)).To(Succeed())
		pod.Spec.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		err = c.Create(ctx, pod, client.DryRunAll)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring(`violates PodSecurity "restricted`))
	})

	It("would have an unknown field refused", func() {
		// The strict validation of dryRunApply can fail too.
		ns := newNamespace("")
		objs, err := renderChart(ns)
		Expect(err).NotTo(HaveOccurred())
		d := find(objs, "Deployment", ns, "kid-operator-receiver").DeepCopy()
		Expect(unstructured.SetNestedField(d.Object, int64(30), "spec", "template", "spec", "terminationGracePeriod")).To(Succeed())
		err = c.Create(ctx, d, client.DryRunAll, client.FieldValidation("Strict"))
		Expect(err).To(MatchError(ContainSubstring(`unknown field "spec.template.spec.terminationGracePeriod"`)))
	})

	DescribeTable("prints where k-ID must deliver",
		func(values []string, want ...string) {
			helm, err := helmBinary()
			Expect(err).NotTo(HaveOccurred())
			Expect(kubeconfig).To(BeAnExistingFile())
			ns := newNamespace("")
			// The control plane has the CRDs, which no release owns: Helm
			// would refuse to take them over (README, "Upgrading the chart").
			out, err := run(nil, helm, append([]string{"install", release, chart, "--namespace", ns, "--kubeconfig", kubeconfig, "--dry-run=client",
				"--set", "crds.enabled=false"}, values...)...)
			Expect(err).NotTo(HaveOccurred())
			_, notes, found := strings.Cut(string(out), "\nNOTES:\n")
			Expect(found).To(BeTrue(), "helm printed no NOTES:\n%s", out)
			fmt.Fprintf(GinkgoWriter, "NOTES:\n%s\n", notes)
			for _, w := range want {
				Expect(notes).To(ContainSubstring(strings.ReplaceAll(w, "NS", ns)))
			}
		},
		Entry("with an Ingress and products: each product's URL",
			[]string{"--set", "ingress.enabled=true,ingress.host=kid.example.com,ingress.tls.secretName=kid-tls",
				"--set", "products[0].name=my-game,products[0].spec.productId=1,products[0].spec.environment=test,products[0].spec.webhook.secretRef.name=w"},
			"https://kid.example.com/webhooks/NS/my-game", "kubectl get kidproducts -A -o wide"),
		Entry("with neither: the URL's shape, a tunnel and how to create a product", nil,
			"https://<your HTTPS host>/webhooks/<namespace>/<product>", "cloudflared tunnel --url http://localhost:8080",
			"kubectl -n NS port-forward service/kid-operator-webhook 8080:80", "kind: KidProduct", "kubectl -n games create secret generic my-game-kid-webhook"),
	)
})

var _ = Describe("make deploy", Ordered, func() {
	const img = "registry.example.com/games/kid-operator:v9.9.9"
	var env []string

	BeforeEach(func() {
		// After the suite's BeforeEach, which writes the kubeconfig (a
		// BeforeAll would run before it).
		kubectl, err := kubectlBinary()
		Expect(err).NotTo(HaveOccurred())
		// Never an empty KUBECONFIG: kubectl would fall back to the
		// user's own cluster.
		Expect(kubeconfig).To(BeAnExistingFile())
		// The Makefile's KUBECTL, so that make deploy uses the kubectl
		// these tests use.
		env = []string{"KUBECONFIG=" + kubeconfig, "KUBECTL=" + kubectl}
	})

	It("applies config/default with the image IMG", func() {
		// -o manifests: the generated files are make verify-generated's
		// business; this is about what deploy applies.
		out, err := run(env, "make", "--no-print-directory", "-o", "manifests", "deploy", "IMG="+img)
		Expect(err).NotTo(HaveOccurred())
		fmt.Fprintf(GinkgoWriter, "%s", out)
		for _, name := range []string{"kid-operator-controller-manager", "kid-operator-receiver"} {
			d := &appsv1.Deployment{}
			Expect(c.Get(ctx, client.ObjectKey{Namespace: "kid-system", Name: name}, d)).To(Succeed())
			Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(img), name)
		}
		Expect(c.Get(ctx, client.ObjectKey{Name: "kid-operator-manager-role"}, &rbacv1.ClusterRole{})).To(Succeed())
	})

	It("undeploys it and keeps the CRDs and the namespace, and with them every product", func() {
		out, err := run(env, "make", "--no-print-directory", "undeploy")
		Expect(err).NotTo(HaveOccurred())
		fmt.Fprintf(GinkgoWriter, "%s", out)
		for _, name := range []string{"kid-operator-controller-manager", "kid-operator-receiver"} {
			err := c.Get(ctx, client.ObjectKey{Namespace: "kid-system", Name: name}, &appsv1.Deployment{})
			Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%s: %v", name, err)
		}
		err = c.Get(ctx, client.ObjectKey{Name: "kid-operator-manager-role"}, &rbacv1.ClusterRole{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%v", err)
		crds := &apiextensionsv1.CustomResourceDefinitionList{}
		Expect(c.List(ctx, crds)).To(Succeed())
		var names []string
		for _, crd := range crds.Items {
			if crd.DeletionTimestamp == nil {
				names = append(names, crd.Name)
			}
		}
		Expect(names).To(ContainElements("kidproducts.kid.dev", "kidevents.kid.dev", "kidusers.kid.dev", "kidactions.kid.dev"))
		ns := &corev1.Namespace{}
		Expect(c.Get(ctx, client.ObjectKey{Name: "kid-system"}, ns)).To(Succeed())
		Expect(ns.DeletionTimestamp).To(BeNil())
	})
})
