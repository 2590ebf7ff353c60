package kubectlkid_test

import (
	"net/http"
	"sort"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

var _ = Describe("kubectl kid redrive", func() {
	It("re-runs the failed run of one event, then of every event with a failed run of an action, and the target sees each again", func() {
		p := newProduct(nil)
		ns := p.Namespace
		// The backend refuses the first two deliveries (a 400 fails a run
		// for good at once), then accepts.
		t := newTarget(http.StatusBadRequest, http.StatusBadRequest)
		httpAction(p, "notify", t.URL, kid.ChallengeStateChange)
		e1 := send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		e2 := send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-2", Status: kid.StatusPass})
		failed := func(g Gomega, e *kidv1.KidEvent) {
			g.Expect(e.Status.Phase).To(Equal(kidv1.EventFailed))
			g.Expect(e.Status.Actions).To(ConsistOf(And(HaveField("Name", "notify"), HaveField("Phase", kidv1.RunFailed), HaveField("Attempts", BeEquivalentTo(1)))))
		}
		getEvent(ns, e1, failed)
		getEvent(ns, e2, failed)
		Expect(t.deliveries()).To(Equal(2))

		Expect(kubectl(ns, nil, "events").out).To(MatchRegexp(`(?m)^%s\s+demo\s+Challenge\.StateChange\s+webhook\s+Failed\s+`, e1))

		r := kubectl(ns, nil, "redrive", e1)
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(MatchRegexp(`(?m)^kidevent/%s redriven: notify \(failed after 1 attempt\(s\): .*400.*\)$`, e1))
		Expect(r.out).To(ContainSubstring("1 event(s) redriven"))
		succeeded := func(g Gomega, e *kidv1.KidEvent) {
			g.Expect(e.Status.Phase).To(Equal(kidv1.EventSucceeded))
			g.Expect(e.Status.Actions).To(ConsistOf(And(HaveField("Name", "notify"), HaveField("Phase", kidv1.RunSucceeded), HaveField("Attempts", BeEquivalentTo(1)))))
			g.Expect(e.Annotations).NotTo(HaveKey(kidv1.RedriveAnnotation), "the controller removes the annotation")
		}
		getEvent(ns, e1, succeeded)
		Expect(t.deliveries()).To(Equal(3))
		getEvent(ns, e2, failed)

		r = kubectl(ns, nil, "redrive", "--failed", "--action", "other")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(Equal("No KidEvent in namespace " + ns + " has a failed run of action other.\n"))

		r = kubectl(ns, nil, "redrive", "--failed", "--action", "notify")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(MatchRegexp(`(?m)^kidevent/%s redriven: notify `, e2))
		Expect(r.out).NotTo(ContainSubstring(e1))
		getEvent(ns, e2, succeeded)
		Expect(t.deliveries()).To(Equal(4))

		// Nothing failed is left.
		Expect(kubectl(ns, nil, "redrive", e1).err).To(MatchError(ContainSubstring("KidEvent " + e1 + " has no failed run: nothing to redrive")))
		Expect(kubectl(ns, nil, "redrive", "--failed").out).To(ContainSubstring("has a failed run."))
		Expect(kubectl(ns, nil, "redrive").err).To(MatchError(ContainSubstring("name one event, or pass --failed")))
		Expect(kubectl(ns, nil, "redrive", e1, "--failed").err).To(MatchError(ContainSubstring("name one event, or pass --failed")))
		Expect(kubectl(ns, nil, "redrive", "no-such-event").err).To(MatchError(ContainSubstring("not found")))
	})
})

// eventsOf is every KidEvent of the namespace, by name.
func eventsOf(ns string) []kidv1.KidEvent {
	GinkgoHelper()
	var list kidv1.KidEventList
	Expect(h.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	return list.Items
}

var _ = Describe("kubectl kid redrive, before it changes anything", func() {
	It("--dry-run prints what it would redrive and changes nothing; more than one event asks first, and only yes or --yes redrives", func() {
		p := newProduct(nil)
		ns := p.Namespace
		t := newTarget(http.StatusBadRequest, http.StatusBadRequest, http.StatusBadRequest, http.StatusBadRequest)
		httpAction(p, "notify", t.URL, kid.ChallengeStateChange)
		e1 := send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		e2 := send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-2", Status: kid.StatusPass})
		failedAfter := func(attempts int) func(Gomega, *kidv1.KidEvent) {
			return func(g Gomega, e *kidv1.KidEvent) {
				g.Expect(e.Status.Phase).To(Equal(kidv1.EventFailed))
				g.Expect(e.Status.Actions).To(ConsistOf(And(HaveField("Phase", kidv1.RunFailed), HaveField("Attempts", BeEquivalentTo(attempts)))))
				g.Expect(e.Annotations).NotTo(HaveKey(kidv1.RedriveAnnotation))
			}
		}
		getEvent(ns, e1, failedAfter(1))
		getEvent(ns, e2, failedAfter(1))
		before := eventsOf(ns)
		Expect(before).To(HaveLen(2))
		unchanged := func() {
			GinkgoHelper()
			after := eventsOf(ns)
			Expect(after).To(HaveLen(len(before)))
			for i := range before {
				Expect(after[i].ResourceVersion).To(Equal(before[i].ResourceVersion), after[i].Name)
				Expect(after[i]).To(Equal(before[i]), after[i].Name)
			}
			Expect(t.deliveries()).To(Equal(2))
		}

		r := kubectl(ns, nil, "redrive", "--failed", "--dry-run")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(Equal(
			"kidevent/" + e1 + " would be redriven: notify (failed after 1 attempt(s): target answered 400)\n" +
				"kidevent/" + e2 + " would be redriven: notify (failed after 1 attempt(s): target answered 400)\n" +
				"2 event(s) would be redriven (dry run: nothing was changed).\n"))
		unchanged()
		r = kubectl(ns, nil, "redrive", e1, "--dry-run")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(HaveSuffix("1 event(s) would be redriven (dry run: nothing was changed).\n"))
		unchanged()

		r = kubectl(ns, strings.NewReader("n\n"), "redrive", "--failed")
		Expect(r.err).To(MatchError("not confirmed: nothing was changed"))
		Expect(r.out).To(Equal(
			"kidevent/" + e1 + ": notify (failed after 1 attempt(s): target answered 400)\n" +
				"kidevent/" + e2 + ": notify (failed after 1 attempt(s): target answered 400)\n" +
				"Redrive these 2 events, running their failed runs again? [y/N]: "))
		unchanged()
		// A script that forgot --yes: no answer is no.
		Expect(kubectl(ns, nil, "redrive", "--failed").err).To(MatchError("not confirmed (no answer): nothing was changed"))
		unchanged()

		r = kubectl(ns, nil, "redrive", "--failed", "--yes")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).NotTo(ContainSubstring("[y/N]"))
		Expect(r.out).To(ContainSubstring("2 event(s) redriven"))
		Eventually(t.deliveries).Should(Equal(4), "the backend still answers 400: both failed again")
		getEvent(ns, e1, failedAfter(1))
		getEvent(ns, e2, failedAfter(1))

		r = kubectl(ns, strings.NewReader("y\n"), "redrive", "--failed")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(ContainSubstring("[y/N]: kidevent/"))
		for _, e := range []string{e1, e2} {
			getEvent(ns, e, func(g Gomega, e *kidv1.KidEvent) { g.Expect(e.Status.Phase).To(Equal(kidv1.EventSucceeded)) })
		}
		Expect(t.deliveries()).To(Equal(6))
	})
})
