package operator_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/test/testenv"
)

var _ = Describe("A k-ID API base URL outside k-ID's hosts", func() {
	It("is refused, the Secret it names neither read nor sent, unless --api-allow-hosts allows its host for the product's namespace", func() {
		ns := newNamespace()
		// The attack: a namespace user points spec.api.baseURL at a
		// server of their own and names a Secret key of the namespace
		// (labelled for the operator: the label says the Secret is the
		// operator's to use, not that it may go anywhere); the operator
		// would send it as a Bearer token. The fake k-ID stands in for
		// that server and records every request.
		fake := h.StartFakeKid(ns, "demo")
		DeferCleanup(fake.Close)
		Expect(h.Client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "someone-elses", Namespace: ns, Labels: kidv1.SecretLabels()},
			StringData: map[string]string{"password": testenv.FakeAPIKey},
		})).To(Succeed())
		p, err := h.NewProduct(ctx, ns, "demo", func(p *kidv1.KidProduct) {
			p.Spec.API = &kidv1.APISpec{SecretRef: kidv1.SecretKeySelector{Name: "someone-elses", Key: "password"}, BaseURL: fake.URL}
		})
		Expect(err).NotTo(HaveOccurred())
		apiReady := apiReadyOf(p)

		// As deployed, but with loopback allowed for another namespace
		// only: k-ID's hosts, and nothing else, for this one.
		opts := h.OperatorOptions()
		opts.APIAllowHosts = []string{"127.0.0.0/8@kid-elsewhere"}
		opts.Webhook.Addr = "0"
		op, stop := startOperator(opts)
		Eventually(func(g Gomega) {
			c := apiReady(g)
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(kidv1.BaseURLNotAllowedReason))
			g.Expect(c.Message).To(ContainSubstring("game-api.k-id.com"))
			g.Expect(c.Message).To(ContainSubstring("--api-allow-hosts"))
		}, 30*time.Second).Should(Succeed())
		// Past the periodic recheck of the products' Secrets (every one
		// to two SecretRecheck), which must skip this one too.
		Consistently(func() int { return len(fake.Requests()) }, 2*testenv.SecretRecheck+time.Second).Should(BeZero(), "the key never left the operator")
		Expect(op.Secrets.Cached(types.NamespacedName{Namespace: ns, Name: "someone-elses"})).To(BeFalse(), "the Secret was never read")
		stop()

		// The administrator allows the host for this namespace.
		opts.APIAllowHosts = []string{"127.0.0.1@" + ns}
		startOperator(opts)
		Eventually(func(g Gomega) {
			c := apiReady(g)
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Reason).To(Equal(kidv1.APIReadyReason))
		}, 30*time.Second).Should(Succeed())
		Expect(fake.Requests()).NotTo(BeEmpty(), "the key's probe went to the allowed host")
	})
})
