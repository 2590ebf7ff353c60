package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// setSecretLabel adds (or, with on false, removes) the label that lets
// kid-operator use a Secret.
func setSecretLabel(ns, name string, on bool) {
	GinkgoHelper()
	s := &corev1.Secret{}
	Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s)).To(Succeed())
	if on {
		s.Labels = kidv1.SecretLabels()
	} else {
		delete(s.Labels, kidv1.SecretLabel)
	}
	Expect(h.Client.Update(ctx, s)).To(Succeed())
}

// condition waits until obj's condition t satisfies check.
func condition(obj client.Object, conditions func() []metav1.Condition, t string, check func(Gomega, *metav1.Condition), timeout time.Duration) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
		c := meta.FindStatusCondition(conditions(), t)
		g.Expect(c).NotTo(BeNil())
		check(g, c)
	}, timeout, "100ms").Should(Succeed())
}

var _ = Describe("A Secret without the label kid.dev/secret=true", func() {
	It("signs nothing for a KidAction: SecretNotLabelled, no request sent, and the run delivers once the Secret is labelled", func() {
		p := newProduct(nil)
		t := newTarget()
		// The attack: an action's author names a Secret of the namespace
		// that is not theirs to use (here one that holds a whsec_ key,
		// as a database password would be held) and chooses the body:
		// the operator would POST a Standard Webhooks signature by that
		// key over it, to a URL the author reads.
		Expect(h.Client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "someone-elses", Namespace: p.Namespace},
			StringData: map[string]string{"secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZg=="},
		})).To(Succeed())
		a := httpAction(p, "signer", t.URL, func(a *kidv1.KidAction) {
			a.Spec.HTTP.SigningSecretRef = &kidv1.SecretKeySelector{Name: "someone-elses", Key: "secret"}
			a.Spec.HTTP.MaxAttempts = 10
			a.Spec.HTTP.BodyTemplate = `{"chosen":"by the author"}`
		})
		condition(a, func() []metav1.Condition { return a.Status.Conditions }, kidv1.ReadyCondition, func(g Gomega, c *metav1.Condition) {
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(kidv1.SecretNotLabelledReason))
			g.Expect(c.Message).To(ContainSubstring("kubectl label secret someone-elses kid.dev/secret=true"))
		}, 10*time.Second)

		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		runOf(p, "c-1", "signer", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunPending))
			g.Expect(run.Attempts).To(BeNumerically(">=", 1))
			g.Expect(run.LastError).To(ContainSubstring("not labelled kid.dev/secret=true"))
		}, 15*time.Second)
		Expect(t.deliveries()).To(BeEmpty(), "nothing was signed or sent")

		// The Secret's owner consents: the pending run delivers, signed.
		setSecretLabel(p.Namespace, "someone-elses", true)
		runOf(p, "c-1", "signer", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
		}, 30*time.Second)
		Expect(t.deliveries()).To(HaveLen(1))
		Expect(t.deliveries()[0].signature).To(HavePrefix("v1,"))
		condition(a, func() []metav1.Condition { return a.Status.Conditions }, kidv1.ReadyCondition, func(g Gomega, c *metav1.Condition) {
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
		}, 60*time.Second)
	})

	It("is no product's webhook or API Secret: SecretNotLabelled, deliveries answered 503 and k-ID not called, until it is labelled", func() {
		p, fake := apiProduct(nil)
		product := p.KidProduct
		conds := func() []metav1.Condition { return product.Status.Conditions }

		// The owner withdraws consent from both Secrets.
		setSecretLabel(p.Namespace, "demo-webhook", false)
		setSecretLabel(p.Namespace, "demo-api", false)
		condition(product, conds, kidv1.ReadyCondition, func(g Gomega, c *metav1.Condition) {
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(kidv1.SecretNotLabelledReason))
			g.Expect(c.Message).To(ContainSubstring("kid.dev/secret=true"))
		}, 30*time.Second)
		condition(product, conds, kidv1.APIReadyCondition, func(g Gomega, c *metav1.Condition) {
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(kidv1.SecretNotLabelledReason))
		}, 30*time.Second)
		body, err := kidsim.Build(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		Expect(err).NotTo(HaveOccurred())
		answer := p.Sender().Deliver(ctx, body, nowTS(), kid.Sign)
		Expect(answer.Status).To(Equal(503), answer.String())
		Expect(events(p.Namespace)).To(BeEmpty())
		calls := len(fake.Requests())
		Consistently(func() int { return len(fake.Requests()) }, 3*time.Second).Should(Equal(calls), "no call to k-ID with the unlabelled key")

		// Labelled again: k-ID's retry of the same delivery is stored.
		setSecretLabel(p.Namespace, "demo-webhook", true)
		setSecretLabel(p.Namespace, "demo-api", true)
		Eventually(func() int { return p.Sender().Deliver(ctx, body, nowTS(), kid.Sign).Status }, 30*time.Second, "500ms").Should(Equal(200))
		condition(product, conds, kidv1.APIReadyCondition, func(g Gomega, c *metav1.Condition) {
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
		}, 30*time.Second)
	})
})
