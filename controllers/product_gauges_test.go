package controllers_test

import (
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// gaugeOf reads a gauge labelled namespace and name; found is false
// when it has no such series.
func gaugeOf(metric string, p *testenv.Product) (float64, bool) {
	GinkgoHelper()
	v, _, found := metricSum(metric, map[string]string{"namespace": p.Namespace, "name": p.Name})
	return v, found
}

var _ = Describe("The product's gauges, by namespace and name", func() {
	It("count its players, its failed runs waiting for a redrive and whether it is Ready, and go with the product", func() {
		p := newProduct(nil)
		value := func(metric string) func() float64 {
			return func() float64 { v, _ := gaugeOf(metric, p); return v }
		}
		Eventually(value("kid_product_ready")).Should(Equal(1.0))
		_, found := gaugeOf("kid_product_players", p)
		Expect(found).To(BeTrue(), "a product without players has a series: 0")
		Expect(value("kid_product_players")()).To(BeZero())

		// Two players, and one of another product of the namespace that
		// does not exist: not counted, and no series of its own.
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"})
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-2", Status: kid.StatusPass, SessionID: "s-2"})
		Expect(h.Client.Create(ctx, &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{Name: "elsewhere", Namespace: p.Namespace},
			Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "other"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: "s-9"}},
		})).To(Succeed())
		Eventually(value("kid_product_players")).Should(Equal(2.0))
		_, _, other := metricSum("kid_product_players", map[string]string{"namespace": p.Namespace, "name": "other"})
		Expect(other).To(BeZero())
		u := user(p, kidv1.IdentitySession, "s-2", func(Gomega, *kidv1.KidUser) {})
		Expect(h.Client.Delete(ctx, u)).To(Succeed())
		Eventually(value("kid_product_players")).Should(Equal(1.0))

		// An action whose backend refuses for good: one failed run, which
		// waits until it is redriven (the backend then accepts).
		t := newTarget(http.StatusBadRequest)
		httpAction(p, "fixme", t.URL, func(a *kidv1.KidAction) { a.Spec.HTTP.MaxAttempts = 1 })
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-3", Status: kid.StatusPass, SessionID: "s-3"})
		runOf(p, "c-3", "fixme", func(g Gomega, phase kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunFailed))
			g.Expect(phase).To(Equal(kidv1.EventFailed))
		}, 10*time.Second)
		Eventually(value("kid_product_failed_runs")).Should(Equal(1.0))
		Consistently(value("kid_product_failed_runs"), "1500ms").Should(Equal(1.0), "it waits: no counter's window lets it go")
		for _, e := range events(p.Namespace) {
			if e.Spec.Subject.ChallengeID == "c-3" {
				patch := client.MergeFrom(e.DeepCopy())
				e.Annotations[kidv1.RedriveAnnotation] = "now"
				Expect(h.Client.Patch(ctx, &e, patch)).To(Succeed())
			}
		}
		Eventually(value("kid_product_failed_runs"), 10*time.Second).Should(BeZero())

		// The webhook Secret gone: not Ready.
		Expect(h.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: "demo-webhook"}})).To(Succeed())
		Eventually(value("kid_product_ready")).Should(BeZero())

		Expect(h.Client.Delete(ctx, p.KidProduct)).To(Succeed())
		Eventually(func(g Gomega) {
			for _, m := range []string{"kid_product_ready", "kid_product_failed_runs", "kid_product_players"} {
				_, left := gaugeOf(m, p)
				g.Expect(left).To(BeFalse(), "%s of a deleted product", m)
			}
		}).Should(Succeed())
	})

	It("say when the cache's first lists began and how long they took", func() {
		Eventually(func(g Gomega) {
			since, _, _ := metricSum("kid_cache_syncing_since_timestamp_seconds", nil)
			took, _, _ := metricSum("kid_cache_sync_duration_seconds", nil)
			g.Expect(since).To(BeZero(), "synced")
			g.Expect(took).To(BeNumerically(">", 0))
		}).Should(Succeed())
	})
})
