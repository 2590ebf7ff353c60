package kubectlkid_test

import (
	"fmt"
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/internal/kubectlkid"
)

// complete asks the plugin's completion as kubectl_complete-kid does
// (`kubectl-kid __complete <args...>`, the word being typed last) and
// returns the names offered and the directive.
func complete(ns string, args ...string) ([]string, string) {
	GinkgoHelper()
	r := kubectl(ns, nil, append([]string{"__complete"}, args...)...)
	Expect(r.err).NotTo(HaveOccurred())
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	Expect(lines[len(lines)-1]).To(HavePrefix(":"), "the directive ends the answer")
	return lines[:len(lines)-1], lines[len(lines)-1]
}

var _ = Describe("kubectl kid completion", func() {
	It("completes product names, and player names by prefix within the limit, a page at a time", func() {
		p := newProduct(nil)
		ns := p.Namespace
		other, err := h.NewProduct(ctx, ns, "other", nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(h.WaitReady(ctx, other)).To(Succeed())

		// Six players of demo, one of other, and a stand-in of demo.
		var sessions []string
		for i := range 6 {
			id := fmt.Sprintf("s-%d", i)
			send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-" + id, Status: kid.StatusPass, SessionID: id})
			sessions = append(sessions, userNamed(p, kidv1.IdentitySession, id))
		}
		send(other, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-o", Status: kid.StatusPass, SessionID: "s-o"})
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-alone", Status: kid.StatusInProgress})
		standIn := userNamed(p, kidv1.IdentityChallenge, "c-alone")
		for _, u := range append(slices.Clone(sessions), standIn) {
			getUser(ns, u, func(Gomega, *kidv1.KidUser) {})
		}
		getUser(ns, userNamed(other, kidv1.IdentitySession, "s-o"), func(Gomega, *kidv1.KidUser) {})
		slices.Sort(sessions)

		names, directive := complete(ns, "test", "")
		Expect(names).To(Equal([]string{"demo", "other"}))
		Expect(directive).To(Equal(":4"), "no file names")
		names, _ = complete(ns, "events", "--product", "ot")
		Expect(names).To(Equal([]string{"other"}))

		// Every player of the namespace fits the default limit.
		names, _ = complete(ns, "user", "")
		Expect(names).To(ConsistOf(append(sessions, standIn, userNamed(other, kidv1.IdentitySession, "s-o"))))
		names, _ = complete(ns, "user", "demo-sess")
		Expect(names).To(Equal(sessions), "only demo's sessions, in name order")
		names, _ = complete(ns, "erase", "--product", "other", "")
		Expect(names).To(Equal([]string{userNamed(other, kidv1.IdentitySession, "s-o")}))
		names, _ = complete(ns, "user", "nothing-")
		Expect(names).To(BeEmpty())

		// At most 4 names, read 2 a call: the limit holds, across pages.
		DeferCleanup(kubectlkid.SetCompletionBounds(4, 2, 10))
		names, _ = complete(ns, "user", "demo-session-")
		Expect(names).To(Equal(sessions[:4]))
		// And at most 2 calls of 2 names: past them, what matched so far.
		kubectlkid.SetCompletionBounds(4, 2, 2)
		names, _ = complete(ns, "user", "demo-")
		Expect(names).To(HaveLen(4))
		// The last session is past 2 calls of 2 sessions (the kind in the
		// prefix selects demo's sessions by field): not reached.
		names, _ = complete(ns, "user", sessions[5])
		Expect(names).To(BeEmpty())
		kubectlkid.SetCompletionBounds(4, 2, 3)
		names, _ = complete(ns, "user", sessions[5])
		Expect(names).To(Equal([]string{sessions[5]}))
	})
})
