package kubectlkid_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/internal/kubectlkid"
)

// listLog is a client.Reader over the control plane that records every
// list it is asked for, with its selectors: a lookup must never list every
// player (design §5: at 250,000 that list fails).
type listLog struct {
	client.Reader
	mu    sync.Mutex
	lists []string
}

func (l *listLog) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	o := (&client.ListOptions{}).ApplyOptions(opts)
	l.mu.Lock()
	l.lists = append(l.lists, fmt.Sprintf("%T fields=%v labels=%v", list, o.FieldSelector, o.LabelSelector))
	l.mu.Unlock()
	return l.Reader.List(ctx, list, opts...)
}

// unselected returns the recorded lists of KidUsers or KidEvents that
// selected nothing (every player, or every event).
func (l *listLog) unselected() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.lists {
		players, events := strings.Contains(s, "KidUserList"), strings.Contains(s, "KidEventList")
		if (players || events) && strings.Contains(s, "fields=<nil>") && strings.Contains(s, "labels=<nil>") {
			out = append(out, s)
		}
	}
	return out
}

// ofPlayers returns the recorded lists of KidUsers.
func (l *listLog) ofPlayers() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.lists {
		if strings.Contains(s, "KidUserList") {
			out = append(out, s)
		}
	}
	return out
}

var _ = Describe("kubectl kid user's lookups", func() {
	It("find a player by each kind of id with one list by its id label, never listing every player", func() {
		p := newProduct(nil)
		ns := p.Namespace

		// c-1 is seen before the session (a stand-in known by it, merged
		// into the session's user when a PENDING names both); c-2 is a
		// later challenge of the same player that passed, so the player's
		// consent is about c-2 and c-1 is
		// held only in status.challengeIds, which no selectable field
		// reaches.
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusInProgress})
		h.Clock.Advance(2 * time.Second)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPending, SessionID: "s-1", KUID: "k-1"})
		h.Clock.Advance(2 * time.Second)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-2", Status: kid.StatusPass, SessionID: "s-1", KUID: "k-1"})
		player := userNamed(p, kidv1.IdentitySession, "s-1")
		Eventually(func() bool {
			return apierrors.IsNotFound(h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: userNamed(p, kidv1.IdentityChallenge, "c-1")}, &kidv1.KidUser{}))
		}).Should(BeTrue(), "the stand-in is merged away")
		getUser(ns, player, func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.ChallengeIDs).To(ConsistOf("c-1", "c-2"))
			g.Expect(u.Status.Consent.ChallengeID).To(Equal("c-2"))
			g.Expect(u.Status.KUID).To(Equal("k-1"))
		})

		// A player the game registered under a name of its own, known by a
		// verification: found by its identity, not by its name.
		own := &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{Name: "game-player-7", Namespace: ns},
			Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: p.Name}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentityVerification, ID: "v-7"}},
		}
		Expect(h.Client.Create(ctx, own)).To(Succeed())

		for _, c := range []struct{ id, name, how string }{
			{"s-1", player, `session id s-1 (the name of the user known by it)`},
			{"k-1", player, `kuid k-1, held in status (linked to this session user)`},
			{"c-2", player, `challenge id c-2, held in status (linked to this session user)`},
			{"c-1", player, `challenge id c-1, held in status (linked to this session user)`},
			{"v-7", own.Name, `verification id v-7, held in status`},
		} {
			var reads *listLog
			var u *kidv1.KidUser
			var how string
			// Eventually: the game's own user is found once the operator
			// has labelled its ids.
			Eventually(func(g Gomega) {
				var err error
				reads = &listLog{Reader: h.Client}
				u, how, err = kubectlkid.FindUser(ctx, reads, ns, nil, c.id)
				g.Expect(err).NotTo(HaveOccurred())
			}).Should(Succeed(), c.id)
			Expect(u.Name).To(Equal(c.name), c.id)
			Expect(how).To(Equal(c.how), c.id)
			Expect(reads.unselected()).To(BeEmpty(), "%s: every list of players or events selects by a field or a label", c.id)
			// A session's user is found by its name alone; any other id
			// by one list of the users labelled with it, whatever kind
			// of id it is and wherever the user holds it.
			want := []string{fmt.Sprintf("*v1alpha1.KidUserList fields=<nil> labels=%s", kidv1.IDLabel(c.id))}
			if c.id == "s-1" {
				want = nil
			}
			Expect(reads.ofPlayers()).To(Equal(want), c.id)
		}
		_, _, err := kubectlkid.FindUser(ctx, h.Client, ns, nil, "nobody")
		Expect(err).To(MatchError(ContainSubstring("no KidUser in namespace " + ns)))

		// The command finds the player by the challenge only a list holds,
		// with its three events, read through KidEvent's selectable fields.
		r := kubectl(ns, nil, "user", "c-1")
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.out).To(MatchRegexp(`(?m)^Name:\s+%s$`, player))
		Expect(r.out).To(MatchRegexp(`(?m)^Events \(3, by signing time\):`))
	})
})
