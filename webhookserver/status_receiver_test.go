package webhookserver_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/webhookserver/relaytoken"
)

// status is the data of an `event: status`.
type status struct {
	Subject struct {
		Kind string `json:"kind"`
		ID   string `json:"id"`
	} `json:"subject"`
	User         string `json:"user"`
	Consent      string `json:"consent"`
	Verification string `json:"verification"`
	Session      string `json:"session"`
	Final        bool   `json:"final"`
}

// sseFrame is one Server-Sent Event (comments are skipped).
type sseFrame struct{ event, data string }

// openStream opens the status stream of ns/demo with tok as a page of
// pageOrigin does, and returns the response and its events (the channel is
// closed at the stream's end).
func openStream(ns, tok string) (*http.Response, <-chan sseFrame) {
	GinkgoHelper()
	req, err := http.NewRequest(http.MethodGet, relayURL(ns)+"/status", nil)
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Origin", pageOrigin)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(resp.Body.Close)
	out := make(chan sseFrame, 16)
	go func() {
		defer GinkgoRecover()
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		var f sseFrame
		for sc.Scan() {
			switch line := sc.Text(); {
			case line == "":
				if f != (sseFrame{}) {
					out <- f
				}
				f = sseFrame{}
			case strings.HasPrefix(line, "event: "):
				f.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				f.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return resp, out
}

// nextStatus waits for the stream's next status.
func nextStatus(frames <-chan sseFrame) status {
	GinkgoHelper()
	var f sseFrame
	Eventually(frames).Should(Receive(&f))
	Expect(f.event).To(Equal("status"), f.data)
	var s status
	Expect(json.Unmarshal([]byte(f.data), &s)).To(Succeed())
	return s
}

// streamEnds expects `event: end` with reason, then the stream's end.
func streamEnds(frames <-chan sseFrame, reason string) {
	GinkgoHelper()
	var f sseFrame
	Eventually(frames).Should(Receive(&f))
	Expect(f).To(Equal(sseFrame{event: "end", data: `{"reason":"` + reason + `"}`}))
	Eventually(frames).Should(BeClosed())
}

var _ = Describe("A game's page following its player's status", func() {
	var ns string
	BeforeEach(func() {
		var err error
		ns, err = h.NewNamespace(ctx)
		Expect(err).NotTo(HaveOccurred())
		browserProduct(ns, func(b *kidv1.BrowserSpec) { b.MaxStreams = ptr.To[int32](2) })
	})

	// registered makes the KidUser a game registers for a challenge it
	// started, and sets its status.
	registered := func(name string, st kidv1.KidUserStatus) *kidv1.KidUser {
		GinkgoHelper()
		u := &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "demo"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentityChallenge, ID: challengeID}},
		}
		Expect(h.Client.Create(ctx, u)).To(Succeed())
		// Merge patches, as the game's writes of its status: the operator
		// labels the user's ids meanwhile (design §5, "Lookups").
		before := u.DeepCopy()
		u.Status = st
		Expect(h.Client.Status().Patch(ctx, u, client.MergeFrom(before))).To(Succeed())
		return u
	}

	It("gets the state of the KidUser holding the token's subject at once, each change of it, and the end once it is final", func() {
		u := registered("my-player", kidv1.KidUserStatus{Consent: kidv1.ConsentStatus{State: kidv1.ConsentPending, ChallengeID: challengeID}})
		// The receiver reads the operator's cache.
		Eventually(func(g Gomega) {
			var state kidv1.ConsentState
			found, err := h.Operator.Users.Peek(ctx, client.ObjectKeyFromObject(u), func(s *kidv1.KidUser) { state = s.Status.Consent.State })
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(found).To(BeTrue())
			g.Expect(state).To(Equal(kidv1.ConsentPending))
		}).Should(Succeed())

		resp, frames := openStream(ns, mint(ns, relaytoken.KindChallenge, challengeID, time.Hour))
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		Expect(resp.Header.Get("Content-Type")).To(Equal("text/event-stream"))
		Expect(resp.Header.Get("Access-Control-Allow-Origin")).To(Equal(pageOrigin))
		first := nextStatus(frames)
		Expect(first.Subject.Kind).To(Equal("challenge"))
		Expect(first.Subject.ID).To(Equal(challengeID))
		Expect(first).To(statusIs("my-player", "Pending", "Unverified", "", false))

		before := u.DeepCopy()
		u.Status.Consent = kidv1.ConsentStatus{State: kidv1.ConsentGranted, ChallengeID: challengeID, Time: ptr.To(metav1.Now())}
		u.Status.PersonalData = &kidv1.PersonalData{ApproverEmail: "parent@example.com", DateOfBirth: "2014-05-06"}
		Expect(h.Client.Status().Patch(ctx, u, client.MergeFrom(before))).To(Succeed())
		Expect(nextStatus(frames)).To(statusIs("my-player", "Granted", "Unverified", "", true))
		streamEnds(frames, "final")
	})

	It("follows a challenge from its stand-in to the session's user that k-ID's webhooks link it to", func() {
		resp, frames := openStream(ns, mint(ns, relaytoken.KindChallenge, challengeID, time.Hour))
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		Expect(nextStatus(frames)).To(statusIs("", "None", "Unverified", "", false), "nobody holds the challenge yet")

		deliver := func(f kidsim.Fields) {
			body, err := kidsim.Build(kid.ChallengeStateChange, f)
			Expect(err).NotTo(HaveOccurred())
			s := &kidsim.Sender{URL: h.WebhookURL(ns, "demo"), Secret: []byte(h.WebhookSecret(ns, "demo")), Clock: h.Clock}
			a := s.Deliver(ctx, body, now(), kid.Sign)
			Expect(a.Status).To(Equal(http.StatusOK), a.String())
		}
		// The controllers make a stand-in for the pending challenge...
		deliver(kidsim.Fields{ChallengeID: challengeID, Status: kid.StatusInProgress})
		Expect(statusUntil(frames, func(s status) bool { return s.Consent == "Pending" })).
			To(statusIs(kidv1.UserName("demo", kidv1.IdentityChallenge, challengeID), "Pending", "Unverified", "", false))

		// ... and merge it into the session's user once the PASS links
		// them.
		deliver(kidsim.Fields{ChallengeID: challengeID, Status: kid.StatusPass, SessionID: sessionID, KUID: "kuid-1", ApproverEmail: "parent@example.com"})
		last := statusUntil(frames, func(s status) bool { return s.Final })
		Expect(last).To(statusIs(kidv1.UserName("demo", kidv1.IdentitySession, sessionID), "Granted", "Unverified", "Active", true))
		streamEnds(frames, "final")
	})

	It("refuses a bad token with 401 and a stream past maxStreams with 429", func() {
		resp, _ := openStream(ns, "v1.not.atoken")
		Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))

		tok := mint(ns, relaytoken.KindSession, sessionID, time.Hour)
		for range 2 {
			resp, frames := openStream(ns, tok)
			Expect(resp.StatusCode).To(Equal(http.StatusOK))
			nextStatus(frames)
		}
		resp, _ = openStream(ns, tok)
		Expect(resp.StatusCode).To(Equal(http.StatusTooManyRequests))
		Expect(resp.Header.Get("Retry-After")).NotTo(BeEmpty())
	})
})

// statusIs matches a status's user, consent, verification, session and
// final.
func statusIs(user, consent, verification, session string, final bool) OmegaMatcher {
	return And(
		HaveField("User", user), HaveField("Consent", consent), HaveField("Verification", verification),
		HaveField("Session", session), HaveField("Final", final),
	)
}

// statusUntil reads statuses until one satisfies ok (the cache may show
// steps between two the test waits for), and returns it.
func statusUntil(frames <-chan sseFrame, ok func(status) bool) status {
	GinkgoHelper()
	for {
		if s := nextStatus(frames); ok(s) {
			return s
		}
	}
}
