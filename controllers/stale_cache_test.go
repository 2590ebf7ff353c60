package controllers_test

import (
	"context"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/controllers"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// staleEvent is a client whose cache still holds one KidEvent as it was
// when it was stored: what an informer that lags behind the controller's
// own writes shows for a second or so.
type staleEvent struct {
	client.Client
	stale *kidv1.KidEvent
}

func (s staleEvent) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if e, ok := obj.(*kidv1.KidEvent); ok && key == client.ObjectKeyFromObject(s.stale) {
		s.stale.DeepCopyInto(e)
		return nil
	}
	return s.Client.Get(ctx, key, obj, opts...)
}

var _ = Describe("A cache that lags behind the controller's writes", func() {
	It("never folds an event twice nor repeats an action that succeeded", func() {
		p := newProduct(nil)
		t := newTarget()
		httpAction(p, "once", t.URL, nil)

		// Store the event as the receiver does, and keep the object the
		// API server answered: that is the stale copy.
		body, err := kidsim.Build(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-stale", Status: kid.StatusPass, SessionID: "s-stale"})
		Expect(err).NotTo(HaveOccurred())
		env, err := kid.ParseEnvelope(body)
		Expect(err).NotTo(HaveOccurred())
		now := h.Clock.Now()
		event, err := inbox.Build(p.KidProduct, env, body, now, now, kidv1.SourceWebhook)
		Expect(err).NotTo(HaveOccurred())
		Expect(h.Client.Create(ctx, event)).To(Succeed())
		stale := event.DeepCopy()

		runOf(p, "c-stale", "once", func(g Gomega, phase kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
		}, 10*time.Second)
		u := user(p, kidv1.IdentitySession, "s-stale", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.ObservedEvents).To(BeEquivalentTo(1))
		})

		// The event is requeued while the cache still shows it Pending.
		r := &controllers.KidEventReconciler{
			Client:     staleEvent{Client: h.Operator.GetClient(), stale: stale},
			Users:      h.Operator.Users,
			APIReader:  h.Operator.GetAPIReader(),
			Filters:    actions.NewFilters(),
			HTTPClient: &http.Client{Timeout: 5 * time.Second},
			Clock:      h.Clock,
		}
		_, err = r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(event)})
		Expect(err).NotTo(HaveOccurred())

		got := &kidv1.KidEvent{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(event), got)).To(Succeed())
		Expect(got.Status.Actions).To(HaveLen(1))
		Expect(got.Status.Actions[0].Phase).To(Equal(kidv1.RunSucceeded), "the succeeded run was not reset")
		Expect(got.Status.Actions[0].Attempts).To(BeEquivalentTo(1))
		Expect(t.deliveries()).To(HaveLen(1), "the POST was not sent again")
		again := &kidv1.KidUser{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(u), again)).To(Succeed())
		Expect(again.Status.ObservedEvents).To(BeEquivalentTo(1), "the event was not folded twice")
	})
})
