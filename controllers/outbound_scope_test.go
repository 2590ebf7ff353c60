package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// An administrator's allowance scoped to a namespace (--outbound-allow-cidrs
// RANGE@NAMESPACE) lets that namespace's actions call the range, and no other
// namespace's. The harness's operator refuses 127.0.0.2 to every namespace
// but testenv.ScopedOutboundNamespace.
var _ = Describe("An outbound allowance scoped to a namespace", func() {
	It("lets that namespace's actions call its backend and refuses another namespace's", func() {
		Expect(h.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testenv.ScopedOutboundNamespace}})).To(Succeed())
		allowed, err := h.NewProduct(ctx, testenv.ScopedOutboundNamespace, "demo", nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(h.WaitReady(ctx, allowed)).To(Succeed())
		other := newProduct(nil)

		backend := newTargetAt("127.0.0.2:0")
		for _, p := range []*testenv.Product{allowed, other} {
			httpAction(p, "notify", backend.URL, func(a *kidv1.KidAction) { a.Spec.HTTP.MaxAttempts = 1 })
			send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-scoped", Status: kid.StatusPass})
		}
		var did string
		runOf(allowed, "c-scoped", "notify", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
			did = run.Message
		}, 30*time.Second)
		runOf(other, "c-scoped", "notify", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunFailed))
			g.Expect(run.LastError).To(ContainSubstring("refused by the outbound guard"))
			g.Expect(run.Attempts).To(Equal(int32(1)))
		}, 30*time.Second)

		// The backend heard from the allowed namespace's event only.
		got := backend.deliveries()
		Expect(got).To(HaveLen(1))
		Expect(got[0].id).NotTo(BeEmpty())
		Expect(did).To(ContainSubstring("with webhook-id "+got[0].id), "the delivery is the allowed namespace's run")
	})
})
