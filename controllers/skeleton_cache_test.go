package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// The manager's cache holds KidUser skeletons (internal/cachemem): a fold
// and a merge read the player live, so they keep every field of its status
// that they do not change. Written from a skeleton, the player would lose
// its event counts, its permissions' details and everything else the
// skeleton drops.
var _ = Describe("A player folded and merged into, with a cache of skeletons", func() {
	It("keeps every field of its status", func() {
		p := newProduct(nil)
		// A player as a long life leaves it: a session read from k-ID,
		// a verification, events counted.
		u := &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{
				Name: kidv1.UserName(p.Name, kidv1.IdentitySession, "s-full"), Namespace: p.Namespace,
				Labels: map[string]string{kidv1.ProductLabel: p.Name},
			},
			Spec: kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: p.Name}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: "s-full"}},
		}
		Expect(h.Client.Create(ctx, u)).To(Succeed())
		then := metav1.NewTime(h.Clock.Now().Add(-time.Hour).Truncate(time.Second))
		before := u.DeepCopy()
		u.Status = kidv1.KidUserStatus{
			SessionID: "s-full", KUID: "k-full", ChallengeIDs: []string{"c-old"},
			Consent: kidv1.ConsentStatus{State: kidv1.ConsentGranted, ChallengeID: "c-old", Time: &then},
			Verification: kidv1.VerificationStatus{State: kidv1.VerificationVerified, Records: []kidv1.VerificationRecord{{
				ID: "v-full", State: kidv1.VerificationVerified, Method: "age-estimation", AgeCategory: "TEEN",
				Age: &kidv1.AgeRange{Low: ptr.To[int32](13), High: ptr.To[int32](15)}, Time: &then,
			}}},
			Session: kidv1.SessionStatus{
				State: kidv1.SessionActive, PermissionsChangedAt: &then, SyncedAt: &then, PermissionsReadAt: &then,
				Permissions: []kidv1.SessionPermission{
					{Name: "chat", Enabled: false, ManagedBy: "GUARDIAN", VerifiedAgeThreshold: ptr.To[int32](16)},
					{Name: "multiplayer", Enabled: true, ManagedBy: "PLAYER"},
				},
				PermissionsSummary: "1/2 enabled", AgeStatus: "CONSENT_GRANTED", Jurisdiction: "US-CA", Status: "ACTIVE", ETag: `W/"full"`,
			},
			LastEventRef: &kidv1.LocalObjectReference{Name: "an-old-event"}, LastEventTime: &then,
			ObservedEvents: 7, EventCounts: []kidv1.EventCount{{Origin: string(u.UID), Count: 7}},
		}
		Expect(h.Client.Status().Patch(ctx, u, client.MergeFrom(before))).To(Succeed())
		lived := u.Status.DeepCopy()

		// A challenge first seen on its own (a stand-in), then linked to
		// the session: one fold into the stand-in, one into the player,
		// and the stand-in merged into the player.
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-new", Status: kid.StatusInProgress})
		user(p, kidv1.IdentityChallenge, "c-new", func(g Gomega, s *kidv1.KidUser) { g.Expect(s.Status.ObservedEvents).To(BeEquivalentTo(1)) })
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-new", Status: kid.StatusPass, SessionID: "s-full"})
		Eventually(func() []kidv1.KidUser { return users(p.Namespace) }, 30*time.Second).Should(HaveLen(1), "the stand-in was merged away")
		got := user(p, kidv1.IdentitySession, "s-full", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.ObservedEvents).To(BeEquivalentTo(9), "seven events before, two since, each counted once")
		})

		st := got.Status
		Expect(st.EventCounts).To(ContainElement(kidv1.EventCount{Origin: string(u.UID), Count: 8}), "the player's own count, one fold since")
		Expect(st.ChallengeIDs).To(ConsistOf("c-old", "c-new"))
		Expect(st.KUID).To(Equal(lived.KUID))
		Expect(st.Verification).To(Equal(lived.Verification))
		Expect(st.Session.Permissions).To(Equal(lived.Session.Permissions))
		Expect(st.Session.PermissionsSummary).To(Equal(lived.Session.PermissionsSummary))
		Expect(st.Session.AgeStatus).To(Equal(lived.Session.AgeStatus))
		Expect(st.Session.Jurisdiction).To(Equal(lived.Session.Jurisdiction))
		Expect(st.Session.Status).To(Equal(lived.Session.Status))
		Expect(st.Session.ETag).To(Equal(lived.Session.ETag))
		Expect(st.Session.SyncedAt).To(Equal(lived.Session.SyncedAt))
		Expect(st.Session.PermissionsReadAt).To(Equal(lived.Session.PermissionsReadAt))
		Expect(st.Session.PermissionsChangedAt).To(Equal(lived.Session.PermissionsChangedAt))
		Expect(st.LastEventRef).NotTo(BeNil())
		Expect(st.Conditions).To(HaveLen(3))
	})
})
