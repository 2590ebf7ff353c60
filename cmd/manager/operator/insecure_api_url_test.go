package operator_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/test/testenv"
)

var _ = Describe("A k-ID API base URL over plain http://", func() {
	It("is refused, APIReady saying why and the key never sent, unless the manager runs with --allow-insecure-api-urls", func() {
		ns := newNamespace()
		// The fake k-ID serves plain http://, as make run's does.
		fake := h.StartFakeKid(ns, "demo")
		DeferCleanup(fake.Close)
		Expect(fake.URL).To(HavePrefix("http://"))
		Expect(h.Client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "demo-api", Namespace: ns, Labels: kidv1.SecretLabels()},
			StringData: map[string]string{"key": testenv.FakeAPIKey},
		})).To(Succeed())
		p, err := h.NewProduct(ctx, ns, "demo", func(p *kidv1.KidProduct) {
			p.Spec.API = &kidv1.APISpec{SecretRef: kidv1.SecretKeySelector{Name: "demo-api", Key: "key"}, BaseURL: fake.URL}
		})
		Expect(err).NotTo(HaveOccurred())
		apiReady := apiReadyOf(p)

		// As deployed: the flag is off.
		opts := h.OperatorOptions()
		opts.AllowInsecureAPIURLs = false
		opts.Webhook.Addr = "0"
		_, stop := startOperator(opts)
		Eventually(func(g Gomega) {
			c := apiReady(g)
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(kidv1.InsecureBaseURLReason))
			g.Expect(c.Message).To(ContainSubstring("not https://"))
			g.Expect(c.Message).To(ContainSubstring("--allow-insecure-api-urls"))
		}, 30*time.Second).Should(Succeed())
		Consistently(func() int { return len(fake.Requests()) }, 2*time.Second).Should(BeZero(), "the key never crossed the network")
		stop()

		// As make run and the tests run it: allowed.
		opts.AllowInsecureAPIURLs = true
		startOperator(opts)
		Eventually(func(g Gomega) {
			c := apiReady(g)
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Reason).To(Equal(kidv1.APIReadyReason))
		}, 30*time.Second).Should(Succeed())
		Expect(fake.Requests()).NotTo(BeEmpty(), "the key's probe went to the fake")
	})
})
