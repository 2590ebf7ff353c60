package controllers_test

import (
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/cmd/manager/operator"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// health is what kstatus, the library behind Flux's health checks (and
// the `flux` CLI, kpt), computes for obj as the API
// server serves it now. It reads the object unstructured, as those tools
// do: a typed read would drop a defaulted observedGeneration of 0.
func health(g Gomega, obj client.Object, kind string) *status.Result {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(kidv1.GroupVersion.WithKind(kind))
	g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(obj), u)).To(Succeed())
	res, err := status.Compute(u)
	g.Expect(err).NotTo(HaveOccurred())
	return res
}

// expectHealth waits until kstatus computes want for obj, and returns the
// result.
func expectHealth(obj client.Object, kind string, want status.Status) *status.Result {
	GinkgoHelper()
	var res *status.Result
	Eventually(func(g Gomega) {
		res = health(g, obj, kind)
		g.Expect(res.Status).To(Equal(want), "%s %s: %s", kind, obj.GetName(), res.Message)
	}, time.Minute).Should(Succeed())
	return res
}

// healthNow is kstatus's answer for obj once, with no waiting: for a state
// that holds only while the controllers cannot reach the object.
func healthNow(obj client.Object, kind string) *status.Result {
	GinkgoHelper()
	return health(Default, obj, kind)
}

// eventOf is the one event of the namespace naming challenge c.
func eventOf(ns, c string) *kidv1.KidEvent {
	GinkgoHelper()
	var found *kidv1.KidEvent
	Eventually(func(g Gomega) {
		found = nil
		for _, e := range events(ns) {
			if e.Spec.Subject.ChallengeID == c {
				found = &e
			}
		}
		g.Expect(found).NotTo(BeNil(), "no event for challenge %s", c)
	}).Should(Succeed())
	return found
}

var _ = Describe("GitOps health (kstatus) of every kind", func() {
	It("is Current once reconciled, and InProgress while the controllers have not seen an object or its latest spec", func() {
		target := newTarget()
		p := newProduct(nil)
		action := httpAction(p, "notify", target.URL, nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-ready", Status: kid.StatusPass, SessionID: "s-ready"})
		allEventsFinished(p.Namespace)
		done := eventOf(p.Namespace, "c-ready")
		player := user(p, kidv1.IdentitySession, "s-ready", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.ObservedEvents).To(BeEquivalentTo(1))
		})
		expectHealth(p.KidProduct, "KidProduct", status.CurrentStatus)
		expectHealth(action, "KidAction", status.CurrentStatus)
		expectHealth(done, "KidEvent", status.CurrentStatus)
		expectHealth(player, "KidUser", status.CurrentStatus)

		// An operator that watches another namespace only: nothing in
		// p's namespace is reconciled until it watches every namespace
		// again, so what kstatus reads meanwhile is what Flux would read
		// before the controllers catch up.
		elsewhere, err := h.NewNamespace(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(h.RestartOperatorWith(func(o *operator.Options) { o.WatchNamespaces = []string{elsewhere} })).To(Succeed())
		DeferCleanup(func() { Expect(h.RestartOperator()).To(Succeed()) })

		// A spec changed (a GitOps commit applied): observedGeneration lags.
		product := &kidv1.KidProduct{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(p.KidProduct), product)).To(Succeed())
		patch := client.MergeFrom(product.DeepCopy())
		product.Spec.Retention.MaxAge = &metav1.Duration{Duration: 48 * time.Hour}
		Expect(h.Client.Patch(ctx, product, patch)).To(Succeed())
		a := &kidv1.KidAction{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(action), a)).To(Succeed())
		patch = client.MergeFrom(a.DeepCopy())
		a.Spec.HTTP.MaxAttempts = 4
		Expect(h.Client.Patch(ctx, a, patch)).To(Succeed())
		for _, c := range []struct {
			obj  client.Object
			kind string
		}{{product, "KidProduct"}, {a, "KidAction"}} {
			res := healthNow(c.obj, c.kind)
			Expect(res.Status).To(Equal(status.InProgressStatus), "%s: %s", c.kind, res.Message)
			Expect(res.Message).To(ContainSubstring("generation is 2, but latest observed generation is 1"))
		}

		// Objects the controllers never wrote: a product and an action
		// just applied, and an event just stored (as the receiver stores
		// it, without a status). kstatus reads an object without
		// observedGeneration nor conditions as Current; the CRDs' default
		// (observedGeneration 0) makes them InProgress.
		fresh, err := h.NewProduct(ctx, p.Namespace, "fresh", nil)
		Expect(err).NotTo(HaveOccurred())
		freshAction := &kidv1.KidAction{
			ObjectMeta: metav1.ObjectMeta{Name: "fresh", Namespace: p.Namespace},
			Spec:       kidv1.KidActionSpec{EventTypes: []string{kid.ChallengeStateChange}, HTTP: &kidv1.HTTPAction{URL: target.URL}},
		}
		Expect(h.Client.Create(ctx, freshAction)).To(Succeed())
		stored, _ := builtEvent(p.KidProduct, h.Clock.Now(), kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-stored", Status: kid.StatusPass, SessionID: "s-stored"})
		Expect(h.Client.Create(ctx, stored)).To(Succeed())
		for _, c := range []struct {
			obj  client.Object
			kind string
		}{{fresh.KidProduct, "KidProduct"}, {freshAction, "KidAction"}, {stored, "KidEvent"}} {
			res := healthNow(c.obj, c.kind)
			Expect(res.Status).To(Equal(status.InProgressStatus), "%s %s: %s", c.kind, c.obj.GetName(), res.Message)
			Expect(res.Message).To(ContainSubstring("latest observed generation is 0"))
		}
		// The players were reconciled before and have no spec a person
		// changes: still Current.
		Expect(healthNow(player, "KidUser").Status).To(Equal(status.CurrentStatus))

		// The controllers catch up: every one of them is Current.
		Expect(h.RestartOperator()).To(Succeed())
		expectHealth(product, "KidProduct", status.CurrentStatus)
		expectHealth(a, "KidAction", status.CurrentStatus)
		expectHealth(fresh.KidProduct, "KidProduct", status.CurrentStatus)
		expectHealth(freshAction, "KidAction", status.CurrentStatus)
		expectHealth(stored, "KidEvent", status.CurrentStatus)
		expectHealth(player, "KidUser", status.CurrentStatus)
		Eventually(func() int { return len(users(p.Namespace)) }).Should(Equal(2))
		for _, u := range users(p.Namespace) {
			expectHealth(&u, "KidUser", status.CurrentStatus)
		}
	})

	It("is InProgress while an event's runs wait for a retry, and Current once they succeed; the player stays Current", func() {
		target := newTarget(http.StatusServiceUnavailable)
		// A retry well after the first attempt, so that the wait is seen.
		target.retry = "8"
		p := newProduct(nil)
		httpAction(p, "flaky", target.URL, nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-retry", Status: kid.StatusPass, SessionID: "s-retry"})
		e := eventOf(p.Namespace, "c-retry")
		// Stored, then folded with its run pending, then waiting for the
		// retry: InProgress throughout, and the last says why.
		var res *status.Result
		Eventually(func(g Gomega) {
			res = health(g, e, "KidEvent")
			g.Expect(res.Status).To(Equal(status.InProgressStatus), res.Message)
			g.Expect(res.Conditions).To(ContainElement(And(
				HaveField("Type", status.ConditionReconciling), HaveField("Reason", kidv1.RetryScheduledReason))), res.Message)
		}, time.Minute).Should(Succeed())
		Expect(res.Message).To(ContainSubstring("action flaky: attempt 1 failed"))
		// The player's own state is folded: the work under way is the
		// event's.
		player := user(p, kidv1.IdentitySession, "s-retry", func(Gomega, *kidv1.KidUser) {})
		Expect(healthNow(player, "KidUser").Status).To(Equal(status.CurrentStatus))

		expectHealth(e, "KidEvent", status.CurrentStatus)
		got := &kidv1.KidEvent{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(e), got)).To(Succeed())
		Expect(got.Status.Phase).To(Equal(kidv1.EventSucceeded))
		Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		Expect(target.deliveries()).To(HaveLen(2))
	})

	It("is Failed while Stalled: a missing Secret, a filter that does not compile, an event whose action failed for good", func() {
		p := newProduct(nil)
		broken, err := h.NewProduct(ctx, p.Namespace, "broken", func(kp *kidv1.KidProduct) {
			kp.Spec.Webhook.SecretRef.Name = "no-such-secret"
		})
		Expect(err).NotTo(HaveOccurred())
		res := expectHealth(broken.KidProduct, "KidProduct", status.FailedStatus)
		Expect(res.Conditions).To(ContainElement(HaveField("Reason", kidv1.SecretNotFoundReason)))
		Expect(res.Message).To(ContainSubstring(`webhook Secret "no-such-secret" not found`))

		invalid := httpAction(p, "invalid", "http://127.0.0.1:1/", func(a *kidv1.KidAction) {
			a.Spec.Filter = `event.data.status ==`
			a.Spec.EventTypes = []string{kid.SessionDelete}
		})
		res = expectHealth(invalid, "KidAction", status.FailedStatus)
		Expect(res.Conditions).To(ContainElement(HaveField("Reason", kidv1.InvalidFilterReason)))

		target := newTarget(http.StatusBadRequest)
		httpAction(p, "rejected", target.URL, nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-failed", Status: kid.StatusPass, SessionID: "s-failed"})
		e := eventOf(p.Namespace, "c-failed")
		res = expectHealth(e, "KidEvent", status.FailedStatus)
		Expect(res.Conditions).To(ContainElement(HaveField("Reason", kidv1.ActionFailedReason)))
		Expect(res.Message).To(ContainSubstring(kidv1.RedriveAnnotation))
		player := user(p, kidv1.IdentitySession, "s-failed", func(Gomega, *kidv1.KidUser) {})
		Expect(healthNow(player, "KidUser").Status).To(Equal(status.CurrentStatus))

		// A person fixes what stalled them: each is Current again.
		Expect(h.Client.Create(ctx, testenvSecret(p.Namespace, "no-such-secret"))).To(Succeed())
		expectHealth(broken.KidProduct, "KidProduct", status.CurrentStatus)
		a := &kidv1.KidAction{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(invalid), a)).To(Succeed())
		patch := client.MergeFrom(a.DeepCopy())
		a.Spec.Filter = `event.data.status == "PASS"`
		Expect(h.Client.Patch(ctx, a, patch)).To(Succeed())
		expectHealth(a, "KidAction", status.CurrentStatus)
		got := &kidv1.KidEvent{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(e), got)).To(Succeed())
		patch = client.MergeFrom(got.DeepCopy())
		got.Annotations[kidv1.RedriveAnnotation] = "fixed"
		Expect(h.Client.Patch(ctx, got, patch)).To(Succeed())
		expectHealth(e, "KidEvent", status.CurrentStatus)
	})
})

// testenvSecret is a webhook Secret kid-operator may use (labelled).
func testenvSecret(ns, name string) client.Object {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: kidv1.SecretLabels()},
		StringData: map[string]string{"current": "a-webhook-secret"},
	}
}
