package controllers_test

import (
	"net/http"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// confirmAfter is a little more than the controller's confirmDelay: a
// session that read as gone is read again after it.
const confirmAfter = 61 * time.Second

// syncedSession approves a challenge at the fake and waits until the
// player's session has been read from k-ID.
func syncedSession(p *testenv.Product, fake *fakeKid) (string, *kidv1.KidUser) {
	GinkgoHelper()
	session, err := fake.ApproveChallenge(fake.StartChallenge(), kidsim.Approval{})
	Expect(err).NotTo(HaveOccurred())
	u := user(p, kidv1.IdentitySession, session, func(g Gomega, u *kidv1.KidUser) {
		g.Expect(u.Status.Session.SyncedAt).NotTo(BeNil())
		g.Expect(u.Status.KUID).NotTo(BeEmpty())
	})
	return session, u
}

// sessionReads lists the fake's /session/get calls about one session (by
// its id) or one player (by kuid).
func sessionReads(fake *fakeKid, param, value string, status int) []kidsim.APIRequest {
	var out []kidsim.APIRequest
	for _, r := range requests(fake, kidsim.EndpointSessionGet) {
		if r.Query.Get(param) == value && (status == 0 || r.Status == status) {
			out = append(out, r)
		}
	}
	return out
}

func sessionDeletes(ns string) []kidv1.KidEvent {
	var out []kidv1.KidEvent
	for _, e := range events(ns) {
		if e.Spec.EventType == kid.SessionDelete {
			out = append(out, e)
		}
	}
	return out
}

func erasuresHeld(p *testenv.Product) *metav1.Condition {
	GinkgoHelper()
	got := &kidv1.KidProduct{}
	Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(p.KidProduct), got)).To(Succeed())
	return meta.FindStatusCondition(got.Status.Conditions, kidv1.ErasuresHeldCondition)
}

// untouched checks, for a while, that nothing erased the player.
func untouched(p *testenv.Product, u *kidv1.KidUser, why string) {
	GinkgoHelper()
	Consistently(func(g Gomega) {
		got := &kidv1.KidUser{}
		g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(u), got)).To(Succeed())
		g.Expect(got.Status.ErasedAt).To(BeNil(), why)
		g.Expect(got.Status.Session.State).To(Equal(kidv1.SessionActive), why)
		g.Expect(sessionDeletes(p.Namespace)).To(BeEmpty(), why)
	}, 2*time.Second).Should(Succeed())
}

var _ = Describe("k-ID API: never erase on one read", func() {
	It("leaves a player whose session read NOT_FOUND once, then ACTIVE, untouched", func() {
		p, fake := apiProduct(nil)
		session, u := syncedSession(p, fake)

		Expect(fake.SetSessionNotFound(session, 1)).To(Succeed())
		advance(27 * time.Hour) // due for its resync
		touch(u, "resync")
		Eventually(func() []kidsim.APIRequest { return sessionReads(fake, "sessionId", session, http.StatusBadRequest) }).Should(HaveLen(1))
		untouched(p, u, "one NOT_FOUND erases nothing")

		advance(confirmAfter)
		touch(u, "confirm")
		Eventually(func(g Gomega) {
			all := sessionReads(fake, "sessionId", session, 0)
			g.Expect(all[len(all)-1].Status).To(BeElementOf(http.StatusOK, http.StatusNotModified), "the confirming read found the session")
		}).Should(Succeed())
		untouched(p, u, "the confirming read found the session ACTIVE")
		Expect(sessionReads(fake, "kuid", u.Status.KUID, 0)).To(BeEmpty(), "nothing left to ask by kuid")
	})

	It("leaves a player untouched when the read by kuid still finds the session", func() {
		p, fake := apiProduct(nil)
		session, u := syncedSession(p, fake)

		// Both reads by sessionId say NOT_FOUND; the read by kuid is
		// the third, and finds the session.
		Expect(fake.SetSessionNotFound(session, 2)).To(Succeed())
		advance(27 * time.Hour)
		touch(u, "resync")
		Eventually(func() []kidsim.APIRequest { return sessionReads(fake, "sessionId", session, http.StatusBadRequest) }).Should(HaveLen(1))
		advance(confirmAfter)
		touch(u, "confirm")
		Eventually(func() []kidsim.APIRequest { return sessionReads(fake, "kuid", u.Status.KUID, http.StatusOK) }).Should(HaveLen(1))
		Expect(sessionReads(fake, "sessionId", session, http.StatusBadRequest)).To(HaveLen(2))
		untouched(p, u, "k-ID still has the session under its player")
	})

	It("erases a player whose session stays NOT_FOUND, after the confirmation and within two minutes", func() {
		p, fake := apiProduct(nil)
		session, u := syncedSession(p, fake)

		// Not deleted at k-ID (no webhook): the session only reads
		// NOT_FOUND, however it is asked for.
		Expect(fake.SetSessionNotFound(session, kidsim.NotFoundPersistent)).To(Succeed())
		advance(27 * time.Hour)
		touch(u, "resync")
		Eventually(func() []kidsim.APIRequest { return sessionReads(fake, "sessionId", session, http.StatusBadRequest) }).Should(HaveLen(1))
		first := sessionReads(fake, "sessionId", session, http.StatusBadRequest)[0].At
		untouched(p, u, "not before the confirming read")

		advance(confirmAfter)
		touch(u, "confirm")
		erased := user(p, kidv1.IdentitySession, session, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Session.State).To(Equal(kidv1.SessionDeleted))
			g.Expect(u.Status.ErasedAt).NotTo(BeNil())
		})
		Expect(erased.Status.ErasedAt.Time.Sub(first)).To(BeNumerically("<", 2*time.Minute), "the erasure came within two minutes of the first NOT_FOUND")
		byID := sessionReads(fake, "sessionId", session, http.StatusBadRequest)
		Expect(byID).To(HaveLen(2), "one read, one confirmation")
		Expect(byID[1].At.Sub(first)).To(BeNumerically(">=", time.Minute), "the confirmation came after the delay")
		Expect(sessionReads(fake, "kuid", u.Status.KUID, http.StatusBadRequest)).To(HaveLen(1), "and the read by kuid agreed")
		deletes := sessionDeletes(p.Namespace)
		Expect(deletes).To(HaveLen(1))
		Expect(deletes[0].Spec.Source).To(Equal(kidv1.SourcePoll))
		Expect(erasuresHeld(p)).To(BeNil(), "one player's deletion never trips the breaker")
	})

	It("folds a session whose status is not ACTIVE as deleted, not as Active", func() {
		p, fake := apiProduct(nil)
		session, u := syncedSession(p, fake)

		// k-ID's spec: session.status is "ACTIVE or DEL…" (§4.2).
		Expect(fake.SetSessionStatus(session, "DELETED")).To(Succeed())
		synced := len(sessionReads(fake, "sessionId", session, http.StatusOK))
		advance(27 * time.Hour)
		touch(u, "resync")
		Eventually(func() []kidsim.APIRequest { return sessionReads(fake, "sessionId", session, http.StatusOK) }).Should(HaveLen(synced+1), "the resync read a 200")
		Consistently(func(g Gomega) {
			got := &kidv1.KidUser{}
			g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(u), got)).To(Succeed())
			g.Expect(got.Status.Session.Status).NotTo(Equal("DELETED"), "a deleted session is never shown Active")
			g.Expect(got.Status.ErasedAt).To(BeNil(), "nor erased on one read")
		}, 2*time.Second).Should(Succeed())

		advance(confirmAfter)
		touch(u, "confirm")
		user(p, kidv1.IdentitySession, session, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Session.State).To(Equal(kidv1.SessionDeleted))
			g.Expect(u.Status.ErasedAt).NotTo(BeNil())
			g.Expect(meta.IsStatusConditionFalse(u.Status.Conditions, kidv1.SessionActiveCondition)).To(BeTrue())
		})
		Expect(sessionReads(fake, "kuid", u.Status.KUID, http.StatusOK)).To(HaveLen(1), "the read by kuid agreed: DELETED too")
		Expect(sessionDeletes(p.Namespace)).To(ConsistOf(HaveField("Spec.Source", kidv1.SourcePoll)))
	})

	It("holds erasures when 30 of 100 sessions read NOT_FOUND at once, until a person resumes them", func() {
		p, fake := apiProduct(nil)
		const players, missing = 100, 30
		sessions := make([]string, 0, players)
		for range players {
			s, err := fake.ApproveChallenge(fake.StartChallenge(), kidsim.Approval{})
			Expect(err).NotTo(HaveOccurred())
			sessions = append(sessions, s)
		}
		byName := map[string]*kidv1.KidUser{}
		Eventually(func(g Gomega) {
			clear(byName)
			for _, u := range users(p.Namespace) {
				if u.Spec.Identity.Kind == kidv1.IdentitySession && u.Status.Session.SyncedAt != nil {
					byName[u.Name] = &u
				}
			}
			g.Expect(byName).To(HaveLen(players))
		}, time.Minute, 250*time.Millisecond).Should(Succeed())
		userOf := func(session string) *kidv1.KidUser {
			return byName[kidv1.UserName(p.Name, kidv1.IdentitySession, session)]
		}

		// A blip at k-ID: 30 sessions read NOT_FOUND for good.
		for _, s := range sessions[:missing] {
			Expect(fake.SetSessionNotFound(s, kidsim.NotFoundPersistent)).To(Succeed())
		}
		advance(27 * time.Hour)
		for _, s := range sessions {
			touch(userOf(s), "resync")
		}
		Eventually(func(g Gomega) {
			for _, s := range sessions[:missing] {
				g.Expect(sessionReads(fake, "sessionId", s, http.StatusBadRequest)).NotTo(BeEmpty())
			}
		}, 30*time.Second).Should(Succeed())
		Eventually(func(g Gomega) {
			c := erasuresHeld(p)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Reason).To(Equal(kidv1.NotFoundSurgeReason))
			g.Expect(c.Message).To(ContainSubstring(kidv1.ResumeErasuresAnnotation))
		}).Should(Succeed())

		// The confirmations come, and agree, and are held.
		advance(confirmAfter)
		for _, s := range sessions[:missing] {
			touch(userOf(s), "confirm")
		}
		Eventually(func(g Gomega) {
			for _, s := range sessions[:missing] {
				g.Expect(sessionReads(fake, "kuid", userOf(s).Status.KUID, http.StatusBadRequest)).NotTo(BeEmpty())
			}
		}, 30*time.Second).Should(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(sessionDeletes(p.Namespace)).To(BeEmpty())
			for _, u := range users(p.Namespace) {
				g.Expect(u.Status.ErasedAt).To(BeNil(), "%s: held", u.Name)
			}
		}, 3*time.Second).Should(Succeed())

		// A person checked: k-ID did delete them. Their note is longer
		// than the 256 characters status.lastHandledResumeErasures holds
		// (an annotation may hold 256 KiB): only its first 256 are kept,
		// and the status write that closes the breaker is not refused.
		resume := "2026-12-04T10:00:00Z " + strings.Repeat("checked with k-ID support; ", 20)
		Expect(len(resume)).To(BeNumerically(">", 256))
		got := &kidv1.KidProduct{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(p.KidProduct), got)).To(Succeed())
		patch := client.MergeFrom(got.DeepCopy())
		got.Annotations = map[string]string{kidv1.ResumeErasuresAnnotation: resume}
		Expect(h.Client.Patch(ctx, got, patch)).To(Succeed())
		Eventually(func(g Gomega) {
			erased := 0
			for _, u := range users(p.Namespace) {
				if u.Status.ErasedAt != nil {
					erased++
				}
			}
			g.Expect(erased).To(Equal(missing))
		}, time.Minute).Should(Succeed())
		for _, u := range users(p.Namespace) {
			Expect(u.Status.ErasedAt != nil).To(Equal(slices.Contains(sessions[:missing], u.Spec.Identity.ID)), u.Name)
		}
		Expect(sessionDeletes(p.Namespace)).To(HaveLen(missing))
		Eventually(func(g Gomega) {
			got := &kidv1.KidProduct{}
			g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(p.KidProduct), got)).To(Succeed())
			g.Expect(meta.FindStatusCondition(got.Status.Conditions, kidv1.ErasuresHeldCondition)).To(BeNil())
			g.Expect(got.Status.LastHandledResumeErasures).To(Equal(resume[:256]))
		}).Should(Succeed())
	})
})
