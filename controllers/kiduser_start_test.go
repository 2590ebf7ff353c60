package controllers_test

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/cmd/manager/operator"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// queueTimers reads kid_user_queue_timers for one controller.
func queueTimers(controller string) float64 {
	GinkgoHelper()
	v, _, _ := metricSum("kid_user_queue_timers", map[string]string{"controller": controller})
	return v
}

// userReconciles is what both KidUser controllers have reconciled.
func userReconciles() [2]float64 {
	GinkgoHelper()
	return [2]float64{reconciles("kiduser"), reconciles("kiduser-api")}
}

// settled waits until neither KidUser controller reconciles anything for a
// few seconds (more than a sweep).
func settled() {
	GinkgoHelper()
	Eventually(func() bool {
		before := userReconciles()
		time.Sleep(2 * testenv.UserSweep)
		return userReconciles() == before
	}, time.Minute, time.Millisecond).Should(BeTrue(), "the KidUser controllers settle")
}

var _ = Describe("KidUser controllers at a start", func() {
	It("reconciles none of the players with nothing due at a restart, and keeps no queue timer for idle players", func() {
		const players = 120
		p, fake := apiProduct(func(p *kidv1.KidProduct) {
			// Every player has an expiry (in 30 days) and a resync (in an
			// hour): a timer each, were they kept in the queues.
			p.Spec.Retention.Users.AfterInactivity = &metav1.Duration{Duration: 30 * 24 * time.Hour}
			p.Spec.API.SessionResync = &metav1.Duration{Duration: time.Hour}
		})
		// An operator of this namespace alone, so that what the counts
		// show is this spec's players.
		scoped := func(o *operator.Options) { o.WatchNamespaces = []string{p.Namespace} }
		Expect(h.RestartOperatorWith(scoped)).To(Succeed())
		DeferCleanup(func() { Expect(h.RestartOperator()).To(Succeed()) })

		ids := make([]string, players)
		for i := range ids {
			ids[i] = fmt.Sprintf("s-idle-%03d", i)
		}
		synced := h.Clock.Now()
		sessionUsers(p, approvedSessions(fake, ids), ids, func(string) time.Time { return synced })
		settled()
		Expect(queueTimers("kiduser")).To(BeZero(), "no timer for an expiry in 30 days")
		Expect(queueTimers("kiduser-api")).To(BeZero(), "nor for a read in an hour")

		before := userReconciles()
		Expect(h.RestartOperatorWith(scoped)).To(Succeed())
		// The sweep saw every player without a reconcile: the product
		// shows their next resync, an hour from their last read.
		Eventually(func(g Gomega) {
			product := &kidv1.KidProduct{}
			g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(p.KidProduct), product)).To(Succeed())
			g.Expect(product.Status.API).NotTo(BeNil())
			g.Expect(product.Status.API.NextResyncTime).NotTo(BeNil())
			g.Expect(product.Status.API.NextResyncTime.Time).To(BeTemporally(">=", synced.Add(time.Hour).Truncate(time.Minute)))
		}, 30*time.Second).Should(Succeed())
		Consistently(func(g Gomega) {
			after := userReconciles()
			g.Expect(after[0]-before[0]).To(BeZero(), "kiduser reconciled idle players at the start")
			g.Expect(after[1]-before[1]).To(BeZero(), "kiduser-api reconciled idle players at the start")
			g.Expect(queueTimers("kiduser")).To(BeZero())
			g.Expect(queueTimers("kiduser-api")).To(BeZero())
		}, 3*testenv.UserSweep, 200*time.Millisecond).Should(Succeed())

		// A real change still enqueues each, and leaves no timer.
		for _, u := range users(p.Namespace) {
			touch(&u, "changed")
		}
		Eventually(func() float64 { return reconciles("kiduser") - before[0] }, 30*time.Second).Should(BeNumerically(">=", players))
		settled()
		Expect(queueTimers("kiduser")).To(BeZero())
		Expect(queueTimers("kiduser-api")).To(BeZero())
	})

	It("handles a player whose expiry falls due after a restart at its time, through the sweep", func() {
		p := newProduct(func(p *kidv1.KidProduct) {
			p.Spec.Retention.Users.AfterInactivity = &metav1.Duration{Duration: 48 * time.Hour}
		})
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-swept", Status: kid.StatusPass, SessionID: "s-swept"})
		idle := user(p, kidv1.IdentitySession, "s-swept", func(Gomega, *kidv1.KidUser) {})
		allEventsFinished(p.Namespace)
		Expect(h.RestartOperator()).To(Succeed())
		before := retentionDeleted("user-inactive")

		// Nothing touches the player: only the sweep can wake it.
		advance(47 * time.Hour)
		Consistently(func(g Gomega) {
			fresh := &kidv1.KidUser{}
			g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(idle), fresh)).To(Succeed())
		}, 3*testenv.UserSweep, 200*time.Millisecond).Should(Succeed(), "not due yet")
		advance(2 * time.Hour)
		userGone(p, kidv1.IdentitySession, "s-swept")
		Eventually(retentionDeleted).WithArguments("user-inactive").Should(Equal(before + 1))
	})
})
