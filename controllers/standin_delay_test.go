package controllers_test

import (
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/controllers"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

// A challenge's IN_PROGRESS names no session. Folded at once, it makes a
// stand-in, which its PASS, arriving right after, merges into the player
// and deletes: four writes for nothing. It waits a short while first
// (kidevent_standin_delay.go).
var _ = Describe("An IN_PROGRESS that nothing links to a session yet", func() {
	// createdUsers watches the namespace's KidUsers and returns every user
	// the API server saw created, in order, as "<kind> <id>".
	createdUsers := func(ns string) func() []string {
		GinkgoHelper()
		wc, err := client.NewWithWatch(h.Config, client.Options{Scheme: scheme.Scheme})
		Expect(err).NotTo(HaveOccurred())
		w, err := wc.Watch(ctx, &kidv1.KidUserList{}, client.InNamespace(ns))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(w.Stop)
		var mu sync.Mutex
		var created []string
		go func() {
			for ev := range w.ResultChan() {
				if u, ok := ev.Object.(*kidv1.KidUser); ok && ev.Type == watch.Added {
					mu.Lock()
					created = append(created, string(u.Spec.Identity.Kind)+" "+u.Spec.Identity.ID)
					mu.Unlock()
				}
			}
		}()
		return func() []string {
			mu.Lock()
			defer mu.Unlock()
			return append([]string(nil), created...)
		}
	}
	// applied waits until the challenge's event (the one naming a session,
	// or the one naming none) is Applied, and returns it.
	applied := func(ns, challenge string, withSession bool) *kidv1.KidEvent {
		GinkgoHelper()
		var out *kidv1.KidEvent
		Eventually(func(g Gomega) {
			out = nil
			for _, e := range events(ns) {
				if e.Spec.Subject.ChallengeID == challenge && (e.Spec.Subject.SessionID != "") == withSession {
					out = &e
				}
			}
			g.Expect(out).NotTo(BeNil())
			g.Expect(out.Status.Phase).To(Equal(kidv1.EventApplied))
		}, 30*time.Second).Should(Succeed())
		return out
	}

	It("folds straight into the player when the PASS arrives within the delay: no stand-in is ever created", func() {
		p := newProduct(nil)
		created := createdUsers(p.Namespace)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-soon", Status: kid.StatusInProgress})
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-soon", Status: kid.StatusPass, SessionID: "s-soon", KUID: "k-soon"})

		inProgress := applied(p.Namespace, "c-soon", false)
		pass := applied(p.Namespace, "c-soon", true)
		Expect(pass.Spec.ReceivedAt.Sub(inProgress.Spec.ReceivedAt.Time)).To(BeNumerically("<", controllers.DefaultStandInDelay),
			"the PASS was received within the IN_PROGRESS's delay")
		session := kidv1.UserName(p.Name, kidv1.IdentitySession, "s-soon")
		Expect(inProgress.Status.UserRef).To(Equal(&kidv1.LocalObjectReference{Name: session}), "the IN_PROGRESS folded into the player")
		user(p, kidv1.IdentitySession, "s-soon", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentGranted))
			g.Expect(u.Status.ChallengeIDs).To(ConsistOf("c-soon"))
			g.Expect(u.Status.ObservedEvents).To(BeEquivalentTo(2), "each event counted once")
		})
		Expect(created()).To(Equal([]string{"Session s-soon"}), "the only KidUser ever created is the player's")
		Expect(users(p.Namespace)).To(HaveLen(1))
	})

	It("gets its stand-in once the delay is over when nothing links it", func() {
		p := newProduct(nil)
		created := createdUsers(p.Namespace)
		delays, _, _ := metricSum("kid_standin_delays_total", nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-alone", Status: kid.StatusInProgress})

		standIn := user(p, kidv1.IdentityChallenge, "c-alone", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentPending))
			g.Expect(u.Status.ObservedEvents).To(BeEquivalentTo(1))
		})
		e := applied(p.Namespace, "c-alone", false)
		Expect(e.Status.UserRef).To(Equal(&kidv1.LocalObjectReference{Name: standIn.Name}))
		// Both times are the harness clock's, to the second, as stored;
		// the controller waits from the stored receipt.
		Expect(e.Status.AppliedAt.Sub(e.Spec.ReceivedAt.Time)).To(BeNumerically(">=", controllers.DefaultStandInDelay),
			"folded, and its stand-in made, only after the delay")
		after, _, _ := metricSum("kid_standin_delays_total", nil)
		Expect(after).To(BeNumerically(">", delays), "a pass waited")
		Expect(created()).To(Equal([]string{"Challenge c-alone"}))
	})
})
