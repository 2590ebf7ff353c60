package deploy_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var _ = Describe("The Helm chart with watchNamespaces", func() {
	It("lets the manager and the receiver get Secrets in the watched namespaces and nowhere else", func() {
		release := newNamespace("")
		watched := newNamespace("kid-secrets-watched")
		other := newNamespace("kid-secrets-other")
		// A release name of its own, so that its cluster-scoped objects
		// are this spec's alone.
		objs, err := renderChart(release, "--set", "fullnameOverride=kid-secrets", "--set", "watchNamespaces={"+watched+"}")
		Expect(err).NotTo(HaveOccurred())
		// Every RBAC object of the chart, applied for real, so that the
		// API server's authorizer answers for them together.
		for _, kind := range []string{"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} {
			for _, o := range ofKind(objs, kind) {
				o := o.DeepCopy()
				Expect(c.Create(ctx, o)).To(Succeed(), "%s %s/%s", kind, o.GetNamespace(), o.GetName())
				DeferCleanup(func() { Expect(client.IgnoreNotFound(c.Delete(ctx, o))).To(Succeed()) })
			}
		}

		mayGetSecrets := func(sa, ns string) bool {
			GinkgoHelper()
			review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   "system:serviceaccount:" + release + ":" + sa,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + release, "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: ns, Verb: "get", Resource: "secrets", Name: "someone-elses",
				},
			}}
			Expect(c.Create(ctx, review)).To(Succeed())
			return review.Status.Allowed
		}
		for _, sa := range []string{"kid-secrets-controller-manager", "kid-secrets-receiver"} {
			Expect(mayGetSecrets(sa, watched)).To(BeTrue(), "%s in the watched namespace", sa)
			// The attack: a Secret of a namespace the operator does not
			// serve, which a ClusterRole would open to it.
			Expect(mayGetSecrets(sa, other)).To(BeFalse(), "%s in a namespace it does not watch", sa)
			Expect(mayGetSecrets(sa, release)).To(BeFalse(), "%s in its own namespace, which it does not watch", sa)
		}
	})
})
