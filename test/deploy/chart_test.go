package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// The chart must deploy what config/default deploys: the same CRDs, the
// same RBAC rules, and both tiers' containers run the same way. Names line
// up when the release is kid-operator in kid-system.
func TestTheChartRendersWhatConfigDefaultApplies(t *testing.T) {
	g := NewWithT(t)
	fromChart, err := renderChart(releaseNamespace)
	g.Expect(err).NotTo(HaveOccurred())
	fromKustomize, err := renderKustomize("config/default")
	g.Expect(err).NotTo(HaveOccurred())

	t.Run("the CRDs are identical", func(t *testing.T) {
		g := NewWithT(t)
		want := ofKind(fromKustomize, "CustomResourceDefinition")
		g.Expect(want).To(HaveLen(4))
		g.Expect(ofKind(fromChart, "CustomResourceDefinition")).To(HaveLen(len(want)))
		for _, crd := range want {
			got := find(fromChart, "CustomResourceDefinition", "*", crd.GetName())
			g.Expect(got).NotTo(BeNil(), "the chart has no CRD %s: run make manifests", crd.GetName())
			// What the chart adds: its labels, and the keep annotation.
			g.Expect(got.GetLabels()).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "Helm"))
			g.Expect(got.GetAnnotations()).To(HaveKeyWithValue("helm.sh/resource-policy", "keep"), "CRD %s", crd.GetName())
			got = got.DeepCopy()
			got.SetLabels(nil)
			annotations := got.GetAnnotations()
			delete(annotations, "helm.sh/resource-policy")
			got.SetAnnotations(annotations)
			g.Expect(got.Object).To(Equal(crd.Object), "CRD %s differs from config/crd/bases: run make manifests", crd.GetName())
		}
	})

	t.Run("the ClusterRoles grant identical rules to the same ServiceAccounts", func(t *testing.T) {
		g := NewWithT(t)
		roles := ofKind(fromKustomize, "ClusterRole")
		g.Expect(roles).To(HaveLen(4))
		for _, want := range roles {
			wantRole, err := typed[rbacv1.ClusterRole](want)
			g.Expect(err).NotTo(HaveOccurred())
			gotRole, err := typed[rbacv1.ClusterRole](find(fromChart, "ClusterRole", "*", want.GetName()))
			g.Expect(err).NotTo(HaveOccurred(), "ClusterRole %s", want.GetName())
			g.Expect(gotRole.Rules).To(Equal(wantRole.Rules), "ClusterRole %s", want.GetName())
		}
		for _, want := range ofKind(fromKustomize, "ClusterRoleBinding") {
			wantBinding, err := typed[rbacv1.ClusterRoleBinding](want)
			g.Expect(err).NotTo(HaveOccurred())
			gotBinding, err := typed[rbacv1.ClusterRoleBinding](find(fromChart, "ClusterRoleBinding", "*", want.GetName()))
			g.Expect(err).NotTo(HaveOccurred(), "ClusterRoleBinding %s", want.GetName())
			g.Expect(gotBinding.RoleRef).To(Equal(wantBinding.RoleRef), "ClusterRoleBinding %s", want.GetName())
			g.Expect(gotBinding.Subjects).To(ConsistOf(wantBinding.Subjects), "ClusterRoleBinding %s", want.GetName())
		}
	})

	for _, name := range []string{"kid-operator-controller-manager", "kid-operator-receiver"} {
		t.Run("deployment "+name+" runs its containers alike", func(t *testing.T) {
			g := NewWithT(t)
			want, err := typed[appsv1.Deployment](find(fromKustomize, "Deployment", releaseNamespace, name))
			g.Expect(err).NotTo(HaveOccurred())
			got, err := typed[appsv1.Deployment](find(fromChart, "Deployment", releaseNamespace, name))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got.Spec.Replicas).To(Equal(want.Spec.Replicas))
			wantPod, gotPod := want.Spec.Template.Spec, got.Spec.Template.Spec
			g.Expect(gotPod.ServiceAccountName).To(Equal(wantPod.ServiceAccountName))
			g.Expect(gotPod.SecurityContext).To(Equal(wantPod.SecurityContext))
			g.Expect(gotPod.TerminationGracePeriodSeconds).To(Equal(wantPod.TerminationGracePeriodSeconds))
			g.Expect(gotPod.Containers).To(HaveLen(len(wantPod.Containers)))
			for i, w := range wantPod.Containers {
				c := gotPod.Containers[i]
				g.Expect(c.Name).To(Equal(w.Name))
				g.Expect(c.Args).To(Equal(w.Args), "container %s's args", w.Name)
				g.Expect(c.Env).To(Equal(w.Env), "container %s's env", w.Name)
				g.Expect(c.Ports).To(Equal(w.Ports), "container %s's ports", w.Name)
				g.Expect(c.LivenessProbe).To(Equal(w.LivenessProbe), "container %s's liveness probe", w.Name)
				g.Expect(c.ReadinessProbe).To(Equal(w.ReadinessProbe), "container %s's readiness probe", w.Name)
				g.Expect(c.Resources).To(Equal(w.Resources), "container %s's resources", w.Name)
				g.Expect(c.SecurityContext).To(Equal(w.SecurityContext), "container %s's security context", w.Name)
				repo, _, _ := strings.Cut(w.Image, ":")
				g.Expect(c.Image).To(HavePrefix(repo+":"), "container %s's image repository", w.Name)
			}
		})
	}

	t.Run("the webhook Service is the same", func(t *testing.T) {
		g := NewWithT(t)
		want, err := typed[corev1.Service](find(fromKustomize, "Service", releaseNamespace, "kid-operator-webhook"))
		g.Expect(err).NotTo(HaveOccurred())
		got, err := typed[corev1.Service](find(fromChart, "Service", releaseNamespace, "kid-operator-webhook"))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(got.Spec.Ports).To(Equal(want.Spec.Ports))
	})
}

func rulesOf(t *testing.T, path string) []rbacv1.PolicyRule {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(raw, &role); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return role.Rules
}

func TestWithWatchNamespacesTheChartGrantsRolesThereOnly(t *testing.T) {
	g := NewWithT(t)
	objs, err := renderChart(releaseNamespace, "--set", "watchNamespaces={games,arcade}")
	g.Expect(err).NotTo(HaveOccurred())

	isLease := func(s string) bool { return strings.HasPrefix(s, "coordination.k8s.io/leases:") }
	manager := testenv.Grants(rulesOf(t, "config/rbac/role.yaml"))
	g.Expect(slices.ContainsFunc(manager, isLease)).To(BeTrue())
	withoutLeases := slices.DeleteFunc(slices.Clone(manager), isLease)
	receiver := testenv.Grants(rulesOf(t, "config/rbac/receiver_role.yaml"))

	for _, name := range []string{"kid-operator-manager-role", "kid-operator-receiver-role"} {
		g.Expect(find(objs, "ClusterRole", "*", name)).To(BeNil(), "%s is cluster-wide although watchNamespaces is set", name)
	}
	for _, r := range ofKind(objs, "ClusterRole") {
		role, err := typed[rbacv1.ClusterRole](r)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(testenv.Grants(role.Rules)).NotTo(ContainElement(HavePrefix("/secrets:")), "ClusterRole %s grants Secrets although watchNamespaces is set", r.GetName())
	}
	for _, b := range ofKind(objs, "ClusterRoleBinding") {
		g.Expect(b.GetName()).To(Or(Equal("kid-operator-metrics-auth-rolebinding"), Equal("kid-operator-metrics-reader-rolebinding")))
	}
	for _, ns := range []string{"games", "arcade"} {
		role, err := typed[rbacv1.Role](find(objs, "Role", ns, "kid-operator-controller-manager"))
		g.Expect(err).NotTo(HaveOccurred(), "the manager's Role in %s", ns)
		g.Expect(testenv.Grants(role.Rules)).To(Equal(withoutLeases), "the manager's Role in %s grants what the markers grant, leader election aside", ns)
		role, err = typed[rbacv1.Role](find(objs, "Role", ns, "kid-operator-receiver"))
		g.Expect(err).NotTo(HaveOccurred(), "the receiver's Role in %s", ns)
		g.Expect(testenv.Grants(role.Rules)).To(Equal(receiver))
		for _, sa := range []string{"kid-operator-controller-manager", "kid-operator-receiver"} {
			b, err := typed[rbacv1.RoleBinding](find(objs, "RoleBinding", ns, sa))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(b.RoleRef.Name).To(Equal(sa))
			g.Expect(b.Subjects).To(ConsistOf(rbacv1.Subject{Kind: "ServiceAccount", Name: sa, Namespace: releaseNamespace}))
		}
	}
	election, err := typed[rbacv1.Role](find(objs, "Role", releaseNamespace, "kid-operator-leader-election-role"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(slices.ContainsFunc(testenv.Grants(election.Rules), isLease)).To(BeTrue(), "leader election needs leases in the release namespace")
	g.Expect(find(objs, "Role", "*", "kid-operator-controller-manager").GetNamespace()).NotTo(Equal(releaseNamespace))

	for _, name := range []string{"kid-operator-controller-manager", "kid-operator-receiver"} {
		d, err := typed[appsv1.Deployment](find(objs, "Deployment", releaseNamespace, name))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(d.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--watch-namespaces=games,arcade"), name)
	}
}

func TestEveryOptionOnRendersWhatItSays(t *testing.T) {
	g := NewWithT(t)
	objs, err := renderChart("games", "-f", filepath.Join(chart, "ci", "all-on-values.yaml"))
	g.Expect(err).NotTo(HaveOccurred())

	manager, err := typed[appsv1.Deployment](find(objs, "Deployment", "games", "kid-operator-controller-manager"))
	g.Expect(err).NotTo(HaveOccurred())
	c := manager.Spec.Template.Spec.Containers[0]
	g.Expect(c.Image).To(Equal("registry.example.com/games/kid-operator:v0.1.0-test"))
	g.Expect(*manager.Spec.Replicas).To(BeEquivalentTo(3))
	g.Expect(c.Args).To(ContainElements("--leader-elect", "--leader-elect-lease-duration=20s", "--leader-elect-renew-deadline=15s",
		"--leader-elect-retry-period=3s", "--metrics-cert-dir=/etc/kid-operator/metrics-certs",
		"--outbound-allow-hosts=backend.games.svc.cluster.local"))
	receiver, err := typed[appsv1.Deployment](find(objs, "Deployment", "games", "kid-operator-receiver"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(receiver.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--webhook-drain-period=10s"))
	g.Expect(*receiver.Spec.Template.Spec.TerminationGracePeriodSeconds).To(BeEquivalentTo(40))

	ing := find(objs, "Ingress", "games", "kid-operator-webhook")
	g.Expect(ing).NotTo(BeNil())
	class, _, _ := unstructured.NestedString(ing.Object, "spec", "ingressClassName")
	g.Expect(class).To(Equal("nginx"))
	g.Expect(ing.GetAnnotations()).To(HaveKeyWithValue("cert-manager.io/cluster-issuer", "letsencrypt"))
	tls, _, _ := unstructured.NestedSlice(ing.Object, "spec", "tls")
	g.Expect(tls).To(ConsistOf(HaveKeyWithValue("secretName", "kid-webhook-tls")))

	g.Expect(find(objs, "ServiceMonitor", "games", "kid-operator")).NotTo(BeNil())
	g.Expect(ofKind(objs, "NetworkPolicy")).To(HaveLen(2))
	g.Expect(ofKind(objs, "PodDisruptionBudget")).To(HaveLen(2))
	g.Expect(find(objs, "KidProduct", "games", "my-game")).NotTo(BeNil())
	g.Expect(find(objs, "KidProduct", "games", "other-game")).NotTo(BeNil())
	secret, err := typed[corev1.Secret](find(objs, "Secret", "games", "my-game-kid-webhook"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(secret.StringData).To(Equal(map[string]string{"current": "not-a-real-secret"}))
	g.Expect(secret.Labels).To(HaveKeyWithValue(kidv1.SecretLabel, kidv1.SecretLabelValue), "the operator uses only labelled Secrets")
	g.Expect(find(objs, "Secret", "games", "other-game-kid-webhook")).To(BeNil(), "no webhookSecret given: the user creates it")
	readers, err := typed[rbacv1.ClusterRoleBinding](find(objs, "ClusterRoleBinding", "*", "kid-operator-metrics-reader-rolebinding"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readers.Subjects).To(ConsistOf(rbacv1.Subject{Kind: "ServiceAccount", Name: "prometheus-k8s", Namespace: "monitoring"},
		rbacv1.Subject{Kind: "ServiceAccount", Name: "kid-operator-metrics-scraper", Namespace: "games"}))

	for _, name := range []string{"kid-operator-controller-manager", "kid-operator-receiver"} {
		d, err := typed[appsv1.Deployment](find(objs, "Deployment", "games", name))
		g.Expect(err).NotTo(HaveOccurred())
		pod := d.Spec.Template.Spec
		g.Expect(d.Spec.Template.Labels).To(HaveKeyWithValue("team", "games"), name)
		g.Expect(d.Spec.Selector.MatchLabels).NotTo(HaveKey("team"), "%s: pod labels stay out of the selector, which cannot change", name)
		g.Expect(pod.PriorityClassName).To(Equal("kid-operator-critical"), name)
		g.Expect(pod.Volumes).To(ContainElement(HaveField("Name", "ca-bundle")), name)
		g.Expect(pod.Containers[0].VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "ca-bundle", MountPath: "/etc/ssl/games", ReadOnly: true}), name)
		g.Expect(pod.Containers[0].VolumeMounts).To(ContainElement(HaveField("Name", "metrics-certs")), name)
		g.Expect(pod.Containers[0].Env[0].Name).To(Equal("GOMEMLIMIT"), name)
		g.Expect(pod.Containers[0].Env).To(HaveLen(2), name)
	}
	manager, err = typed[appsv1.Deployment](find(objs, "Deployment", "games", "kid-operator-controller-manager"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(manager.Spec.Template.Spec.Containers[0].Env[1]).To(Equal(corev1.EnvVar{Name: "HTTPS_PROXY", Value: "http://proxy.games.svc:3128"}))
	g.Expect(manager.Spec.Template.Spec.TopologySpreadConstraints).To(HaveExactElements(HaveField("TopologyKey", "topology.kubernetes.io/zone")),
		"a list of one's own replaces the default")
	g.Expect(manager.Spec.Template.Spec.TopologySpreadConstraints[0].LabelSelector.MatchLabels).To(HaveKeyWithValue("app.kubernetes.io/component", "manager"))
	g.Expect(receiver.Spec.Template.Spec.ServiceAccountName).To(Equal("kid-receiver"))
	g.Expect(find(objs, "ServiceAccount", "games", "kid-receiver")).NotTo(BeNil())
	binding, err := typed[rbacv1.ClusterRoleBinding](find(objs, "ClusterRoleBinding", "*", "kid-operator-receiver-rolebinding"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(binding.Subjects).To(ConsistOf(rbacv1.Subject{Kind: "ServiceAccount", Name: "kid-receiver", Namespace: "games"}))

	rule := find(objs, "PrometheusRule", "games", "kid-operator")
	g.Expect(rule).NotTo(BeNil())
	g.Expect(rule.GetLabels()).To(HaveKeyWithValue("release", "kube-prometheus-stack"))
	want := map[string]any{}
	raw, err := os.ReadFile(filepath.Join(root, "config/prometheus/kid-operator-rules.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(yaml.Unmarshal(raw, &want)).To(Succeed())
	g.Expect(rule.Object["spec"]).To(Equal(want["spec"]), "the chart's alerts are config/prometheus's: run make manifests")
	dashboard, err := typed[corev1.ConfigMap](find(objs, "ConfigMap", "games", "kid-operator-dashboard"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(dashboard.Labels).To(HaveKeyWithValue("grafana_dashboard", "1"))
	g.Expect(dashboard.Annotations).To(HaveKeyWithValue("grafana_folder", "Games"))
	raw, err = os.ReadFile(filepath.Join(root, "config/grafana/kid-operator-dashboard.json"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(dashboard.Data["kid-operator-dashboard.json"]).To(MatchJSON(raw), "the chart's dashboard is config/grafana's: run make manifests")
}

// values.schema.json refuses typos and wrong types, and the templates
// refuse combinations that cannot work, each saying what to change.
func TestTheReceiversSpoolIsAnEmptyDirOrAClaim(t *testing.T) {
	g := NewWithT(t)
	spoolVolume := func(args ...string) (corev1.Volume, *appsv1.Deployment, []*unstructured.Unstructured) {
		objs, err := renderChart("games", args...)
		g.Expect(err).NotTo(HaveOccurred())
		receiver, err := typed[appsv1.Deployment](find(objs, "Deployment", "games", "kid-operator-receiver"))
		g.Expect(err).NotTo(HaveOccurred())
		c := receiver.Spec.Template.Spec.Containers[0]
		g.Expect(c.Args).To(ContainElements("--spool-dir=/var/spool/kid", "--spool-max-bytes=67108864", "--spool-max-age=1h"))
		g.Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "spool", MountPath: "/var/spool/kid"}))
		for _, v := range receiver.Spec.Template.Spec.Volumes {
			if v.Name == "spool" {
				return v, receiver, objs
			}
		}
		g.Expect(false).To(BeTrue(), "no spool volume")
		return corev1.Volume{}, nil, nil
	}

	v, _, objs := spoolVolume()
	g.Expect(v.EmptyDir).NotTo(BeNil(), "an emptyDir by default: it survives a container restart")
	g.Expect(v.EmptyDir.SizeLimit.String()).To(Equal("128Mi"))
	g.Expect(ofKind(objs, "PersistentVolumeClaim")).To(BeEmpty())

	v, receiver, objs := spoolVolume("--set", "receiver.spool.persistence.enabled=true", "--set", "receiver.replicas=1",
		"--set", "podDisruptionBudget.enabled=false", "--set", "metrics.certSecretName=certs")
	g.Expect(v.PersistentVolumeClaim).NotTo(BeNil(), "a claim survives the pod")
	g.Expect(v.PersistentVolumeClaim.ClaimName).To(Equal("kid-operator-receiver-spool"))
	g.Expect(find(objs, "PersistentVolumeClaim", "games", "kid-operator-receiver-spool")).NotTo(BeNil())
	g.Expect(receiver.Spec.Strategy.Type).To(Equal(appsv1.RecreateDeploymentStrategyType))
	g.Expect(*receiver.Spec.Template.Spec.SecurityContext.FSGroup).To(BeEquivalentTo(65532))
	g.Expect(receiver.Spec.Template.Spec.Containers[0].VolumeMounts).To(HaveLen(2), "the spool's and the metrics certificates'")
}

func TestTheChartRefusesValuesThatCannotWork(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // a regular expression the error must match
	}{
		{"a typo in a top-level key is refused", []string{"--set", "replica=3"}, `additional properties 'replica' not allowed`},
		{"a typo in a nested key is refused", []string{"--set", "manager.replica=3"}, `at '/manager'.*additional properties 'replica' not allowed`},
		{"a string for a number of replicas is refused", []string{"--set-string", "manager.replicas=two"}, `at '/manager/replicas'.*want integer`},
		{"no receiver replicas is refused", []string{"--set", "receiver.replicas=0"}, `at '/receiver/replicas'.*minimum`},
		{"a lease duration without a unit is refused", []string{"--set", "manager.leaderElection.leaseDuration=15"}, `at '/manager/leaderElection/leaseDuration'`},
		{"an unknown pull policy is refused", []string{"--set", "image.pullPolicy=Sometimes"}, `at '/image/pullPolicy'`},
		{"a digest that is not a sha256 is refused", []string{"--set", "image.digest=sha256:abc"}, `at '/image/digest'`},
		{"a GOMEMLIMIT without a unit Go knows is refused", []string{"--set", "manager.goMemLimit=200MB"}, `at '/manager/goMemLimit'`},
		{"a flag that is not a flag is refused", []string{"--set", "manager.extraArgs={leader-elect}"}, `at '/manager/extraArgs/0'`},
		{"a product in a test or live environment only", []string{"--set", "products[0].name=a", "--set", "products[0].spec.productId=1",
			"--set", "products[0].spec.environment=staging", "--set", "products[0].spec.webhook.secretRef.name=a"}, `at '/products/0/spec/environment'`},
		{"a metrics reader ServiceAccount needs its namespace", []string{"--set", "metrics.readers[0].kind=ServiceAccount", "--set", "metrics.readers[0].name=prom"}, `at '/metrics/readers/0'.*namespace`},
		{"two manager replicas without leader election are refused", []string{"--set", "manager.leaderElection.enabled=false"}, `without leader election would both run the controllers`},
		{"a grace period shorter than the drain and shutdown is refused", []string{"--set", "receiver.drainPeriodSeconds=20", "--set", "receiver.terminationGracePeriodSeconds=30"},
			`receiver.terminationGracePeriodSeconds \(30\) must exceed receiver.drainPeriodSeconds \(20\)`},
		{"a disruption budget that blocks every drain is refused", []string{"--set", "manager.replicas=1"}, `manager.replicas \(1\) must exceed podDisruptionBudget.minAvailable \(1\)`},
		{"a spool on a claim with two receivers is refused", []string{"--set", "receiver.spool.persistence.enabled=true"}, `receiver.spool.persistence.enabled needs receiver.replicas 1 \(it is 2\)`},
		{"an Ingress without a host is refused", []string{"--set", "ingress.enabled=true"}, `ingress.host is empty`},
		{"a product outside the watched namespaces is refused", []string{"--set", "watchNamespaces={games}", "--set", "products[0].name=a",
			"--set", "products[0].namespace=arcade", "--set", "products[0].spec.productId=1", "--set", "products[0].spec.environment=test",
			"--set", "products[0].spec.webhook.secretRef.name=a"}, `product a is in namespace arcade, which watchNamespaces \(games\) leaves out`},
		{"a name prefix too long for the objects' names is refused", []string{"--set", "fullnameOverride=" + strings.Repeat("k", 40) + "x"}, `at '/fullnameOverride'.*maxLength`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			_, err := renderChart(releaseNamespace, tc.args...)
			g.Expect(err).To(HaveOccurred())
			g.Expect(err.Error()).To(MatchRegexp(tc.want))
		})
	}
	// The same renders with the defaults, so each refusal above is its
	// value's doing.
	_, err := renderChart(releaseNamespace)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
}

func TestAnImageDigestPinsBothTiers(t *testing.T) {
	g := NewWithT(t)
	digest := "sha256:" + strings.Repeat("0123456789abcdef", 4)
	objs, err := renderChart(releaseNamespace, "--set", "image.tag=ignored", "--set", "image.digest="+digest)
	g.Expect(err).NotTo(HaveOccurred())
	for _, name := range []string{"kid-operator-controller-manager", "kid-operator-receiver"} {
		d, err := typed[appsv1.Deployment](find(objs, "Deployment", releaseNamespace, name))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal("ghcr.io/kid-operator/kid-operator@"+digest), name)
	}
}

// make deploy and helm install start from the same image.
func TestMakeDeployAndTheChartDefaultToTheSameImage(t *testing.T) {
	g := NewWithT(t)
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	g.Expect(err).NotTo(HaveOccurred())
	m := regexp.MustCompile(`(?m)^IMG \?= (\S+)$`).FindSubmatch(makefile)
	g.Expect(m).NotTo(BeNil(), "the Makefile sets no default IMG")
	objs, err := renderChart(releaseNamespace)
	g.Expect(err).NotTo(HaveOccurred())
	d, err := typed[appsv1.Deployment](find(objs, "Deployment", releaseNamespace, "kid-operator-controller-manager"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal(string(m[1])))
}
