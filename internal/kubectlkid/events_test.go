package kubectlkid_test

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

var _ = Describe("kubectl kid events", func() {
	It("lists the events by the time received, filters them, and --watch prints a new event as it arrives and is applied", func() {
		p := newProduct(nil)
		ns := p.Namespace
		first := send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusInProgress})
		h.Clock.Advance(2 * time.Second) // a later receivedAt, so the order is certain
		second := send(p, kid.SessionDelete, kidsim.Fields{SessionID: "s-9"})
		for _, name := range []string{first, second} {
			getEvent(ns, name, func(g Gomega, e *kidv1.KidEvent) { g.Expect(e.Status.Phase).To(Equal(kidv1.EventApplied)) })
		}

		r := kubectl(ns, nil, "events")
		Expect(r.err).NotTo(HaveOccurred())
		lines := strings.Split(strings.TrimSpace(r.out), "\n")
		Expect(lines).To(HaveLen(3))
		Expect(strings.Fields(lines[0])).To(Equal([]string{"NAME", "PRODUCT", "TYPE", "SOURCE", "PHASE", "USER", "AGE"}))
		Expect(strings.Fields(lines[1])[:6]).To(Equal([]string{first, "demo", kid.ChallengeStateChange, "webhook", "Applied", userNamed(p, kidv1.IdentityChallenge, "c-1")}))
		Expect(strings.Fields(lines[2])[:6]).To(Equal([]string{second, "demo", kid.SessionDelete, "webhook", "Applied", userNamed(p, kidv1.IdentitySession, "s-9")}))
		// Columns line up under the header.
		Expect(strings.Index(lines[1], " demo ") + 1).To(Equal(strings.Index(lines[0], "PRODUCT")))
		Expect(strings.Index(lines[2], " webhook ") + 1).To(Equal(strings.Index(lines[0], "SOURCE")))
		Expect(strings.Fields(lines[2])[6]).To(MatchRegexp(`^\d+s$`), "the age, on the operator's clock")

		r = kubectl(ns, nil, "events", "--type", kid.SessionDelete)
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(ContainSubstring(second))
		Expect(r.out).NotTo(ContainSubstring(first))

		r = kubectl(ns, nil, "events", "--product", "other")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(BeEmpty())
		Expect(r.errOut).To(Equal("No KidEvents found.\n"))

		r = kubectl(ns, nil, "events", "-A")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(strings.Fields(strings.SplitN(r.out, "\n", 2)[0])[0]).To(Equal("NAMESPACE"))
		Expect(r.out).To(MatchRegexp(`(?m)^%s\s+%s\s+demo\s+`, ns, second))

		out := kidInBackground(ns, "events", "--watch")
		Eventually(out).Should(gbytes.Say(`NAME\s+PRODUCT\s+TYPE\s+SOURCE\s+PHASE\s+USER\s+AGE\n`))
		Eventually(out).Should(gbytes.Say(second))
		third := send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-2", Status: kid.StatusPass, SessionID: "s-2"})
		// Stored Pending by the receiver, then folded into the session's
		// user: one row for each.
		Eventually(out).Should(gbytes.Say(`%s\s+demo\s+Challenge\.StateChange\s+webhook\s+Pending\s+<none>\s+\S+\n`, third))
		Eventually(out).Should(gbytes.Say(`%s\s+demo\s+Challenge\.StateChange\s+webhook\s+Applied\s+%s\s+\S+\n`, third, userNamed(p, kidv1.IdentitySession, "s-2")))
		// The merge of s-2 touches no event: nothing more is printed for it.
		Consistently(out, "1s").ShouldNot(gbytes.Say(third))
	})
})
