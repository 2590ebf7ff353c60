package controllers

import (
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// The resync's interval is computed from counts the cache's notifications
// keep, per product: each active session, and each passed verification
// when the product rechecks them; erased players and deleted sessions
// cost nothing.
func TestResyncLoadsFollowTheCachesNotifications(t *testing.T) {
	g := NewWithT(t)
	product := &kidv1.KidProduct{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "demo"}, Spec: kidv1.KidProductSpec{API: &kidv1.APISpec{}}}
	other := &kidv1.KidProduct{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "other"}, Spec: kidv1.KidProductSpec{API: &kidv1.APISpec{}}}
	newUser := func(productName string, kind kidv1.IdentityKind) *kidv1.KidUser {
		return &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: string(kind)},
			Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: productName}, Identity: kidv1.UserIdentity{Kind: kind, ID: "x"}},
		}
	}
	var loads resyncLoads

	session := newUser("demo", kidv1.IdentitySession)
	loads.change(nil, session)
	g.Expect(loads.reads(product)).To(Equal(1), "a session")
	g.Expect(loads.reads(other)).To(BeZero(), "another product's")

	verified := session.DeepCopy()
	verified.Status.Verification.Records = []kidv1.VerificationRecord{{ID: "v-1", State: kidv1.VerificationVerified}, {ID: "v-2", State: kidv1.VerificationFailed}}
	loads.change(session, verified)
	g.Expect(loads.reads(product)).To(Equal(2), "and its passed verification")
	loads.change(verified, verified)
	g.Expect(loads.reads(product)).To(Equal(2), "a resync notification changes nothing")
	product.Spec.API.Recovery.RecheckVerifications = ptr.To(false)
	g.Expect(loads.reads(product)).To(Equal(1), "verifications not rechecked cost nothing")
	product.Spec.API.Recovery.RecheckVerifications = nil

	standIn := newUser("demo", kidv1.IdentityVerification)
	standIn.Status.Verification.Records = []kidv1.VerificationRecord{{ID: "v-3", State: kidv1.VerificationVerified}}
	loads.change(nil, standIn)
	g.Expect(loads.reads(product)).To(Equal(3), "a stand-in's verification")

	deleted := verified.DeepCopy()
	deleted.Status.Session.State = kidv1.SessionDeleted
	loads.change(verified, deleted)
	g.Expect(loads.reads(product)).To(Equal(2), "a deleted session is not read again")
	erased := deleted.DeepCopy()
	erased.Status.ErasedAt = &metav1.Time{}
	loads.change(deleted, erased)
	g.Expect(loads.reads(product)).To(Equal(1), "nor an erased player's verification")
	loads.change(erased, nil)
	loads.change(standIn, nil)
	g.Expect(loads.reads(product)).To(BeZero(), "deleted users cost nothing")
}
