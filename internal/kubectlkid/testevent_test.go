package kubectlkid_test

import (
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

var _ = Describe("kubectl kid test", func() {
	It("sends a signed Test delivery to the receiver, and the product's lastTestEventTime moves", func() {
		p := newProduct(nil)
		ns := p.Namespace
		path := kidv1.WebhookPath(ns, "demo")

		r := kubectl(ns, nil, "test", "demo", "--url", h.BaseURL)
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(MatchRegexp(`^lastTestEventTime before: <none>\n`+
			`POST %s%s \(Test, signed with key "current"\): 200 OK \S*\n`+
			`lastTestEventTime after:  (\S+)\n`+
			`stored as kidevent/demo-test-[0-9a-f]{20}, phase Ignored\n$`, h.BaseURL, path))
		first := regexpGroup(`lastTestEventTime after:  (\S+)`, r.out)
		got := &kidv1.KidProduct{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(p.KidProduct), got)).To(Succeed())
		Expect(got.Status.LastTestEventTime).NotTo(BeNil())
		Expect(got.Status.LastTestEventTime.UTC().Format(time.RFC3339)).To(Equal(first))

		// A later test (the receiver's clock moved on) moves it again.
		h.Clock.Advance(2 * time.Second)
		r = kubectl(ns, nil, "test", "demo", "--url", h.BaseURL+"/")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(regexpGroup(`lastTestEventTime before: (\S+)`, r.out)).To(Equal(first))
		second := regexpGroup(`lastTestEventTime after:  (\S+)`, r.out)
		Expect(second > first).To(BeTrue(), "%s is after %s", second, first)

		// A receiver that does not answer 200 is an error, with its answer.
		refusing := newTarget(http.StatusServiceUnavailable)
		r = kubectl(ns, nil, "test", "demo", "--url", refusing.URL)
		Expect(r.err).To(MatchError(ContainSubstring("the receiver answered 503, not 200")))
		Expect(r.out).To(ContainSubstring("POST " + refusing.URL + path + ` (Test, signed with key "current"): 503 Service Unavailable`))

		Expect(kubectl(ns, nil, "test", "demo", "--url", h.BaseURL, "--key", "previous").err).To(MatchError(ContainSubstring(`has no non-empty key "previous"`)))
		Expect(kubectl(ns, nil, "test", "demo", "--url", "ftp://example.com").err).To(MatchError(ContainSubstring("is not an http(s) base URL")))
		Expect(kubectl(ns, nil, "test", "demo", "--url", "http://user:pw@example.com").err).To(MatchError(ContainSubstring("is not an http(s) base URL")))
		Expect(kubectl(ns, nil, "test", "nope", "--url", h.BaseURL).err).To(MatchError(ContainSubstring("reading KidProduct nope")))
	})

	It("without --url, looks for a ready pod behind the receiver Service to port-forward to", func() {
		// Envtest runs no kubelet, so no pod ever becomes ready: this checks
		// the Service and pod lookup, and the errors a user sees.
		p := newProduct(nil)
		ns := p.Namespace
		r := kubectl(ns, nil, "test", "demo", "--service-namespace", ns, "--service", "receiver")
		Expect(r.err).To(MatchError(ContainSubstring("reading the receiver Service " + ns + "/receiver")))

		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "receiver", Namespace: ns},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app.kubernetes.io/name": "kid-operator-receiver"},
				Ports:    []corev1.ServicePort{{Name: "webhook", Port: 80}},
			},
		}
		Expect(h.Client.Create(ctx, svc)).To(Succeed())
		r = kubectl(ns, nil, "test", "demo", "--service-namespace", ns, "--service", "receiver")
		Expect(r.err).To(MatchError("no ready pod behind Service " + ns + "/receiver"))
		Expect(kubectl(ns, nil, "test", "demo", "--service", "Bad_Name").err).To(MatchError(ContainSubstring(`--service "Bad_Name" is not a Service name`)))
	})
})
