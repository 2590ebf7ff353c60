package controllers_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// No stored field gives back what the privacy settings removed (design.md
// §2, KidEvent). A poll's body is encoding/json's form of a map, and k-ID's
// webhooks are shaped as regularly, so a digest of either would let a reader
// of the event, who sees the rest of its data, try every date of birth of
// the last hundred years, one hash each. Here the product keeps the email,
// so that the date of birth is the only thing a reader does not see.
var _ = Describe("A date of birth the product does not keep", func() {
	const dob = "2012-03-04"

	It("leaves no digest of itself in any stored object", func() {
		// Webhooks only: the fake's get-status answers carry no date of
		// birth, so a poll's copy has none to give back (the poller's
		// construction is tested in internal/inbox,
		// TestDigestsGiveBackNothingRemoved).
		p := newProduct(func(p *kidv1.KidProduct) { p.Spec.Privacy.StoreApproverEmail = true })
		fake := newFakeKid(p.Namespace)
		challenge := fake.StartChallenge()
		_, err := fake.ApproveChallenge(challenge, kidsim.Approval{DOB: dob})
		Expect(err).NotTo(HaveOccurred())

		var pass kidv1.KidEvent
		Eventually(func(g Gomega) {
			found := false
			for _, e := range eventsAbout(p.Namespace, kid.ChallengeStateChange, challenge) {
				if strings.Contains(string(e.Spec.Data.Raw), `"status":"PASS"`) {
					pass, found = e, true
				}
			}
			g.Expect(found).To(BeTrue())
		}, 30*time.Second).Should(Succeed())
		allEventsFinished(p.Namespace)
		Expect(pass.Spec.Source).To(Equal(kidv1.SourceWebhook))
		Expect(string(pass.Spec.Data.Raw)).To(ContainSubstring(kidsim.DefaultApproverEmail), "the email is kept")
		Expect(string(pass.Spec.Data.Raw)).NotTo(ContainSubstring(dob))

		digests := candidateDigests(pass)
		strs := storedStrings(p.Namespace)
		for _, s := range strs {
			for _, window := range hexWindows(s) {
				Expect(digests).NotTo(HaveKey(window), "a stored string holds the digest of a body with a candidate date of birth: %q", s)
			}
		}
		Expect(strs).To(ContainElement(pass.Spec.BodySHA256), "bodySHA256 was among the strings checked")
	})
})

// candidateDigests are the first 8 bytes of the SHA-256 of every body a
// reader of pass could build: its type, and its stored data with any of
// its keys left out (a poll's and a webhook's differ in productId and
// sessionId) and a date of birth of the last hundred years put back in, in
// encoding/json's form (the poller's and k-ID's construction).
func candidateDigests(pass kidv1.KidEvent) map[[8]byte]bool {
	GinkgoHelper()
	var stored map[string]json.RawMessage
	Expect(json.Unmarshal(pass.Spec.Data.Raw, &stored)).To(Succeed())
	var optional []string
	for k := range stored {
		if k != "id" && k != "status" {
			optional = append(optional, k)
		}
	}
	out := map[[8]byte]bool{}
	for subset := range 1 << len(optional) {
		data := map[string]json.RawMessage{"id": stored["id"], "status": stored["status"]}
		for i, k := range optional {
			if subset&(1<<i) != 0 {
				data[k] = stored[k]
			}
		}
		for day := time.Date(1926, 1, 1, 0, 0, 0, 0, time.UTC); day.Year() < 2027; day = day.AddDate(0, 0, 1) {
			data["dob"] = json.RawMessage(`"` + day.Format(time.DateOnly) + `"`)
			body, err := json.Marshal(map[string]any{"eventType": pass.Spec.EventType, "data": data})
			Expect(err).NotTo(HaveOccurred())
			sum := sha256.Sum256(body)
			out[[8]byte(sum[:8])] = true
		}
	}
	return out
}

// storedStrings are every string (values and keys) of every KidEvent and
// KidUser of ns.
func storedStrings(ns string) []string {
	GinkgoHelper()
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, inner := range t {
				out = append(out, k)
				walk(inner)
			}
		case []any:
			for _, inner := range t {
				walk(inner)
			}
		case string:
			out = append(out, t)
		}
	}
	var events kidv1.KidEventList
	var users kidv1.KidUserList
	for _, list := range []client.ObjectList{&events, &users} {
		Expect(h.Client.List(ctx, list, client.InNamespace(ns))).To(Succeed())
		b, err := json.Marshal(list)
		Expect(err).NotTo(HaveOccurred())
		var v any
		Expect(json.Unmarshal(b, &v)).To(Succeed())
		walk(v)
	}
	Expect(events.Items).NotTo(BeEmpty())
	Expect(users.Items).NotTo(BeEmpty())
	return out
}

// hexWindows are the first 8 bytes of every 16 hex digits in s, at every
// offset: a digest whole, cut short or inside a name.
func hexWindows(s string) [][8]byte {
	var out [][8]byte
	for i := 0; i+16 <= len(s); i++ {
		b, err := hex.DecodeString(strings.ToLower(s[i : i+16]))
		if err == nil {
			out = append(out, [8]byte(b))
		}
	}
	return out
}
