package kubectlkid_test

import (
	"net/http"
	"net/http/httptest"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

var _ = Describe("kubectl kid user", func() {
	It("finds a player by each kind of id, and a challenge seen before the session leads to the session's user once merged", func() {
		p := newProduct(nil)
		ns := p.Namespace

		// A challenge without a session: a stand-in known by it.
		inProgress := send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusInProgress})
		standIn := userNamed(p, kidv1.IdentityChallenge, "c-1")
		getUser(ns, standIn, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentPending))
		})
		r := kubectl(ns, nil, "user", "c-1")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(MatchRegexp(`(?m)^Name:\s+%s$`, standIn))
		Expect(r.out).To(MatchRegexp(`(?m)^Identity:\s+Challenge c-1$`))
		Expect(r.out).To(MatchRegexp(`(?m)^Found By:\s+challenge id c-1 \(the name of the user known by it\)$`))

		// The PASS names the session: the stand-in is merged into the
		// session's user and deleted.
		h.Clock.Advance(2 * time.Second) // a later signing time, so the order is certain
		pass := send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1", KUID: "k-1"})
		player := userNamed(p, kidv1.IdentitySession, "s-1")
		Eventually(func() bool {
			return apierrors.IsNotFound(h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: standIn}, &kidv1.KidUser{}))
		}).Should(BeTrue(), "the stand-in is merged away")
		getUser(ns, player, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.ChallengeIDs).To(ConsistOf("c-1"))
		})
		getEvent(ns, pass, func(g Gomega, e *kidv1.KidEvent) { g.Expect(e.Status.Phase).To(Equal(kidv1.EventApplied)) })

		for id, how := range map[string]string{
			"c-1":  `challenge id c-1, held in status \(linked to this session user\)`,
			"s-1":  `session id s-1 \(the name of the user known by it\)`,
			"k-1":  `kuid k-1, held in status \(linked to this session user\)`,
			player: `KidUser name`,
		} {
			r := kubectl(ns, nil, "user", id)
			Expect(r.err).NotTo(HaveOccurred(), id)
			Expect(r.out).To(MatchRegexp(`(?m)^Name:\s+%s$`, player), id)
			Expect(r.out).To(MatchRegexp(`(?m)^Found By:\s+%s$`, how), id)
		}

		r = kubectl(ns, nil, "user", "c-1", "--product", "demo")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(MatchRegexp(`(?m)^Identity:\s+Session s-1$`))
		Expect(r.out).To(MatchRegexp(`(?m)^KUID:\s+k-1$`))
		Expect(r.out).To(MatchRegexp(`(?m)^Challenges:\s+c-1$`))
		Expect(r.out).To(MatchRegexp(`(?m)^Consent:\n  State:\s+Granted\n  Challenge:\s+c-1\n`))
		Expect(r.out).To(MatchRegexp(`(?m)^Session:\n  State:\s+Active$`))
		Expect(r.out).To(MatchRegexp(`(?m)^  Erased At:\s+<none>$`))
		// Both events, the stand-in's included, in signing order.
		Expect(r.out).To(MatchRegexp(`(?m)^Events \(2, by signing time\):\n  SIGNED\s+TYPE\s+SOURCE\s+PHASE\s+SUBJECT\s+EVENT\n`+
			`  \S+\s+Challenge\.StateChange\s+webhook\s+Applied\s+challenge/c-1\s+%s\n`+
			`  \S+\s+Challenge\.StateChange\s+webhook\s+Applied\s+session/s-1\s+%s\n`, inProgress, pass))
		Expect(r.out).To(MatchRegexp(`(?m)^Action Runs:\n  <none>$`))

		// A verification id: no webhook links it to a session, so its
		// player is a stand-in known by it.
		send(p, kid.VerificationResult, kidsim.Fields{VerificationIDs: []string{"v-1"}, Status: kid.StatusPass, Method: "id-document", AgeCategory: "adult", AgeLow: 18, AgeHigh: 20})
		getUser(ns, userNamed(p, kidv1.IdentityVerification, "v-1"), func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.Verification.State).To(Equal(kidv1.VerificationVerified))
		})
		r = kubectl(ns, nil, "user", "v-1")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(MatchRegexp(`(?m)^Identity:\s+Verification v-1$`))
		Expect(r.out).To(MatchRegexp(`(?m)^    v-1\s+Verified\s+id-document\s+adult\s+18-20\s+-\s+\S+$`))

		// -o json prints the KidUser and its events as a List, the objects
		// as the API returns them (kubectl get's shape).
		r = kubectl(ns, nil, "user", "s-1", "-o", "json")
		Expect(r.err).NotTo(HaveOccurred())
		objs := decodeList(r.out)
		Expect(objs).To(HaveLen(3))
		u, ok := objs[0].(*kidv1.KidUser)
		Expect(ok).To(BeTrue(), "the KidUser first")
		Expect(u.Kind).To(Equal("KidUser"))
		Expect(u.APIVersion).To(Equal("kid.dev/v1alpha1"))
		Expect(u.Name).To(Equal(player))
		Expect(u.Status.KUID).To(Equal("k-1"))
		Expect(u.ManagedFields).To(BeEmpty())
		stored := &kidv1.KidUser{}
		Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: player}, stored)).To(Succeed())
		Expect(u.Status).To(Equal(stored.Status), "the status as the API holds it")
		var names []string
		for _, o := range objs[1:] {
			e, ok := o.(*kidv1.KidEvent)
			Expect(ok).To(BeTrue(), "then its KidEvents")
			names = append(names, e.Name)
		}
		Expect(names).To(Equal([]string{inProgress, pass}), "by signing time")
		r = kubectl(ns, nil, "user", "s-1", "-o", "yaml")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(MatchRegexp(`(?m)^kind: List$`))
		Expect(r.out).To(MatchRegexp(`(?m)^  kind: KidUser$`))
		Expect(decodeList(r.out)).To(HaveLen(3), "the YAML holds the same objects")

		Expect(kubectl(ns, nil, "user", "nobody").err).To(MatchError(ContainSubstring("no KidUser in namespace " + ns + " is named nobody")))
		Expect(kubectl(ns, nil, "user", "s-1", "--product", "other").err).To(MatchError(ContainSubstring("no KidUser")))
		Expect(kubectl(ns, nil, "user", "s-1", "-o", "wide").err).To(MatchError(ContainSubstring(`--output "wide" is not supported`)))
		Expect(kubectl(ns, nil, "user", "s-1", "--product", "Not_A_Name").err).To(MatchError(ContainSubstring("is not a KidProduct name")))
	})
})

var _ = Describe("kubectl kid user, for the person on call", func() {
	It("shows each run's next attempt and completion time, and the Kubernetes Events about the player's events", func() {
		p := newProduct(nil)
		ns := p.Namespace
		// One backend is down and asks to be retried in five minutes; the
		// other refuses the call for good.
		later := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "300")
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		DeferCleanup(later.Close)
		refused := newTarget(http.StatusBadRequest)
		for name, url := range map[string]string{"later": later.URL, "refused": refused.URL} {
			a := &kidv1.KidAction{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
				Spec:       kidv1.KidActionSpec{EventTypes: []string{kid.ChallengeStateChange}, HTTP: &kidv1.HTTPAction{URL: url, MaxAttempts: 3}},
			}
			Expect(h.Client.Create(ctx, a)).To(Succeed())
			Eventually(func(g Gomega) {
				got := &kidv1.KidAction{}
				g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(a), got)).To(Succeed())
				g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
			}).Should(Succeed())
		}
		event := send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"})
		var next, completed *metav1.Time
		getEvent(ns, event, func(g Gomega, e *kidv1.KidEvent) {
			g.Expect(e.Status.Actions).To(ConsistOf(
				And(HaveField("Name", "later"), HaveField("Phase", kidv1.RunPending), HaveField("Attempts", BeEquivalentTo(1)), HaveField("NextAttemptAt", Not(BeNil()))),
				And(HaveField("Name", "refused"), HaveField("Phase", kidv1.RunFailed), HaveField("CompletedAt", Not(BeNil())))))
			for _, r := range e.Status.Actions {
				if r.Name == "later" {
					next = r.NextAttemptAt
				} else {
					completed = r.CompletedAt
				}
			}
		})
		Expect(next.Time).To(BeTemporally(">=", h.Clock.Now().Add(4*time.Minute)), "the backend's Retry-After")

		stamp := func(t *metav1.Time) string { return t.UTC().Format(time.RFC3339) }
		Eventually(func(g Gomega) {
			r := kubectl(ns, nil, "user", "s-1")
			g.Expect(r.err).NotTo(HaveOccurred())
			g.Expect(r.out).To(MatchRegexp(`(?m)^Action Runs:\n  EVENT\s+ACTION\s+PHASE\s+ATTEMPTS\s+NEXT ATTEMPT\s+COMPLETED\s+LAST ERROR$`))
			g.Expect(r.out).To(MatchRegexp(`(?m)^  %s\s+later\s+Pending\s+1\s+%s\s+-\s+target answered 503`, event, stamp(next)))
			g.Expect(r.out).To(MatchRegexp(`(?m)^  %s\s+refused\s+Failed\s+1\s+-\s+%s\s+target answered 400`, event, stamp(completed)))
			// The controllers record a Warning on the event whose run
			// failed; it is read by a field selector on involvedObject.
			g.Expect(r.out).To(MatchRegexp(`(?m)^Recent Events \(of the KidUser and its latest KidEvents\):\n  LAST SEEN\s+TYPE\s+REASON\s+OBJECT\s+COUNT\s+MESSAGE\n`+
				`  \S+Z\s+Warning\s+ActionFailed\s+kidevent/%s\s+1\s+action refused failed: target answered 400$`, event))
		}, time.Minute).Should(Succeed())
	})
})
