package operator_test

import (
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/test/testenv"
	"github.com/kid-operator/kid-operator/webhookserver/relaytoken"
)

var _ = Describe("The receiving tier's browser endpoints", func() {
	It("relay and stream status under receiver_role.yaml alone (a user the game registered, under a name of its own, followed by its identity), and let the receiver stop with a stream open", func() {
		cfg := identity("kid-receiver", installClusterRole("config/rbac/receiver_role.yaml"))
		opts := h.OperatorOptions()
		opts.ReceiverOnly = true
		op, stop, err := testenv.StartOperator(cfg, opts)
		Expect(err).NotTo(HaveOccurred())
		stopped := false
		DeferCleanup(func() {
			if !stopped {
				Expect(stop()).To(Succeed())
			}
		})

		const origin, key, challenge = "https://play.example.com", "relay-key", "c-1"
		ns := newNamespace()
		Expect(h.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "demo-relay", Namespace: ns, Labels: kidv1.SecretLabels()}, StringData: map[string]string{"current": key}})).To(Succeed())
		_, err = h.NewProduct(ctx, ns, "demo", func(p *kidv1.KidProduct) {
			p.Spec.Browser = &kidv1.BrowserSpec{AllowedOrigins: []string{origin}, TokenSecretRef: kidv1.LocalObjectReference{Name: "demo-relay"}}
		})
		Expect(err).NotTo(HaveOccurred())
		tok, err := relaytoken.Mint([]byte(key), ns+"/demo", relaytoken.Subject{Kind: relaytoken.KindChallenge, ID: challenge}, time.Now().Add(time.Hour))
		Expect(err).NotTo(HaveOccurred())
		base := "http://" + op.Receiver.Addr() + "/browser/" + ns + "/demo"

		// No controller runs: the receiver needs the product, its token
		// Secret and the create.
		Eventually(func() int {
			req, _ := http.NewRequest(http.MethodPost, base, strings.NewReader(`{"eventType":"Widget.AgeGate.Challenge","data":{"status":"PENDING","challengeId":"c-1"}}`))
			req.Header.Set("Origin", origin)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			return resp.StatusCode
		}).Should(Equal(http.StatusOK), "once its informer has seen the product")
		var list kidv1.KidEventList
		Expect(h.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		Expect(list.Items).To(ConsistOf(HaveField("Spec.Source", kidv1.SourceBrowser)))

		// A game registered the player's challenge.
		u := &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{Name: "player", Namespace: ns},
			Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "demo"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentityChallenge, ID: challenge}},
		}
		Expect(h.Client.Create(ctx, u)).To(Succeed())
		u.Status.Consent = kidv1.ConsentStatus{State: kidv1.ConsentPending, ChallengeID: challenge}
		Expect(h.Client.Status().Update(ctx, u)).To(Succeed())

		open := func(tok string) (*http.Response, <-chan string) {
			req, _ := http.NewRequest(http.MethodGet, base+"/status", nil)
			req.Header.Set("Origin", origin)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(resp.Body.Close)
			return resp, testenv.StreamData(resp.Body)
		}
		resp, data := open(tok)
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		var first string
		Eventually(data).Should(Receive(&first))
		Expect(first).To(And(ContainSubstring(`"user":"player"`), ContainSubstring(`"consent":"Pending"`)))

		u.Status.Consent.State = kidv1.ConsentGranted
		Expect(h.Client.Status().Update(ctx, u)).To(Succeed())
		Eventually(data).Should(Receive(And(ContainSubstring(`"consent":"Granted"`), ContainSubstring(`"final":true`))))
		Eventually(data).Should(Receive(Equal(`{"reason":"final"}`)))
		Eventually(data).Should(BeClosed())

		// A stream open at shutdown (of a session nobody holds yet) ends at
		// once, so the receiver drains.
		session, err := relaytoken.Mint([]byte(key), ns+"/demo", relaytoken.Subject{Kind: relaytoken.KindSession, ID: "s-1"}, time.Now().Add(time.Hour))
		Expect(err).NotTo(HaveOccurred())
		resp, data = open(session)
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		Eventually(data).Should(Receive())
		began := time.Now()
		stopped = true
		Expect(stop()).To(Succeed())
		Expect(time.Since(began)).To(BeNumerically("<", 5*time.Second))
		Eventually(data).Should(Receive(Equal(`{"reason":"shutdown"}`)))
	})
})
