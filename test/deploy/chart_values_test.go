package deploy_test

import (
	"slices"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kid-operator/kid-operator/test/testenv"
)

// The CRDs are templates, so that helm upgrade updates them; crds.enabled
// leaves them out, crds.keep (on by default) keeps them through an
// uninstall.
func TestTheCRDsAreTemplatesThatHelmKeeps(t *testing.T) {
	g := NewWithT(t)
	crdNames := func(objs []*unstructured.Unstructured) []string {
		var names []string
		for _, o := range ofKind(objs, "CustomResourceDefinition") {
			names = append(names, o.GetName())
		}
		return names
	}
	// helm template without --include-crds renders templates only: a
	// CRD in crds/ would be missing here.
	helm, err := helmBinary()
	g.Expect(err).NotTo(HaveOccurred())
	out, err := run(nil, helm, "template", release, chart, "--namespace", releaseNamespace)
	g.Expect(err).NotTo(HaveOccurred())
	objs, err := decode(out)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(crdNames(objs)).To(ConsistOf("kidproducts.kid.dev", "kidevents.kid.dev", "kidusers.kid.dev", "kidactions.kid.dev"))
	for _, crd := range ofKind(objs, "CustomResourceDefinition") {
		g.Expect(crd.GetAnnotations()).To(HaveKeyWithValue("helm.sh/resource-policy", "keep"), crd.GetName())
	}

	objs, err = renderChart(releaseNamespace, "--set", "crds.keep=false")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(crdNames(objs)).To(HaveLen(4))
	for _, crd := range ofKind(objs, "CustomResourceDefinition") {
		g.Expect(crd.GetAnnotations()).NotTo(HaveKey("helm.sh/resource-policy"), crd.GetName())
	}

	objs, err = renderChart(releaseNamespace, "--set", "crds.enabled=false")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(crdNames(objs)).To(BeEmpty())
	g.Expect(ofKind(objs, "Deployment")).To(HaveLen(2), "the rest of the chart renders without its CRDs")
}

// By default each tier's replicas spread over nodes, so that one node's
// loss never takes both.
func TestEachTiersReplicasSpreadOverNodesByDefault(t *testing.T) {
	g := NewWithT(t)
	objs, err := renderChart(releaseNamespace)
	g.Expect(err).NotTo(HaveOccurred())
	for _, tier := range []string{"manager", "receiver"} {
		name := map[string]string{"manager": "kid-operator-controller-manager", "receiver": "kid-operator-receiver"}[tier]
		d, err := typed[appsv1.Deployment](find(objs, "Deployment", releaseNamespace, name))
		g.Expect(err).NotTo(HaveOccurred())
		spread := d.Spec.Template.Spec.TopologySpreadConstraints
		g.Expect(spread).To(HaveLen(1), name)
		g.Expect(spread[0].TopologyKey).To(Equal("kubernetes.io/hostname"))
		g.Expect(spread[0].MaxSkew).To(BeEquivalentTo(1))
		g.Expect(spread[0].WhenUnsatisfiable).To(Equal(corev1.DoNotSchedule), "%s: a hard rule, or both replicas may still share a node", name)
		g.Expect(spread[0].MatchLabelKeys).To(Equal([]string{"pod-template-hash"}))
		g.Expect(spread[0].LabelSelector.MatchLabels).To(Equal(d.Spec.Selector.MatchLabels), "%s spreads its own pods", name)
		g.Expect(d.Spec.Template.Spec.PriorityClassName).To(BeEmpty())
	}
	objs, err = renderChart(releaseNamespace, "--set", "manager.topologySpreadConstraints=null", "--set", "receiver.topologySpreadConstraints=null")
	g.Expect(err).NotTo(HaveOccurred())
	for _, d := range ofKind(objs, "Deployment") {
		dep, err := typed[appsv1.Deployment](d)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(dep.Spec.Template.Spec.TopologySpreadConstraints).To(BeEmpty(), "null turns spreading off")
	}
}

// serviceAccount.create=false runs a tier as an existing ServiceAccount,
// which the chart binds its roles to but does not create.
func TestATierCanRunAsAnExistingServiceAccount(t *testing.T) {
	g := NewWithT(t)
	objs, err := renderChart(releaseNamespace, "--set", "manager.serviceAccount.create=false", "--set", "manager.serviceAccount.name=platform-kid")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(find(objs, "ServiceAccount", "*", "platform-kid")).To(BeNil())
	g.Expect(find(objs, "ServiceAccount", "*", "kid-operator-controller-manager")).To(BeNil())
	g.Expect(find(objs, "ServiceAccount", releaseNamespace, "kid-operator-receiver")).NotTo(BeNil())
	d, err := typed[appsv1.Deployment](find(objs, "Deployment", releaseNamespace, "kid-operator-controller-manager"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Spec.Template.Spec.ServiceAccountName).To(Equal("platform-kid"))
	sa := rbacv1.Subject{Kind: "ServiceAccount", Name: "platform-kid", Namespace: releaseNamespace}
	for _, name := range []string{"kid-operator-manager-rolebinding", "kid-operator-metrics-auth-rolebinding"} {
		b, err := typed[rbacv1.ClusterRoleBinding](find(objs, "ClusterRoleBinding", "*", name))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(b.Subjects).To(ContainElement(sa), name)
	}
	// Serving some namespaces, the Roles there and leader election's.
	objs, err = renderChart(releaseNamespace, "--set", "manager.serviceAccount.create=false", "--set", "manager.serviceAccount.name=platform-kid",
		"--set", "watchNamespaces={games}")
	g.Expect(err).NotTo(HaveOccurred())
	for _, key := range [][2]string{{"games", "kid-operator-controller-manager"}, {releaseNamespace, "kid-operator-leader-election-rolebinding"}} {
		b, err := typed[rbacv1.RoleBinding](find(objs, "RoleBinding", key[0], key[1]))
		g.Expect(err).NotTo(HaveOccurred(), "%v", key)
		g.Expect(b.Subjects).To(ConsistOf(sa), "%v", key)
	}

	_, err = renderChart(releaseNamespace, "--set", "receiver.serviceAccount.create=false")
	g.Expect(err).To(MatchError(ContainSubstring("receiver.serviceAccount.create is false but receiver.serviceAccount.name is empty")))
}

// The ServiceMonitor reads its token from a Secret and verifies the
// endpoints' certificates; skipping verification is a choice made out loud.
func TestTheServiceMonitorUsesATokenSecretAndVerifiesTLS(t *testing.T) {
	g := NewWithT(t)
	objs, err := renderChart(releaseNamespace, "--set", "serviceMonitor.enabled=true", "--set", "metrics.certSecretName=kid-metrics-tls")
	g.Expect(err).NotTo(HaveOccurred())
	sm := find(objs, "ServiceMonitor", releaseNamespace, "kid-operator")
	g.Expect(sm).NotTo(BeNil())
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	g.Expect(endpoints).To(HaveLen(1))
	ep := endpoints[0].(map[string]any)
	g.Expect(ep).NotTo(HaveKey("bearerTokenFile"), "deprecated, and gone from newer prometheus-operators")
	g.Expect(ep).To(HaveKeyWithValue("honorLabels", true), "kid_product_* keep the product's namespace (the alerts group by it)")
	g.Expect(ep["authorization"]).To(Equal(map[string]any{"type": "Bearer",
		"credentials": map[string]any{"name": "kid-operator-metrics-scraper-token", "key": "token"}}))
	g.Expect(ep["tlsConfig"]).To(Equal(map[string]any{
		"ca":         map[string]any{"secret": map[string]any{"name": "kid-metrics-tls", "key": "ca.crt"}},
		"serverName": "kid-operator-manager-metrics.kid-system.svc",
	}))
	// The token Secret is the scraper ServiceAccount's, which may read
	// /metrics and nothing else.
	secret, err := typed[corev1.Secret](find(objs, "Secret", releaseNamespace, "kid-operator-metrics-scraper-token"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(secret.Type).To(Equal(corev1.SecretTypeServiceAccountToken))
	g.Expect(secret.Annotations).To(HaveKeyWithValue(corev1.ServiceAccountNameKey, "kid-operator-metrics-scraper"))
	readers, err := typed[rbacv1.ClusterRoleBinding](find(objs, "ClusterRoleBinding", "*", "kid-operator-metrics-reader-rolebinding"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readers.RoleRef.Name).To(Equal("kid-operator-metrics-reader"))
	g.Expect(readers.Subjects).To(ConsistOf(rbacv1.Subject{Kind: "ServiceAccount", Name: "kid-operator-metrics-scraper", Namespace: releaseNamespace}))

	// A Secret of one's own: no scraper identity is made.
	objs, err = renderChart(releaseNamespace, "--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.authorization.secretName=prom-token",
		"--set", "serviceMonitor.tls.insecureSkipVerify=true")
	g.Expect(err).NotTo(HaveOccurred())
	endpoints, _, _ = unstructured.NestedSlice(find(objs, "ServiceMonitor", releaseNamespace, "kid-operator").Object, "spec", "endpoints")
	ep = endpoints[0].(map[string]any)
	g.Expect(ep["authorization"]).To(HaveKeyWithValue("credentials", map[string]any{"name": "prom-token", "key": "token"}))
	g.Expect(ep["tlsConfig"]).To(Equal(map[string]any{"insecureSkipVerify": true}))
	g.Expect(find(objs, "ServiceAccount", "*", "kid-operator-metrics-scraper")).To(BeNil())

	// Self-signed certificates and no word about them: refused.
	_, err = renderChart(releaseNamespace, "--set", "serviceMonitor.enabled=true")
	g.Expect(err).To(MatchError(ContainSubstring("Prometheus could not verify the metrics endpoints")))
}

// The PrometheusRule and the dashboard ship only when asked for.
func TestTheAlertsAndDashboardAreOptIn(t *testing.T) {
	g := NewWithT(t)
	objs, err := renderChart(releaseNamespace)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(ofKind(objs, "PrometheusRule")).To(BeEmpty())
	g.Expect(ofKind(objs, "ConfigMap")).To(BeEmpty())
	objs, err = renderChart(releaseNamespace, "--set", "prometheusRule.enabled=true", "--set", "grafanaDashboard.enabled=true",
		"--set", "grafanaDashboard.namespace=monitoring")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(find(objs, "PrometheusRule", releaseNamespace, "kid-operator")).NotTo(BeNil())
	g.Expect(find(objs, "ConfigMap", "monitoring", "kid-operator-dashboard")).NotTo(BeNil())
}

// The user roles: the configuration kinds join the built-in view, edit
// and admin roles; KidUsers and KidEvents (data about minors) only the
// chart's own view and edit roles, which are bound on purpose.
func TestTheUserRolesKeepPlayersOutOfTheBuiltInRoles(t *testing.T) {
	g := NewWithT(t)
	objs, err := renderChart(releaseNamespace)
	g.Expect(err).NotTo(HaveOccurred())
	aggregated := map[string]bool{}
	for _, o := range ofKind(objs, "ClusterRole") {
		role, err := typed[rbacv1.ClusterRole](o)
		g.Expect(err).NotTo(HaveOccurred())
		for label := range role.Labels {
			if label == "rbac.authorization.k8s.io/aggregate-to-view" || label == "rbac.authorization.k8s.io/aggregate-to-edit" ||
				label == "rbac.authorization.k8s.io/aggregate-to-admin" {
				aggregated[role.Name] = true
				for _, grant := range testenv.Grants(role.Rules) {
					g.Expect(grant).NotTo(Or(HavePrefix("kid.dev/kidusers"), HavePrefix("kid.dev/kidevents")),
						"%s aggregates to the built-in roles (%s) and grants players' data: %s", role.Name, label, grant)
				}
			}
		}
	}
	g.Expect(aggregated).To(Equal(map[string]bool{"kid-operator-config-view": true, "kid-operator-config-edit": true}))

	grants := func(name string) []string {
		role, err := typed[rbacv1.ClusterRole](find(objs, "ClusterRole", "*", name))
		g.Expect(err).NotTo(HaveOccurred(), name)
		return testenv.Grants(role.Rules)
	}
	g.Expect(grants("kid-operator-config-view")).To(ContainElements("kid.dev/kidproducts:get", "kid.dev/kidactions:list", "kid.dev/kidproducts/status:get"))
	g.Expect(grants("kid-operator-config-edit")).To(ContainElements("kid.dev/kidproducts:create", "kid.dev/kidactions:delete"))
	view := grants("kid-operator-view")
	g.Expect(view).To(ContainElements("kid.dev/kidusers:get", "kid.dev/kidusers:list", "kid.dev/kidevents:watch", "kid.dev/kidusers/status:get"))
	g.Expect(slices.ContainsFunc(view, func(s string) bool { return !hasVerb(s, "get") && !hasVerb(s, "list") && !hasVerb(s, "watch") })).
		To(BeFalse(), "view only reads: %v", view)
	g.Expect(grants("kid-operator-edit")).To(ContainElements("kid.dev/kidusers:delete", "kid.dev/kidevents:patch", "kid.dev/kidproducts:update"))
	g.Expect(grants("kid-operator-edit")).NotTo(ContainElement("kid.dev/kidusers/status:update"), "status is the operator's")

	objs, err = renderChart(releaseNamespace, "--set", "userRoles.aggregateToDefaultRoles=false")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(find(objs, "ClusterRole", "*", "kid-operator-config-view")).To(BeNil())
	g.Expect(find(objs, "ClusterRole", "*", "kid-operator-view")).NotTo(BeNil())
	objs, err = renderChart(releaseNamespace, "--set", "userRoles.enabled=false")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(find(objs, "ClusterRole", "*", "kid-operator-view")).To(BeNil())
}

// hasVerb says whether a grant (testenv.Grants: "group/resource:verb") is
// for that verb.
func hasVerb(grant, verb string) bool {
	return strings.HasSuffix(grant, ":"+verb)
}
