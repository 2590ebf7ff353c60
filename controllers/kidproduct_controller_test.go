package controllers_test

import (
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

func product(ns string) *kidv1.KidProduct {
	GinkgoHelper()
	p := &kidv1.KidProduct{}
	Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "demo"}, p)).To(Succeed())
	return p
}

// productGauge reads a gauge of the product ns/demo; ok is false when it
// has no series.
func productGauge(name, ns string) (value float64, ok bool) {
	GinkgoHelper()
	value, _, ok = metricSum(name, map[string]string{"product": ns + "/demo"})
	return value, ok
}

// blockUserCreates makes every KidUser create in ns fail, as a full quota
// would: the fold of an event about a new player fails and is retried, so
// the event stays Pending. The local control plane runs no quota
// controller, so the quota's status is written here; the API server's
// admission then refuses what would exceed it.
func blockUserCreates(ns string) *corev1.ResourceQuota {
	GinkgoHelper()
	name := corev1.ResourceName("count/kidusers.kid.dev")
	q := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "no-users", Namespace: ns},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{name: resource.MustParse("0")}},
	}
	Expect(h.Client.Create(ctx, q)).To(Succeed())
	q.Status = corev1.ResourceQuotaStatus{
		Hard: corev1.ResourceList{name: resource.MustParse("0")},
		Used: corev1.ResourceList{name: resource.MustParse("0")},
	}
	Expect(h.Client.Status().Update(ctx, q)).To(Succeed())
	return q
}

func readyReason(g Gomega, ns string) string {
	p := &kidv1.KidProduct{}
	g.Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "demo"}, p)).To(Succeed())
	c := meta.FindStatusCondition(p.Status.Conditions, kidv1.ReadyCondition)
	g.Expect(c).NotTo(BeNil())
	return c.Reason
}

var _ = Describe("KidProduct controller", func() {
	It("publishes the webhook path and Ready, and follows its Secret", func() {
		p := newProduct(nil)
		got := product(p.Namespace)
		Expect(got.Status.WebhookPath).To(Equal("/webhooks/" + p.Namespace + "/demo"))
		Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		Expect(meta.IsStatusConditionPresentAndEqual(got.Status.Conditions, kidv1.StalledCondition, metav1.ConditionTrue)).To(BeFalse())

		secret := &corev1.Secret{}
		Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: "demo-webhook"}, secret)).To(Succeed())
		secret.Data = map[string][]byte{"current": {}}
		Expect(h.Client.Update(ctx, secret)).To(Succeed())
		Eventually(func(g Gomega) string { return readyReason(g, p.Namespace) }).Should(Equal(kidv1.SecretKeyMissingReason))
		stalled := meta.FindStatusCondition(product(p.Namespace).Status.Conditions, kidv1.StalledCondition)
		Expect(stalled).NotTo(BeNil())
		Expect(stalled.Status).To(Equal(metav1.ConditionTrue))

		Expect(h.Client.Delete(ctx, secret)).To(Succeed())
		Eventually(func(g Gomega) string { return readyReason(g, p.Namespace) }).Should(Equal(kidv1.SecretNotFoundReason))

		Expect(h.Client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "demo-webhook", Namespace: p.Namespace, Labels: kidv1.SecretLabels()},
			StringData: map[string]string{"next": "rotated"},
		})).To(Succeed())
		Eventually(func(g Gomega) string { return readyReason(g, p.Namespace) }).Should(Equal(kidv1.SucceededReason))
		Expect(meta.FindStatusCondition(product(p.Namespace).Status.Conditions, kidv1.StalledCondition)).To(BeNil())
	})

	It("records when the last event and the last Test event arrived", func() {
		p := newProduct(nil)
		send(p, kid.TestEvent, kidsim.Fields{})
		Eventually(func(g Gomega) {
			got := product(p.Namespace)
			g.Expect(got.Status.LastTestEventTime).NotTo(BeNil())
			g.Expect(got.Status.LastEventTime).NotTo(BeNil())
		}).Should(Succeed())
	})

	It("makes one pass over its events for a burst, not one per event", func() {
		p := newProduct(nil)
		before := reconciles("kidproduct")
		const burst = 20
		for i := range burst {
			id := strconv.Itoa(i)
			send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "burst-" + id, Status: kid.StatusPass, SessionID: "s-burst-" + id})
		}
		allEventsFinished(p.Namespace)
		// A pass has read the whole burst: lastEventTime is its newest event.
		Eventually(func(g Gomega) {
			var newest time.Time
			for _, e := range events(p.Namespace) {
				if t := e.Spec.ReceivedAt.Time; t.After(newest) {
					newest = t
				}
			}
			last := product(p.Namespace).Status.LastEventTime
			g.Expect(last).NotTo(BeNil())
			g.Expect(last.Time).To(BeTemporally("==", newest))
		}).Should(Succeed())
		// Woken one by one, the burst's 20 creates and 20 phase changes would
		// have made up to 40 passes. The pass woken by the last phase change
		// is due a second after it: the count stays low through that too.
		passes := func() float64 { return reconciles("kidproduct") - before }
		Consistently(passes, 2*time.Second, 50*time.Millisecond).Should(BeNumerically("<=", 8))
	})

	It("exports its backlog: how many events are Pending and since when, and drops both with the product", func() {
		p := newProduct(nil)
		pendingOf := func() float64 { v, _ := productGauge("kid_events_pending", p.Namespace); return v }
		oldestOf := func() float64 {
			v, _ := productGauge("kid_events_oldest_pending_timestamp_seconds", p.Namespace)
			return v
		}
		send(p, kid.TestEvent, kidsim.Fields{})
		allEventsFinished(p.Namespace)
		Eventually(func(g Gomega) {
			_, ok := productGauge("kid_events_pending", p.Namespace)
			g.Expect(ok).To(BeTrue(), "a pass has counted the product's events")
		}).Should(Succeed())
		Expect(pendingOf()).To(BeZero())
		Expect(oldestOf()).To(BeZero(), "0 while nothing is Pending")

		quota := blockUserCreates(p.Namespace)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "stuck", Status: kid.StatusPass, SessionID: "s-stuck"})
		var stuck kidv1.KidEvent
		for _, e := range events(p.Namespace) {
			if e.Spec.EventType == kid.ChallengeStateChange {
				stuck = e
			}
		}
		Expect(stuck.Name).NotTo(BeEmpty())
		Eventually(pendingOf).Should(Equal(1.0))
		// ReceivedAt is stored to the second; the gauge is that time.
		Expect(oldestOf()).To(Equal(float64(stuck.Spec.ReceivedAt.Unix())))
		Consistently(pendingOf, "1500ms").Should(Equal(1.0), "the fold cannot create the player's KidUser")

		// The quota gone, the fold's next retry succeeds and the backlog
		// empties. The retry backs off exponentially: a few seconds here.
		Expect(h.Client.Delete(ctx, quota)).To(Succeed())
		Eventually(pendingOf, 30*time.Second).Should(BeZero())
		Expect(oldestOf()).To(BeZero())

		Expect(h.Client.Delete(ctx, p.KidProduct)).To(Succeed())
		Eventually(func(g Gomega) {
			_, pendingLeft := productGauge("kid_events_pending", p.Namespace)
			_, oldestLeft := productGauge("kid_events_oldest_pending_timestamp_seconds", p.Namespace)
			g.Expect(pendingLeft || oldestLeft).To(BeFalse(), "a deleted product's series are dropped")
		}).Should(Succeed())
	})

	It("deletes finished events past retention, and keeps younger ones", func() {
		p := newProduct(nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "old", Status: kid.StatusPass, SessionID: "s-old"})
		send(p, kid.SessionDelete, kidsim.Fields{SessionID: "s-old"})
		allEventsFinished(p.Namespace)
		Expect(events(p.Namespace)).To(HaveLen(2))

		// Eight days later (the default retention is seven), a new event.
		h.Clock.Advance(8 * 24 * time.Hour)
		DeferCleanup(func() { h.Clock.Advance(-8 * 24 * time.Hour) })
		send(p, kid.TestEvent, kidsim.Fields{})
		Eventually(func(g Gomega) {
			left := events(p.Namespace)
			g.Expect(left).To(HaveLen(1))
			g.Expect(left[0].Spec.EventType).To(Equal(kid.TestEvent))
		}).Should(Succeed())
		Consistently(func() int { return len(events(p.Namespace)) }, "500ms").Should(Equal(1))
	})
})
