package kubectlkid_test

import (
	"encoding/json"
	"regexp"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// keepsPersonalData is a product whose privacy settings keep the approver's
// email and the date of birth: what an erasure must then remove.
func keepsPersonalData(p *kidv1.KidProduct) {
	p.Spec.Privacy = kidv1.PrivacySpec{StoreApproverEmail: true, StoreDateOfBirth: true}
}

// regexpGroup is the first group of pattern's first match in s.
func regexpGroup(pattern, s string) string {
	GinkgoHelper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(s)
	Expect(m).To(HaveLen(2), "%q in %q", pattern, s)
	return m[1]
}

// namespaceJSON is every KidUser and KidEvent of the namespace, as JSON.
func namespaceJSON(ns string) string {
	GinkgoHelper()
	var users kidv1.KidUserList
	var events kidv1.KidEventList
	Expect(h.Client.List(ctx, &users, client.InNamespace(ns))).To(Succeed())
	Expect(h.Client.List(ctx, &events, client.InNamespace(ns))).To(Succeed())
	b, err := json.Marshal([]any{users, events})
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

// consentedPlayer sends a consent PASS that keeps personal data and waits
// until the player's KidUser holds it.
func consentedPlayer(p *testenv.Product, challenge, session, kuid string) (user, event string) {
	GinkgoHelper()
	event = send(p, kid.ChallengeStateChange, kidsim.Fields{
		ChallengeID: challenge, Status: kid.StatusPass, SessionID: session, KUID: kuid,
		DOB: "2015-03-04", ApproverEmail: "parent-of-" + session + "@example.com",
	})
	user = userNamed(p, kidv1.IdentitySession, session)
	getUser(p.Namespace, user, func(g Gomega, u *kidv1.KidUser) {
		g.Expect(u.Status.PersonalData).NotTo(BeNil())
		g.Expect(u.Status.PersonalData.ApproverEmail).To(Equal("parent-of-" + session + "@example.com"))
	})
	getEvent(p.Namespace, event, func(g Gomega, e *kidv1.KidEvent) { g.Expect(e.Spec.PersonalData).To(BeTrue()) })
	return user, event
}

var _ = Describe("kubectl kid erase", func() {
	It("asks, then erases a session's player as k-ID's Session.Delete does: erasedAt, personal data gone, the product's actions run", func() {
		p := newProduct(keepsPersonalData)
		ns := p.Namespace
		t := newTarget()
		httpAction(p, "erase-in-backend", t.URL, kid.SessionDelete)
		player, pass := consentedPlayer(p, "c-1", "s-1", "k-1")

		r := kubectl(ns, strings.NewReader("no\n"), "erase", "c-1")
		Expect(r.err).To(MatchError("not confirmed: nothing was changed"))
		Expect(r.out).To(ContainSubstring("Erasing KidUser " + player + " (product demo) as k-ID's Session.Delete of session s-1 would.\n"))
		Expect(r.out).To(HaveSuffix("Continue? [y/N]: "))
		var list kidv1.KidEventList
		Expect(h.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		Expect(list.Items).To(HaveLen(1), "nothing was stored")

		r = kubectl(ns, strings.NewReader("yes\n"), "erase", "c-1", "--timeout", "30s")
		Expect(r.err).NotTo(HaveOccurred())
		// The answer is not echoed: the prompt and the next line meet.
		Expect(r.out).To(MatchRegexp(`(?m)Continue\? \[y/N\]: kidevent/(demo-session-delete-[0-9a-f]{20}) created \(Session\.Delete, source manual\)\.$`))
		Expect(r.out).To(MatchRegexp(`(?m)^KidUser %s erased at \S+: personal data none kept; no event holds personal data about it\.$`, player))
		manual := regexpGroup(`kidevent/(demo-session-delete-[0-9a-f]{20}) created`, r.out)

		u := getUser(ns, player, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.ErasedAt).NotTo(BeNil())
			g.Expect(u.Status.PersonalData).To(BeNil())
			g.Expect(u.Status.Session.State).To(Equal(kidv1.SessionDeleted))
		})
		Expect(u.Status.SessionID).To(Equal("s-1"), "the ids stay, to show the erasure happened")
		// The consent event kept personal data: it is deleted.
		Eventually(func() bool {
			return apierrors.IsNotFound(h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: pass}, &kidv1.KidEvent{}))
		}).Should(BeTrue())
		Eventually(func() string { return namespaceJSON(ns) }).ShouldNot(Or(ContainSubstring("parent-of-s-1@example.com"), ContainSubstring("2015-03-04")))
		// The manual event ran the product's Session.Delete action, as
		// k-ID's own would have.
		getEvent(ns, manual, func(g Gomega, e *kidv1.KidEvent) {
			g.Expect(e.Spec.Source).To(Equal(kidv1.SourceManual))
			g.Expect(e.Spec.EventType).To(Equal(kid.SessionDelete))
			g.Expect(e.Spec.SignedAt).To(BeNil())
			g.Expect(e.Status.Actions).To(ConsistOf(And(HaveField("Name", "erase-in-backend"), HaveField("Phase", kidv1.RunSucceeded))))
		})
		Expect(t.deliveries()).To(Equal(1))

		// k-ID's own Session.Delete, arriving later, is the same event:
		// answered 200, stored once.
		Expect(send(p, kid.SessionDelete, kidsim.Fields{SessionID: "s-1", ProductID: 11472})).To(Equal(manual))
		Expect(h.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{kidv1.EventTypeLabel: kid.SessionDelete})).To(Succeed())
		Expect(list.Items).To(ConsistOf(HaveField("Spec.Source", kidv1.SourceManual)))

		r = kubectl(ns, nil, "erase", "s-1")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(MatchRegexp(`^KidUser %s was already erased at \S+: nothing to do\.\n$`, player))

		r = kubectl(ns, nil, "user", "s-1")
		Expect(r.out).To(MatchRegexp(`(?m)^  Erased At:\s+20\S+Z$`))
		Expect(r.out).To(MatchRegexp(`(?m)^  Personal Data:\s+none kept$`))
		Expect(r.out).To(MatchRegexp(`(?m)^  \S+\s+Session\.Delete\s+manual\s+Succeeded\s+session/s-1\s+%s$`, manual))
	})

	It("erases every player of an account by its kuid, as k-ID's Account.Delete does", func() {
		p := newProduct(keepsPersonalData)
		ns := p.Namespace
		player, _ := consentedPlayer(p, "c-2", "s-2", "k-2")

		r := kubectl(ns, nil, "erase", "k-2", "--yes")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(ContainSubstring("as k-ID's Account.Delete of kuid k-2 would.\n"))
		Expect(r.out).NotTo(ContainSubstring("Continue?"))
		Expect(r.out).To(MatchRegexp(`(?m)^kidevent/demo-account-delete-[0-9a-f]{20} created \(Account\.Delete, source manual\)\.$`))
		Expect(r.out).To(MatchRegexp(`(?m)^KidUser %s erased at `, player))
		getUser(ns, player, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.AccountDeleted).To(BeTrue())
			g.Expect(u.Status.ErasedAt).NotTo(BeNil())
			g.Expect(u.Status.PersonalData).To(BeNil())
		})
		Eventually(func() string { return namespaceJSON(ns) }).ShouldNot(ContainSubstring("parent-of-s-2@example.com"))
	})

	It("refuses a player known only by a challenge, and bounds its flags", func() {
		p := newProduct(nil)
		ns := p.Namespace
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-3", Status: kid.StatusInProgress})
		getUser(ns, userNamed(p, kidv1.IdentityChallenge, "c-3"), func(Gomega, *kidv1.KidUser) {})

		Expect(kubectl(ns, nil, "erase", "c-3", "--yes").err).To(MatchError(ContainSubstring("is known only by its challenge id c-3, with no session or kuid")))
		Expect(kubectl(ns, nil, "erase", "c-3", "--timeout", "0s").err).To(MatchError(ContainSubstring("--timeout 0s is out of range")))
		Expect(kubectl(ns, nil, "erase", strings.Repeat("x", 300)).err).To(MatchError(ContainSubstring("the id is 300 bytes long")))
		Expect(kubectl(ns, nil, "erase", "nobody", "--yes").err).To(MatchError(ContainSubstring("no KidUser")))
	})
})
