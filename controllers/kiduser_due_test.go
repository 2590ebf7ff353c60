package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/cachemem"
)

// dueOf, case by case: what is due for a user, from its skeleton alone.
func TestDueOf(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	created := now.Add(-time.Hour)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	product := func(api, keep bool) *kidv1.KidProduct {
		p := &kidv1.KidProduct{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "demo"}}
		if !keep {
			p.Spec.Retention.Users.AfterInactivity = &metav1.Duration{Duration: 48 * time.Hour}
		}
		if api {
			p.Spec.API = &kidv1.APISpec{SessionResync: &metav1.Duration{Duration: time.Hour}}
		}
		return p
	}
	newUser := func(kind kidv1.IdentityKind, mutate func(*kidv1.KidUser)) *kidv1.KidUser {
		u := &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "u", UID: "uid-1", CreationTimestamp: metav1.Time{Time: created}},
			Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "demo"}, Identity: kidv1.UserIdentity{Kind: kind, ID: "x"}},
		}
		if mutate != nil {
			mutate(u)
		}
		// Labelled as the operator labels a player's ids (labelIDs).
		u.Labels = kidv1.WithIDLabels(u.Labels, u.HeldIDs())
		return u
	}
	synced := func(u *kidv1.KidUser) {
		u.Status.Session = kidv1.SessionStatus{State: kidv1.SessionActive, SyncedAt: at(-10 * time.Minute)}
	}
	for _, c := range []struct {
		name    string
		user    *kidv1.KidUser
		api     bool
		keep    bool      // no retention.users.afterInactivity
		asked   time.Time // pollState.wakeAt, for a user read since the start
		check   bool
		work    time.Time
		read    time.Time // zero: none; readAfter: a time after now
		readNow bool
	}{
		{name: "an idle session is due only at its expiry", user: newUser(kidv1.IdentitySession, nil), work: created.Add(48 * time.Hour)},
		{name: "a read of k-ID moves the expiry", user: newUser(kidv1.IdentitySession, synced), work: now.Add(-10*time.Minute + 48*time.Hour)},
		{name: "an erased user is checked at a start and expires after its erasure", user: newUser(kidv1.IdentitySession, func(u *kidv1.KidUser) { u.Status.ErasedAt = at(-time.Hour) }),
			check: true, work: now.Add(-time.Hour + 30*24*time.Hour)},
		{name: "a stand-in is checked at a start, and its personal data bounded", user: newUser(kidv1.IdentityChallenge, func(u *kidv1.KidUser) {
			u.Status.PersonalData = &kidv1.PersonalData{}
			u.Status.LastEventTime = at(-time.Minute)
		}), keep: true, check: true, work: now.Add(-time.Minute).Add(DefaultRetentionMaxAge)},
		{name: "a session that gained an id since it was labelled is checked at a start", user: func() *kidv1.KidUser {
			u := newUser(kidv1.IdentitySession, nil)
			u.Status.ChallengeIDs = []string{"c-later"}
			return u
		}(), check: true, work: created.Add(48 * time.Hour)},
		{name: "a session never read is read now", user: newUser(kidv1.IdentitySession, nil), api: true, work: created.Add(48 * time.Hour), readNow: true},
		{name: "a session read ten minutes ago is read again after its interval", user: newUser(kidv1.IdentitySession, synced), api: true,
			work: now.Add(-10*time.Minute + 48*time.Hour), read: now.Add(50 * time.Minute)},
		{name: "a requested read is due now", user: newUser(kidv1.IdentitySession, func(u *kidv1.KidUser) {
			synced(u)
			u.Annotations = map[string]string{kidv1.RequestedAtAnnotation: "now"}
		}), api: true, work: now.Add(-10*time.Minute + 48*time.Hour), readNow: true},
		{name: "a user read since the start is due when its reconcile said", user: newUser(kidv1.IdentitySession, nil), api: true, asked: now.Add(3 * time.Hour),
			work: created.Add(48 * time.Hour), read: now.Add(3 * time.Hour)},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := NewWithT(t)
			r := &KidUserReconciler{Clock: clocktesting.NewFakePassiveClock(now)}
			if c.api {
				r.APIClients = NewAPIClients(nil)
			}
			if !c.asked.IsZero() {
				r.polls.update(c.user, func(s *pollState) { s.asked, s.wakeAt = true, c.asked })
			}
			d := r.dueOf(c.user, product(c.api, c.keep), now)
			g.Expect(d.check).To(Equal(c.check), "check")
			g.Expect(d.work).To(BeTemporally("==", c.work), "work")
			switch {
			case c.readNow:
				g.Expect(d.read).To(BeTemporally("==", now), "read")
			case c.read.IsZero():
				g.Expect(d.read.IsZero()).To(BeTrue(), "no read")
			default:
				// The interval is spread by up to 10 % per user.
				g.Expect(d.read).To(BeTemporally(">=", c.read), "read")
				g.Expect(d.read).To(BeTemporally("<=", c.read.Add(6*time.Minute)), "read")
			}
			// The sweep and the start filter see the cache's skeleton of
			// the user, not the user: the answer must be the same.
			g.Expect(r.dueOf(cachemem.Skeleton(c.user), product(c.api, c.keep), now)).To(Equal(d), "the skeleton is due as the user is")
			r.deleted.add(c.user.UID, now)
			g.Expect(r.dueOf(c.user, product(c.api, c.keep), now)).To(Equal(userDue{}), "a user merged and deleted is due nothing")
		})
	}
}

// BenchmarkDueOf is the sweep's cost per player: a session of a product
// with spec.api, not read since the start (the costliest case).
func BenchmarkDueOf(b *testing.B) {
	now := time.Now()
	r := &KidUserReconciler{Clock: clocktesting.NewFakePassiveClock(now), APIClients: NewAPIClients(nil)}
	p := &kidv1.KidProduct{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "demo"}, Spec: kidv1.KidProductSpec{API: &kidv1.APISpec{}}}
	u := &kidv1.KidUser{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "u", UID: "uid-1", CreationTimestamp: metav1.Time{Time: now.Add(-time.Hour)}},
		Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "demo"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: "x"}},
	}
	u.Status.Session = kidv1.SessionStatus{State: kidv1.SessionActive, SyncedAt: &metav1.Time{Time: now.Add(-time.Minute)}}
	for b.Loop() {
		if d := r.dueOf(u, p, now); d.part.product != "" {
			r.polls.setPart(u, d.part)
		}
	}
}
