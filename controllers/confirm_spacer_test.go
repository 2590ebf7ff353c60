package controllers

import (
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// TestConfirmSpacer walks one subject's browser events through the
// confirmation window: the first asks, the next waits for the window's end,
// the rest are covered by its read, and the waiter asks when it comes back.
func TestConfirmSpacer(t *testing.T) {
	g := NewWithT(t)
	const spacing = 10 * time.Second
	t0 := time.Unix(1_800_000_000, 0)
	var c confirmSpacer
	type outcome struct {
		wait    time.Duration
		covered bool
	}
	take := func(subject, event string, at time.Duration) outcome {
		w, cov := c.take(subject, event, t0.Add(at), spacing)
		return outcome{w, cov}
	}

	g.Expect(take("s", "e1", 0)).To(Equal(outcome{}), "the first asks")
	g.Expect(take("s", "e2", 2*time.Second)).To(Equal(outcome{wait: 8 * time.Second}), "the next waits for the window's end")
	g.Expect(take("s", "e3", 3*time.Second)).To(Equal(outcome{covered: true}), "e2's read answers it")
	g.Expect(take("s", "e2", 9*time.Second)).To(Equal(outcome{wait: time.Second}), "a waiter that comes back early waits on")
	g.Expect(take("other", "o1", 9*time.Second)).To(Equal(outcome{}), "another subject has a window of its own")
	g.Expect(take("s", "e2", 10*time.Second)).To(Equal(outcome{}), "the waiter asks at the window's end")
	g.Expect(take("s", "e4", 11*time.Second)).To(Equal(outcome{wait: 9 * time.Second}), "a new window")
	g.Expect(take("s", "e5", 31*time.Second)).To(Equal(outcome{}), "a waiter gone a whole window is replaced")
	g.Expect(take("s", "e6", 45*time.Second)).To(Equal(outcome{}), "after a quiet window, at once")

	// Subjects whose window passed are forgotten once many are held.
	for i := range maxIdleSubjects {
		take(fmt.Sprintf("idle-%d", i), "x", 0)
	}
	g.Expect(len(c.subjects)).To(BeNumerically(">=", maxIdleSubjects))
	take("new", "n", time.Hour)
	g.Expect(c.subjects).To(HaveLen(1), "only the new subject is left")
}
