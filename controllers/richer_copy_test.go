package controllers_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// The richer copy wins (design.md §2): k-ID's /challenge/get-status may
// answer PASS without the sessionId (spec §4.3); when the poll stores that
// answer first, the webhook's copy, which carries it, is a duplicate. What
// it carries and the stored copy lacks is added to the stored event, which
// is folded again into the session's user, without counting it twice.
const richerDOB = "2012-06-07"

var _ = Describe("a later, richer copy of a stored event", func() {
	It("links a challenge the poll saw first without its session to the session the webhook names, counting the event once", func() {
		p, fake := apiProduct(func(p *kidv1.KidProduct) {
			p.Spec.Privacy.StoreDateOfBirth = true // the email is not kept
		})
		fake.SetStatusWithoutSession(true)
		// The webhooks arrive well after the poll (k-ID's retries land at
		// +5 s and +10 s; the poll here every second or two).
		fake.SetDeliveryDelay(5 * time.Second)

		challenge := fake.StartChallenge()
		register(p, kidv1.IdentityChallenge, challenge)
		// A date of birth of its own: another spec looks for the default
		// in every namespace.
		session, err := fake.ApproveChallenge(challenge, kidsim.Approval{KUID: "kuid-richer", DOB: richerDOB})
		Expect(err).NotTo(HaveOccurred())

		passOf := func(g Gomega) *kidv1.KidEvent {
			for _, e := range eventsAbout(p.Namespace, kid.ChallengeStateChange, challenge) {
				var data map[string]any
				g.Expect(json.Unmarshal(e.Spec.Data.Raw, &data)).To(Succeed())
				if data["status"] == kid.StatusPass {
					return &e
				}
			}
			return nil
		}
		// The poll stores the PASS first, without the session.
		Eventually(func(g Gomega) {
			pass := passOf(g)
			g.Expect(pass).NotTo(BeNil())
			g.Expect(pass.Spec.Source).To(Equal(kidv1.SourcePoll))
		}, 10*time.Second).Should(Succeed())
		Expect(passOf(Default).Spec.Subject.SessionID).To(BeEmpty(), "the poll answered without the session: the webhook is still to come")

		// Then the webhooks: IN_PROGRESS and PASS, each answered 200.
		Eventually(func(g Gomega) {
			ok := 0
			for _, d := range fake.Deliveries() {
				if d.Status == http.StatusOK {
					ok++
				}
			}
			g.Expect(ok).To(Equal(2), "IN_PROGRESS and PASS delivered")
		}, 20*time.Second).Should(Succeed())

		// The stored PASS gained what the webhook carried: the session
		// (subject, data, label) and the date of birth the product keeps,
		// never the email it does not.
		Eventually(func(g Gomega) {
			pass := passOf(g)
			g.Expect(pass).NotTo(BeNil())
			g.Expect(pass.Spec.Source).To(Equal(kidv1.SourcePoll), "the first copy stays the stored one")
			g.Expect(pass.Spec.Subject.SessionID).To(Equal(session))
			g.Expect(pass.Labels).To(HaveKeyWithValue(kidv1.SessionLabel, session))
			var data map[string]any
			g.Expect(json.Unmarshal(pass.Spec.Data.Raw, &data)).To(Succeed())
			g.Expect(data).To(HaveKeyWithValue("sessionId", session))
			g.Expect(data).To(HaveKeyWithValue("dob", richerDOB))
			g.Expect(data).NotTo(HaveKey("approverEmail"))
			g.Expect(pass.Spec.PersonalData).To(BeTrue())
			g.Expect(pass.Generation).To(BeNumerically(">", 1))
			g.Expect(pass.Status.FoldedGeneration).To(Equal(pass.Generation), "folded again once enriched")
		}, 10*time.Second).Should(Succeed())
		allEventsFinished(p.Namespace)

		// The challenge's player is the session's user: it holds the
		// challenge, the consent and the date of birth, and the stand-in
		// the game registered was merged into it.
		folded := len(eventsAbout(p.Namespace, kid.ChallengeStateChange, challenge))
		Expect(folded).To(Equal(2), "IN_PROGRESS and PASS, one event each")
		u := user(p, kidv1.IdentitySession, session, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.ChallengeIDs).To(ContainElement(challenge))
			g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentGranted))
			g.Expect(u.Status.Consent.ChallengeID).To(Equal(challenge))
			g.Expect(u.Status.KUID).To(Equal("kuid-richer"))
			g.Expect(u.Status.PersonalData).NotTo(BeNil())
			g.Expect(u.Status.PersonalData.DateOfBirth).To(Equal(richerDOB))
			g.Expect(u.Status.PersonalData.ApproverEmail).To(BeEmpty())
		})
		Eventually(func(g Gomega) {
			var names []string
			for _, u := range users(p.Namespace) {
				names = append(names, u.Name)
			}
			g.Expect(names).To(ConsistOf(u.Name), "the registered stand-in was merged into the session's user")
		}).Should(Succeed())
		Consistently(func(g Gomega) {
			got := &kidv1.KidUser{}
			g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(u), got)).To(Succeed())
			g.Expect(got.Status.ObservedEvents).To(BeEquivalentTo(folded), "each event counted once, the enriched PASS included")
		}, 2*time.Second).Should(Succeed())
	})

	It("lets a stored event's spec only gain what it lacks", func() {
		p := newProduct(nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-cel", Status: kid.StatusInProgress, ProductID: 11472})
		var stored kidv1.KidEvent
		Eventually(func(g Gomega) {
			list := eventsAbout(p.Namespace, kid.ChallengeStateChange, "c-cel")
			g.Expect(list).To(HaveLen(1))
			stored = list[0]
		}).Should(Succeed())

		change := func(mutate func(*kidv1.KidEvent)) error {
			e := stored.DeepCopy()
			mutate(e)
			return h.Client.Patch(ctx, e, client.MergeFrom(&stored))
		}
		Expect(change(func(e *kidv1.KidEvent) { e.Spec.Subject.ChallengeID = "c-other" })).NotTo(Succeed(), "an id is never replaced")
		Expect(change(func(e *kidv1.KidEvent) { e.Spec.Subject.ChallengeID = "" })).NotTo(Succeed(), "nor taken away")
		Expect(change(func(e *kidv1.KidEvent) { e.Spec.Source = kidv1.SourcePoll })).NotTo(Succeed(), "the source is the first copy's")
		Expect(change(func(e *kidv1.KidEvent) { e.Spec.BodySHA256 = strings.Repeat("0", 64) })).NotTo(Succeed())
		Expect(change(func(e *kidv1.KidEvent) { e.Spec.Subject.SessionID = "s-cel" })).To(Succeed(), "a missing id may be added")
	})
})
