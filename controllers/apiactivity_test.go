package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"
)

func TestAPIActivitySumsItsUsersParts(t *testing.T) {
	g := NewWithT(t)
	var woken []types.NamespacedName
	a := newAPIActivity(func(p types.NamespacedName) { woken = append(woken, p) })
	demo := types.NamespacedName{Namespace: "games", Name: "demo"}
	at := func(minute int64) time.Time { return time.Unix(minute*60, 0) }

	g.Expect(a.status(demo)).To(BeNil(), "nothing to show")

	// Three sessions due at minutes 10, 10 and 12; one user given up.
	a.move("games", userPart{}, userPart{product: "demo", due: 10})
	a.move("games", userPart{}, userPart{product: "demo", due: 10})
	a.move("games", userPart{}, userPart{product: "demo", due: 12})
	a.move("games", userPart{}, userPart{product: "demo", givenUp: true})
	st := a.status(demo)
	g.Expect(st.NextResyncTime.Time).To(Equal(at(10)))
	g.Expect(st.RecoveriesGivenUp).To(BeEquivalentTo(1))
	g.Expect(st.LastResyncTime).To(BeNil())
	g.Expect(woken).To(HaveLen(2), "the first due minute and the first user given up change the summary; the rest do not")

	// One of minute 10 is read and due again at 20: 10 still has one.
	a.read(demo, at(9).Add(30*time.Second))
	a.move("games", userPart{product: "demo", due: 10}, userPart{product: "demo", due: 20})
	st = a.status(demo)
	g.Expect(st.LastResyncTime.Time).To(Equal(at(9)), "to the minute, rounded down")
	g.Expect(st.NextResyncTime.Time).To(Equal(at(10)))

	// The other is read too: the soonest is now 12.
	a.move("games", userPart{product: "demo", due: 10}, userPart{product: "demo", due: 21})
	g.Expect(a.status(demo).NextResyncTime.Time).To(Equal(at(12)))

	// A decision comes for the given-up user; a user goes.
	a.move("games", userPart{product: "demo", givenUp: true}, userPart{product: "demo"})
	a.move("games", userPart{product: "demo", due: 12}, userPart{})
	st = a.status(demo)
	g.Expect(st.RecoveriesGivenUp).To(BeZero())
	g.Expect(st.NextResyncTime.Time).To(Equal(at(20)))

	// Another product of the namespace is summed apart.
	a.move("games", userPart{}, userPart{product: "other", due: 5})
	g.Expect(a.status(demo).NextResyncTime.Time).To(Equal(at(20)))

	// A deleted product's sums go, and its users' later departures take
	// nothing from a product that is not there.
	a.forget(demo)
	a.move("games", userPart{product: "demo", due: 20}, userPart{})
	g.Expect(a.status(demo)).To(BeNil())
}

func TestMinuteOfRoundsAsAsked(t *testing.T) {
	g := NewWithT(t)
	g.Expect(minuteOf(time.Unix(125, 0), false)).To(BeEquivalentTo(2))
	g.Expect(minuteOf(time.Unix(125, 0), true)).To(BeEquivalentTo(3))
	g.Expect(minuteOf(time.Unix(120, 0), true)).To(BeEquivalentTo(2), "a whole minute is not rounded up")
	g.Expect(minuteOf(time.Time{}, true)).To(BeZero())
}
