package controllers_test

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/controllers"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

var _ = Describe("KidEvent controller: every event type, through the receiver", func() {
	var p *testenv.Product
	BeforeEach(func() { p = newProduct(nil) })

	It("Challenge.StateChange IN_PROGRESS makes consent Pending", func() {
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusInProgress})
		user(p, kidv1.IdentityChallenge, "c-1", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentPending))
			g.Expect(u.Status.ChallengeIDs).To(ConsistOf("c-1"))
		})
	})

	It("Challenge.StateChange PASS grants consent and links the session and kuid", func() {
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1", KUID: "k-1"})
		u := user(p, kidv1.IdentitySession, "s-1", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Consent).To(HaveField("State", kidv1.ConsentGranted))
			g.Expect(u.Status.Consent.ChallengeID).To(Equal("c-1"))
			g.Expect(u.Status.SessionID).To(Equal("s-1"))
			g.Expect(u.Status.KUID).To(Equal("k-1"))
			g.Expect(u.Status.Session.State).To(Equal(kidv1.SessionActive))
		})
		Expect(meta.IsStatusConditionTrue(u.Status.Conditions, kidv1.ConsentGrantedCondition)).To(BeTrue())
		Expect(meta.IsStatusConditionTrue(u.Status.Conditions, kidv1.SessionActiveCondition)).To(BeTrue())
		Eventually(func(g Gomega) {
			e := events(p.Namespace)
			g.Expect(e).To(HaveLen(1))
			g.Expect(e[0].Status.Phase).To(Equal(kidv1.EventApplied))
			g.Expect(e[0].Status.UserRef).To(Equal(&kidv1.LocalObjectReference{Name: u.Name}))
		}).Should(Succeed())
	})

	It("Challenge.StateChange FAIL denies consent", func() {
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusFail})
		user(p, kidv1.IdentityChallenge, "c-1", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentDenied))
		})
	})

	It("ParentalConsent.Granted grants consent for its challenge", func() {
		send(p, kid.ParentalConsentGranted, kidsim.Fields{ChallengeID: "c-1"})
		user(p, kidv1.IdentityChallenge, "c-1", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentGranted))
			g.Expect(u.Status.Consent.ChallengeID).To(Equal("c-1"))
		})
	})

	It("Verification.Result PASS verifies, with method, age range and category", func() {
		send(p, kid.VerificationResult, kidsim.Fields{ID: "v-1", Status: kid.StatusPass, Method: "id-document", AgeLow: 43, AgeHigh: 43, AgeCategory: "adult"})
		u := user(p, kidv1.IdentityVerification, "v-1", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Verification.State).To(Equal(kidv1.VerificationVerified))
		})
		r := u.Status.Verification.Records[0]
		Expect(r.Method).To(Equal("id-document"))
		Expect(r.AgeCategory).To(Equal("adult"))
		Expect(r.Age).To(Equal(&kidv1.AgeRange{Low: ptr.To[int32](43), High: ptr.To[int32](43)}))
		Expect(meta.IsStatusConditionTrue(u.Status.Conditions, kidv1.AgeVerifiedCondition)).To(BeTrue())
	})

	It("Verification.Result FAIL fails, with the failure reason", func() {
		send(p, kid.VerificationResult, kidsim.Fields{ID: "v-1", Status: kid.StatusFail, FailureReason: "max-attempts-exceeded"})
		user(p, kidv1.IdentityVerification, "v-1", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Verification.State).To(Equal(kidv1.VerificationFailed))
			g.Expect(u.Status.Verification.Records[0].Reason).To(Equal("max-attempts-exceeded"))
		})
	})

	It("AgeAssurance.Result, current shape, verifies like Verification.Result", func() {
		send(p, kid.AgeAssuranceResult, kidsim.Fields{ID: "v-1", Status: kid.StatusPass, Method: "age-estimation", AgeCategory: "digital-youth", AgeLow: 14, AgeHigh: 16})
		user(p, kidv1.IdentityVerification, "v-1", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Verification.State).To(Equal(kidv1.VerificationVerified))
			g.Expect(u.Status.Verification.Records[0].AgeCategory).To(Equal("digital-youth"))
		})
	})

	It("AgeAssurance.Result, legacy shape, reads ageRange, and INCONCLUSIVE decides nothing", func() {
		Expect(p.Sender().Deliver(ctx, []byte(kid.Examples["ageassurance-legacy"]), nowTS(), kid.Sign).Status).To(Equal(200))
		user(p, kidv1.IdentityVerification, "5a58e98a-e477-484b-b36a-3857ea9daaba", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Verification.State).To(Equal(kidv1.VerificationVerified))
			g.Expect(u.Status.Verification.Records[0].Age).To(Equal(&kidv1.AgeRange{Low: ptr.To[int32](18), High: ptr.To[int32](25)}))
		})
		inconclusive := `{"eventType":"AgeAssurance.Result","data":{"id":"v-9","status":"INCONCLUSIVE"}}`
		Expect(p.Sender().Deliver(ctx, []byte(inconclusive), nowTS(), kid.Sign).Status).To(Equal(200))
		user(p, kidv1.IdentityVerification, "v-9", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Verification.State).To(Equal(kidv1.VerificationUnverified))
			g.Expect(u.Status.Verification.Records[0].Reason).To(Equal("inconclusive"))
		})
	})

	It("Verification.Revoke revokes each listed verification on whichever user holds it", func() {
		send(p, kid.VerificationResult, kidsim.Fields{ID: "v-1", Status: kid.StatusPass})
		send(p, kid.VerificationResult, kidsim.Fields{ID: "v-2", Status: kid.StatusPass})
		user(p, kidv1.IdentityVerification, "v-2", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Verification.State).To(Equal(kidv1.VerificationVerified))
		})
		send(p, kid.VerificationRevoke, kidsim.Fields{VerificationIDs: []string{"v-1", "v-2", "v-3"}, Reason: "provider-reported-error"})
		for _, id := range []string{"v-1", "v-2", "v-3"} {
			user(p, kidv1.IdentityVerification, id, func(g Gomega, u *kidv1.KidUser) {
				g.Expect(u.Status.Verification.State).To(Equal(kidv1.VerificationRevoked))
				g.Expect(u.Status.Verification.Records).To(ConsistOf(And(HaveField("ID", id), HaveField("Reason", "provider-reported-error"))))
			})
		}
	})

	It("Session.ChangePermissions marks the permissions changed", func() {
		send(p, kid.SessionChangePermissions, kidsim.Fields{SessionID: "s-1"})
		user(p, kidv1.IdentitySession, "s-1", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Session.PermissionsChangedAt).NotTo(BeNil())
			g.Expect(u.Status.Session.State).To(Equal(kidv1.SessionActive))
		})
	})

	It("Session.Delete deletes the session, and nothing brings it back", func() {
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"})
		send(p, kid.SessionDelete, kidsim.Fields{SessionID: "s-1"})
		send(p, kid.SessionChangePermissions, kidsim.Fields{SessionID: "s-1"})
		u := user(p, kidv1.IdentitySession, "s-1", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.ObservedEvents).To(BeEquivalentTo(3))
		})
		Expect(u.Status.Session.State).To(Equal(kidv1.SessionDeleted))
		Expect(u.Status.ErasedAt).NotTo(BeNil())
		Expect(meta.IsStatusConditionFalse(u.Status.Conditions, kidv1.SessionActiveCondition)).To(BeTrue())
	})

	It("Account.Delete marks every user with that kuid", func() {
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1", KUID: "k-1"})
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-2", Status: kid.StatusPass, SessionID: "s-2", KUID: "k-1"})
		user(p, kidv1.IdentitySession, "s-2", func(g Gomega, u *kidv1.KidUser) { g.Expect(u.Status.KUID).To(Equal("k-1")) })
		user(p, kidv1.IdentitySession, "s-1", func(g Gomega, u *kidv1.KidUser) { g.Expect(u.Status.KUID).To(Equal("k-1")) })
		send(p, kid.AccountDelete, kidsim.Fields{KUID: "k-1"})
		for _, s := range []string{"s-1", "s-2"} {
			user(p, kidv1.IdentitySession, s, func(g Gomega, u *kidv1.KidUser) {
				g.Expect(u.Status.AccountDeleted).To(BeTrue())
				g.Expect(u.Status.ErasedAt).NotTo(BeNil())
			})
		}
	})

	It("Account.Delete before the player's session is known still reaches it", func() {
		send(p, kid.AccountDelete, kidsim.Fields{KUID: "k-7"})
		user(p, kidv1.IdentityAccount, "k-7", func(g Gomega, u *kidv1.KidUser) { g.Expect(u.Status.AccountDeleted).To(BeTrue()) })
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-7", Status: kid.StatusPass, SessionID: "s-7", KUID: "k-7"})
		user(p, kidv1.IdentitySession, "s-7", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.AccountDeleted).To(BeTrue())
		})
	})

	It("Test and unknown event types are Ignored and make no user", func() {
		send(p, kid.TestEvent, kidsim.Fields{})
		Expect(p.Sender().Deliver(ctx, []byte(`{"eventType":"Something.New","data":{"id":"x"}}`), nowTS(), kid.Sign).Status).To(Equal(200))
		Expect(p.Sender().Deliver(ctx, []byte(kid.Examples["adult-verification"]), nowTS(), kid.Sign).Status).To(Equal(200))
		Eventually(func(g Gomega) {
			e := events(p.Namespace)
			g.Expect(e).To(HaveLen(3))
			for _, ev := range e {
				g.Expect(ev.Status.Phase).To(Equal(kidv1.EventIgnored))
			}
		}).Should(Succeed())
		Consistently(func() []kidv1.KidUser { return users(p.Namespace) }, "500ms").Should(BeEmpty())
	})

	It("is idempotent: folding an event again changes nothing, not even the user's event count, and an applied event is not folded again", func() {
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1", KUID: "k-1"})
		u := user(p, kidv1.IdentitySession, "s-1", func(g Gomega, u *kidv1.KidUser) { g.Expect(u.Status.ObservedEvents).To(BeEquivalentTo(1)) })
		allEventsFinished(p.Namespace)
		e := events(p.Namespace)[0]
		Expect(e.Status.Phase).To(Equal(kidv1.EventApplied))

		// A retry after a failure between the user's write and the event's:
		// the event is Pending again in the API server. Status writes do not
		// wake the operator's own controller; a second reconciler does the
		// retry, so this spec decides when the fold runs again.
		pending := e.DeepCopy()
		pending.Status.Phase = kidv1.EventPending
		Expect(h.Client.Status().Patch(ctx, pending, client.MergeFrom(&e))).To(Succeed())
		key := client.ObjectKeyFromObject(&e)
		Eventually(func(g Gomega) kidv1.EventPhase {
			cached := &kidv1.KidEvent{}
			g.Expect(h.Operator.GetClient().Get(ctx, key, cached)).To(Succeed())
			return cached.Status.Phase
		}).Should(Equal(kidv1.EventPending), "the reconciler's cache sees the event Pending")
		r := &controllers.KidEventReconciler{
			Client: h.Operator.GetClient(), APIReader: h.Operator.GetAPIReader(), Users: h.Operator.Users,
			Filters: actions.NewFilters(), Clock: h.Clock,
		}
		_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: key})
		Expect(err).NotTo(HaveOccurred())

		// The fold ran again and left everything as it was, the count
		// included: the first fold left the event's name in the user's
		// inFlightEvents, which tells the second that it was counted.
		refolded := &kidv1.KidUser{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(u), refolded)).To(Succeed())
		Expect(refolded.Status.ObservedEvents).To(BeEquivalentTo(1), "the event was not counted a second time")
		Expect(refolded.Status.InFlightEvents).To(Equal([]string{e.Name}))
		Expect(refolded.Status).To(Equal(u.Status))
		applied := &kidv1.KidEvent{}
		Expect(h.Client.Get(ctx, key, applied)).To(Succeed())
		Expect(applied.Status.Phase).To(Equal(kidv1.EventApplied))
		Expect(applied.Status.UserRef).To(Equal(&kidv1.LocalObjectReference{Name: u.Name}))

		// Reconciling the applied event again writes nothing. (Whether the
		// cache shows it Applied yet is up to timing; a cache that lags is
		// stale_cache_test.go's subject.)
		_, err = r.Reconcile(ctx, ctrl.Request{NamespacedName: key})
		Expect(err).NotTo(HaveOccurred())
		again := &kidv1.KidUser{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(u), again)).To(Succeed())
		Expect(again.ResourceVersion).To(Equal(refolded.ResourceVersion))
		sameEvent := &kidv1.KidEvent{}
		Expect(h.Client.Get(ctx, key, sameEvent)).To(Succeed())
		Expect(sameEvent.ResourceVersion).To(Equal(applied.ResourceVersion))
	})
})

var _ = Describe("Linking a player's events in every order", func() {
	It("ends with one KidUser per player, whatever order the events arrive in", func() {
		p := newProduct(nil)
		// The four events of one player's consent, in every one of the 24
		// orders; each order is its own player (own ids), all in flight at
		// once.
		type step func(player int)
		ids := func(n int) (string, string) { return fmt.Sprintf("c-%02d", n), fmt.Sprintf("s-%02d", n) }
		steps := []step{
			func(n int) {
				c, _ := ids(n)
				send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: c, Status: kid.StatusInProgress})
			},
			func(n int) {
				c, _ := ids(n)
				send(p, kid.ParentalConsentGranted, kidsim.Fields{ChallengeID: c})
			},
			func(n int) {
				c, s := ids(n)
				send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: c, Status: kid.StatusPass, SessionID: s, KUID: "k-" + s})
			},
			func(n int) {
				_, s := ids(n)
				send(p, kid.SessionChangePermissions, kidsim.Fields{SessionID: s})
			},
		}
		orders := permutations([]int{0, 1, 2, 3})
		Expect(orders).To(HaveLen(24))
		for n, order := range orders {
			for _, i := range order {
				steps[i](n)
			}
		}

		for n := range orders {
			c, s := ids(n)
			user(p, kidv1.IdentitySession, s, func(g Gomega, u *kidv1.KidUser) {
				g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentGranted))
				g.Expect(u.Status.ChallengeIDs).To(ConsistOf(c))
				g.Expect(u.Status.KUID).To(Equal("k-" + s))
				g.Expect(u.Status.Session.PermissionsChangedAt).NotTo(BeNil())
				g.Expect(u.Status.ObservedEvents).To(BeEquivalentTo(4), "order %v", orders[n])
			})
		}
		Eventually(func() []kidv1.KidUser { return users(p.Namespace) }).Should(HaveLen(24), "no stand-in is left")
		allEventsFinished(p.Namespace)
	})
})

// permutations returns every ordering of xs.
func permutations(xs []int) [][]int {
	if len(xs) <= 1 {
		return [][]int{append([]int(nil), xs...)}
	}
	var out [][]int
	for i := range xs {
		rest := append(append([]int(nil), xs[:i]...), xs[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]int{xs[i]}, p...))
		}
	}
	return out
}

var _ = Describe("KidEvent controller: the writes of one pass", func() {
	// Each write is an API round trip on the path of every k-ID event
	// (docs/benchmarks.md): a pass makes the writes its event needs, in
	// this order, and a second pass over the same event makes none.
	DescribeTable("makes each write its event needs once, and none on the next pass",
		func(ns string, prepare func(f *byHand) *kidv1.KidEvent, want []string) {
			f := newByHand(ns, nil)
			e := prepare(f)
			*f.writes = nil
			Expect(f.reconcile(e)).To(Succeed())
			Expect(*f.writes).To(Equal(want))
			*f.writes = nil
			Expect(f.reconcile(e)).To(Succeed())
			Expect(*f.writes).To(BeEmpty())
		},
		Entry("a Pending event no action matches: its user made and folded, the event Applied", "writes-fold",
			func(f *byHand) *kidv1.KidEvent {
				return f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusInProgress})
			},
			[]string{"create KidUser", "patch status KidUser", "patch status KidEvent"}),
		Entry("a Pending event a dry-run action matches: Applied with its run, then Succeeded", "writes-run",
			func(f *byHand) *kidv1.KidEvent {
				Expect(f.client.Create(ctx, &kidv1.KidAction{
					ObjectMeta: metav1.ObjectMeta{Name: "notify", Namespace: f.product.Namespace},
					Spec:       kidv1.KidActionSpec{DryRun: true, HTTP: &kidv1.HTTPAction{URL: "https://game.example/kid"}},
				})).To(Succeed())
				return f.store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"})
			},
			[]string{"create KidUser", "patch status KidUser", "patch status KidEvent", "patch status KidEvent"}),
		Entry("an event of a type this version does not know: Ignored", "writes-unknown",
			func(f *byHand) *kidv1.KidEvent {
				return f.store(kid.TestEvent, kidsim.Fields{})
			},
			[]string{"patch status KidEvent"}),
		Entry("an event whose data does not decode: Ignored", "writes-undecodable",
			func(f *byHand) *kidv1.KidEvent {
				e, _ := builtEvent(f.product, time.Now(), kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
				e.Spec.Data.Raw = []byte(`"not an object"`)
				Expect(f.client.Create(ctx, e)).To(Succeed())
				return e
			},
			[]string{"patch status KidEvent"}),
		Entry("a browser event of a product without the k-ID API: Ignored", "writes-browser",
			func(f *byHand) *kidv1.KidEvent {
				e, _ := builtEvent(f.product, time.Now(), kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
				e.Spec.Source = kidv1.SourceBrowser
				Expect(f.client.Create(ctx, e)).To(Succeed())
				return e
			},
			[]string{"patch status KidEvent"}),
		Entry("a late delivery with personal data about an erased player: folded, then deleted", "writes-erased",
			func(f *byHand) *kidv1.KidEvent {
				Expect(f.reconcile(f.store(kid.SessionDelete, kidsim.Fields{SessionID: "s-1"}))).To(Succeed())
				e, _ := builtEvent(f.product, time.Now(), kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"})
				e.Spec.PersonalData = true
				Expect(f.client.Create(ctx, e)).To(Succeed())
				return e
			},
			[]string{"patch status KidUser", "delete KidEvent"}),
	)
})
