package controllers_test

import (
	"net/http"
	"net/http/httptest"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	testclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// processed is the event's Processed condition as the API server has it.
func (f *byHand) processed(e *kidv1.KidEvent) *metav1.Condition {
	GinkgoHelper()
	got := &kidv1.KidEvent{}
	Expect(f.client.Get(ctx, client.ObjectKeyFromObject(e), got)).To(Succeed())
	c := meta.FindStatusCondition(got.Status.Conditions, kidv1.ProcessedCondition)
	Expect(c).NotTo(BeNil(), "phase %s, conditions %v", got.Status.Phase, got.Status.Conditions)
	Expect(c.ObservedGeneration).To(Equal(got.Generation))
	return c
}

var _ = Describe("Why an event is where it is", func() {
	// The condition rides on the writes each pass makes anyway: the writes
	// of every kind of pass are pinned by "the writes of one pass".
	DescribeTable("says why it was Ignored or is done",
		func(ns string, prepare func(f *byHand) *kidv1.KidEvent, status metav1.ConditionStatus, reason string) {
			f := newByHand(ns, nil)
			e := prepare(f)
			Expect(f.reconcile(e)).To(Succeed())
			c := f.processed(e)
			Expect(c.Status).To(Equal(status))
			Expect(c.Reason).To(Equal(reason))
		},
		Entry("a type this version does not know", "why-unknown",
			func(f *byHand) *kidv1.KidEvent { return f.store(kid.TestEvent, kidsim.Fields{}) },
			metav1.ConditionTrue, kidv1.UnknownEventTypeReason),
		Entry("data that does not decode (logged before, now on the event)", "why-undecodable",
			func(f *byHand) *kidv1.KidEvent {
				e, _ := builtEvent(f.product, time.Now(), kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
				e.Spec.Data.Raw = []byte(`"not an object"`)
				Expect(f.client.Create(ctx, e)).To(Succeed())
				return e
			},
			metav1.ConditionTrue, kidv1.UndecodableDataReason),
		Entry("a game page's hint", "why-browser",
			func(f *byHand) *kidv1.KidEvent {
				e, _ := builtEvent(f.product, time.Now(), kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
				e.Spec.Source = kidv1.SourceBrowser
				Expect(f.client.Create(ctx, e)).To(Succeed())
				return e
			},
			metav1.ConditionTrue, kidv1.BrowserEventReason),
		Entry("no action matched", "why-no-action",
			func(f *byHand) *kidv1.KidEvent {
				return f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusInProgress})
			},
			metav1.ConditionTrue, kidv1.NoActionMatchedReason),
		Entry("its actions succeeded", "why-succeeded",
			func(f *byHand) *kidv1.KidEvent {
				Expect(f.client.Create(ctx, &kidv1.KidAction{
					ObjectMeta: metav1.ObjectMeta{Name: "notify", Namespace: f.product.Namespace},
					Spec:       kidv1.KidActionSpec{DryRun: true, HTTP: &kidv1.HTTPAction{URL: "https://game.example/kid"}},
				})).To(Succeed())
				return f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"})
			},
			metav1.ConditionTrue, kidv1.ActionsSucceededReason),
	)

	It("says when a failing action is tried again, then that it failed, without the endpoint's answer", func() {
		game := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "secret-answer-of-the-game", http.StatusServiceUnavailable)
		}))
		DeferCleanup(game.Close)
		f := newByHand("why-retry", nil)
		now := testclock.NewFakePassiveClock(time.Now())
		f.r.Clock, f.r.HTTPClient = now, game.Client()
		Expect(f.client.Create(ctx, &kidv1.KidAction{
			ObjectMeta: metav1.ObjectMeta{Name: "notify", Namespace: f.product.Namespace},
			Spec:       kidv1.KidActionSpec{HTTP: &kidv1.HTTPAction{URL: game.URL, MaxAttempts: 2}},
		})).To(Succeed())
		e := f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"})

		Expect(f.reconcile(e)).To(Succeed())
		c := f.processed(e)
		Expect(c.Status).To(Equal(metav1.ConditionFalse))
		Expect(c.Reason).To(Equal(kidv1.RetryScheduledReason))
		Expect(c.Message).To(ContainSubstring("action notify: attempt 1 failed"))
		Expect(c.Message).NotTo(ContainSubstring("secret-answer"))

		now.SetTime(now.Now().Add(time.Hour))
		Expect(f.reconcile(e)).To(Succeed())
		c = f.processed(e)
		Expect(c.Status).To(Equal(metav1.ConditionTrue))
		Expect(c.Reason).To(Equal(kidv1.ActionFailedReason))
		Expect(c.Message).To(ContainSubstring("action notify failed after 2 attempt(s)"))
		Expect(c.Message).NotTo(ContainSubstring("secret-answer"))
	})

	It("says a fold waits for a merge, once: the retries write nothing more", func() {
		conflict := false
		f := newByHand("why-merge", func(obj client.Object) error {
			if _, ok := obj.(*kidv1.KidEvent); ok && conflict {
				conflict = false
				return errConflict(obj)
			}
			return nil
		})
		standIn := &kidv1.KidUser{ObjectMeta: metav1.ObjectMeta{Namespace: f.product.Namespace, Name: kidv1.UserName(f.product.Name, kidv1.IdentityChallenge, "c-wait")}}
		e := f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-wait", Status: kid.StatusInProgress})
		conflict = true
		Expect(f.reconcile(e)).NotTo(Succeed())
		// The stand-in that counted it is merged away (or not in the
		// cache yet) when the fold is retried.
		f.lag.Hide(standIn)
		f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-wait", Status: kid.StatusPass, SessionID: "s-wait"})

		*f.writes = nil
		Expect(f.reconcile(e)).NotTo(Succeed())
		Expect(*f.writes).To(Equal([]string{"patch status KidEvent"}))
		c := f.processed(e)
		Expect(c.Status).To(Equal(metav1.ConditionFalse))
		Expect(c.Reason).To(Equal(kidv1.WaitingForMergeReason))
		*f.writes = nil
		Expect(f.reconcile(e)).NotTo(Succeed())
		Expect(*f.writes).To(BeEmpty())

		f.lag.Release(standIn)
		Expect(f.reconcile(e)).To(Succeed())
		Expect(f.processed(e).Reason).To(Equal(kidv1.NoActionMatchedReason))
	})
})
