package controllers_test

import (
	"fmt"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/fold"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// storedUser stores a KidUser with the given status, as the controllers
// would have left it.
func storedUser(p *testenv.Product, kind kidv1.IdentityKind, id string, status kidv1.KidUserStatus) *kidv1.KidUser {
	GinkgoHelper()
	u := &kidv1.KidUser{
		ObjectMeta: metav1.ObjectMeta{
			Name: kidv1.UserName(p.Name, kind, id), Namespace: p.Namespace,
			Labels:          map[string]string{kidv1.ProductLabel: p.Name},
			OwnerReferences: []metav1.OwnerReference{p.OwnerReference()},
		},
		Spec: kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: p.Name}, Identity: kidv1.UserIdentity{Kind: kind, ID: id}},
	}
	Expect(h.Client.Create(ctx, u)).To(Succeed())
	before := u.DeepCopy()
	u.Status = status
	Expect(h.Client.Status().Patch(ctx, u, client.MergeFrom(before))).To(Succeed())
	return u
}

var _ = Describe("A player many stand-ins were merged into", func() {
	It("takes one more within the CRD's bound on eventCounts, with every event still counted", func() {
		p := newProduct(nil)
		// The stand-in waits for a holder of its challenge.
		standIn := storedUser(p, kidv1.IdentityChallenge, "c-many", kidv1.KidUserStatus{})
		before := standIn.DeepCopy()
		standIn.Status = kidv1.KidUserStatus{ChallengeIDs: []string{"c-many"}, EventCounts: []kidv1.EventCount{{Origin: string(standIn.UID), Count: 1}}, ObservedEvents: 1}
		Expect(h.Client.Status().Patch(ctx, standIn, client.MergeFrom(before))).To(Succeed())

		// The player holds the counts of as many stand-ins as the CRD
		// allows, merged and deleted long ago.
		var counts []kidv1.EventCount
		for i := range fold.MaxEventCounts {
			counts = append(counts, kidv1.EventCount{Origin: fmt.Sprintf("gone-%03d", i), Count: 2})
		}
		storedUser(p, kidv1.IdentitySession, "s-many", kidv1.KidUserStatus{
			SessionID: "s-many", ChallengeIDs: []string{"c-many"}, EventCounts: counts, ObservedEvents: 2 * fold.MaxEventCounts,
		})

		Eventually(func() bool {
			return apierrors.IsNotFound(h.Client.Get(ctx, client.ObjectKeyFromObject(standIn), &kidv1.KidUser{}))
		}, "30s").Should(BeTrue(), "the stand-in was merged and deleted")
		u := user(p, kidv1.IdentitySession, "s-many", func(Gomega, *kidv1.KidUser) {})
		Expect(u.Status.ObservedEvents).To(BeEquivalentTo(2*fold.MaxEventCounts+1), "every event counted once")
		Expect(len(u.Status.EventCounts)).To(BeNumerically("<=", fold.MaxEventCounts/2))
	})
})
