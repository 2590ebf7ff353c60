package kubectlkid_test

import (
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/cmd/manager/operator"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// operatorNamespace makes a namespace holding what a deployed operator
// shows the plugin: the receiver Service (as the chart names it) with one
// pod behind it, Running and Ready as the kubelet would report it (envtest
// has no kubelet), and, when holder is set, the leader election Lease the
// manager renews.
func operatorNamespace(holder string) string {
	GinkgoHelper()
	ns, err := h.NewNamespace(ctx)
	Expect(err).NotTo(HaveOccurred())
	labels := map[string]string{"app.kubernetes.io/name": "kid-operator", "app.kubernetes.io/component": "receiver"}
	Expect(h.Client.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kid-operator-webhook", Namespace: ns},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "webhook", Port: 80}}},
	})).To(Succeed())
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kid-operator-receiver-0", Namespace: ns, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "receiver", Image: "kid-operator:dev"}}},
	}
	Expect(h.Client.Create(ctx, pod)).To(Succeed())
	setPodReady(pod, corev1.ConditionTrue)
	if holder != "" {
		now := metav1.NewMicroTime(h.Clock.Now())
		Expect(h.Client.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: "kid-operator.kid.dev", Namespace: ns},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder), LeaseDurationSeconds: ptr.To[int32](15), AcquireTime: &now, RenewTime: &now},
		})).To(Succeed())
	}
	return ns
}

// setPodReady writes the pod's status as the kubelet would.
func setPodReady(pod *corev1.Pod, ready corev1.ConditionStatus) {
	GinkgoHelper()
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready, LastTransitionTime: metav1.Now()}}}
	Expect(h.Client.Status().Update(ctx, pod)).To(Succeed())
}

var _ = Describe("kubectl kid check", func() {
	It("is healthy with a Ready product, a ready receiver and a renewed Lease, and exits non-zero on an unready product, no ready receiver or an expired Lease", func() {
		p := newProduct(nil)
		ns := p.Namespace
		opNs := operatorNamespace("kid-operator-controller-manager-7f9c_1")
		check := func(args ...string) result {
			GinkgoHelper()
			return kubectl(ns, nil, append([]string{"check", "--operator-namespace", opNs}, args...)...)
		}

		r := check()
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(MatchRegexp(`(?m)^PRODUCT\s+READY\s+API\s+ERASURES\s+PENDING\s+FAILED RUNS$`))
		Expect(r.out).To(MatchRegexp(`(?m)^demo\s+True\s+False \(NotConfigured\)\s+flowing\s+0\s+0$`))
		Expect(r.out).To(MatchRegexp(`(?m)^Receiver:\s+1/1 pods ready behind Service %s/kid-operator-webhook$`, opNs))
		Expect(r.out).To(MatchRegexp(`(?m)^Leader:\s+kid-operator-controller-manager-7f9c_1, renewed \d+s ago \(Lease %s/kid-operator.kid.dev\)$`, opNs))
		Expect(r.out).To(MatchRegexp(`(?m)^k-ID API:\s+no product uses k-ID's API \(no spec.api\)$`))
		Expect(r.out).To(HaveSuffix("Healthy.\n"))

		// A product whose webhook Secret is missing: not Ready, Stalled.
		broken, err := h.NewProduct(ctx, ns, "broken", func(p *kidv1.KidProduct) { p.Spec.Webhook.SecretRef.Name = "no-such-secret" })
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			got := &kidv1.KidProduct{}
			g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(broken.KidProduct), got)).To(Succeed())
			g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, kidv1.StalledCondition)).To(BeTrue())
		}).Should(Succeed())
		r = check()
		Expect(r.err).To(MatchError("unhealthy: 2 problem(s)"))
		Expect(r.out).To(MatchRegexp(`(?m)^broken\s+False \(SecretNotFound\)\s+`))
		Expect(r.out).To(MatchRegexp(`(?m)^demo\s+True\s+`))
		Expect(r.out).To(ContainSubstring("2 problem(s):\n  - product broken is not Ready: False, SecretNotFound: "))
		Expect(r.out).To(ContainSubstring("\n  - product broken is Stalled: True, SecretNotFound: "))
		Expect(h.Client.Delete(ctx, broken.KidProduct)).To(Succeed())
		Eventually(func() error { return check().err }).Should(Succeed())

		// The receiver's only pod turns unready.
		pod := &corev1.Pod{}
		Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: opNs, Name: "kid-operator-receiver-0"}, pod)).To(Succeed())
		setPodReady(pod, corev1.ConditionFalse)
		r = check()
		Expect(r.err).To(MatchError("unhealthy: 1 problem(s)"))
		Expect(r.out).To(MatchRegexp(`(?m)^Receiver:\s+0/1 pods ready behind Service`))
		Expect(r.out).To(ContainSubstring("  - receiver: no ready pod behind Service " + opNs + "/kid-operator-webhook"))
		setPodReady(pod, corev1.ConditionTrue)
		Expect(check().err).NotTo(HaveOccurred())

		// The leader stops renewing: past the lease's 15 s nobody leads.
		h.Clock.Advance(20 * time.Second)
		r = check()
		Expect(r.err).To(MatchError("unhealthy: 1 problem(s)"))
		Expect(r.out).To(ContainSubstring("  - leader: kid-operator-controller-manager-7f9c_1 stopped renewing the Lease " + opNs + "/kid-operator.kid.dev 20s ago"))

		// No Lease: leader election is off, which is no problem.
		Expect(h.Client.Delete(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "kid-operator.kid.dev", Namespace: opNs}})).To(Succeed())
		r = check()
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(MatchRegexp(`(?m)^Leader:\s+leader election off \(no Lease %s/kid-operator.kid.dev\)$`, opNs))

		// No receiver Service where it is looked for.
		r = kubectl(ns, nil, "check", "--operator-namespace", ns)
		Expect(r.err).To(MatchError("unhealthy: 1 problem(s)"))
		Expect(r.out).To(ContainSubstring("  - receiver: cannot read its Service " + ns + "/kid-operator-webhook (--operator-namespace, --service): NotFound: "))

		Expect(check("--pending-for", "0s").err).To(MatchError(ContainSubstring("--pending-for 0s is out of range")))
	})

	It("exits non-zero on events Pending past --pending-for while no controller folds them, and on events with a failed run", func() {
		p := newProduct(nil)
		ns := p.Namespace
		opNs := operatorNamespace("")
		check := func() result {
			GinkgoHelper()
			return kubectl(ns, nil, "check", "--operator-namespace", opNs)
		}
		t := newTarget(http.StatusBadRequest)
		httpAction(p, "notify", t.URL, kid.ChallengeStateChange)
		failed := send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		getEvent(ns, failed, func(g Gomega, e *kidv1.KidEvent) { g.Expect(e.Status.Phase).To(Equal(kidv1.EventFailed)) })

		r := check()
		Expect(r.err).To(MatchError("unhealthy: 1 problem(s)"))
		Expect(r.out).To(MatchRegexp(`(?m)^demo\s+True\s+False \(NotConfigured\)\s+flowing\s+0\s+1$`))
		Expect(r.out).To(ContainSubstring("  - product demo: 1 event(s) with a failed run wait for a redrive (kubectl kid redrive --failed --product demo -n " + ns + ")"))
		Expect(kubectl(ns, nil, "redrive", failed).err).NotTo(HaveOccurred())
		getEvent(ns, failed, func(g Gomega, e *kidv1.KidEvent) { g.Expect(e.Status.Phase).To(Equal(kidv1.EventSucceeded)) })
		Expect(check().err).NotTo(HaveOccurred())

		// Only the receiving tier runs: deliveries are stored, and stay
		// Pending, as when no replica leads.
		Expect(h.RestartOperatorWith(func(o *operator.Options) { o.ReceiverOnly = true })).To(Succeed())
		DeferCleanup(h.RestartOperator)
		p.URL = h.WebhookURL(ns, p.Name)
		first := send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-2", Status: kid.StatusInProgress})
		h.Clock.Advance(30 * time.Second)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-3", Status: kid.StatusInProgress})
		getEvent(ns, first, func(g Gomega, e *kidv1.KidEvent) { g.Expect(e.Status.Phase).To(BeEmpty()) })

		// Young: shown, no problem yet. The harness clock goes on with
		// real time between its advances, so each age may be a few
		// seconds past what the advances add up to.
		r = check()
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(MatchRegexp(`(?m)^demo\s+True\s+False \(NotConfigured\)\s+flowing\s+2 \(oldest 3\ds\)\s+0$`))

		h.Clock.Advance(45 * time.Second)
		r = check()
		Expect(r.err).To(MatchError("unhealthy: 1 problem(s)"))
		Expect(r.out).To(MatchRegexp(`(?m)^demo\s+True\s+False \(NotConfigured\)\s+flowing\s+2 \(oldest (7[5-9]|8\d)s\)\s+0$`))
		Expect(r.out).To(MatchRegexp(`  - product demo: 2 event\(s\) Pending, the oldest received (7[5-9]|8\d)s ago \(over --pending-for 1m0s\): are the controllers running, is there a leader\?`))

		// The controllers come back, fold them and run the notify action
		// on each: Succeeded is where an event ends (Applied, on the way,
		// may last too short a time to be seen).
		Expect(h.RestartOperator()).To(Succeed())
		getEvent(ns, first, func(g Gomega, e *kidv1.KidEvent) { g.Expect(e.Status.Phase).To(Equal(kidv1.EventSucceeded)) })
		Eventually(func() error { return check().err }).Should(Succeed())
	})
})
