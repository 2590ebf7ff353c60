package v1alpha1_test

import (
	"encoding/json"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// ownedFields is each managedFields entry of obj as "<operation>/<subresource>"
// to the fields it owns, as the API server stored them.
func ownedFields(obj client.Object) map[string]map[string]any {
	owned := map[string]map[string]any{}
	for _, m := range obj.GetManagedFields() {
		var fields map[string]any
		Expect(json.Unmarshal(m.FieldsV1.GetRawBytes(), &fields)).To(Succeed())
		owned[string(m.Operation)+"/"+m.Subresource] = fields
	}
	return owned
}

// A spec or status listed key by key in managedFields was half of a player's
// bytes in etcd (docs/benchmarks.md, "Spec and status atomic"): both are
// atomic, so each writer owns the whole.
var _ = Describe("What the API server records of who wrote what", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("records a KidUser's spec and folded status as one field each", func() {
		u := validUser(ns)
		u.Labels = map[string]string{"kid.dev/product": "demo"}
		Expect(k8s.Create(ctx, u)).To(Succeed())

		before := u.DeepCopy()
		now := metav1.Now()
		u.Status = kidv1.KidUserStatus{
			Conditions: []metav1.Condition{
				{Type: "ConsentGranted", Status: metav1.ConditionTrue, Reason: "Granted", LastTransitionTime: now},
				{Type: "SessionActive", Status: metav1.ConditionTrue, Reason: "Active", LastTransitionTime: now},
			},
			SessionID: "s-1",
			KUID:      "k-1",
			Consent:   kidv1.ConsentStatus{State: kidv1.ConsentGranted, ChallengeID: "c-1", Time: &now},
			Verification: kidv1.VerificationStatus{State: kidv1.VerificationVerified, Records: []kidv1.VerificationRecord{
				{ID: "v-1", State: kidv1.VerificationVerified, Age: &kidv1.AgeRange{Low: ptr.To[int32](13)}},
			}},
			Session: kidv1.SessionStatus{State: kidv1.SessionActive, Permissions: []kidv1.SessionPermission{
				{Name: "chat", Enabled: true}, {Name: "voice", Enabled: false},
			}},
			EventCounts:    []kidv1.EventCount{{Origin: string(u.UID), Count: 2}},
			ObservedEvents: 2,
		}
		Expect(k8s.Status().Patch(ctx, u, client.MergeFrom(before))).To(Succeed())

		// A later merge patch of one key keeps the rest: atomicity is for
		// ownership, not for what a patch replaces.
		before = u.DeepCopy()
		u.Status.KUID = "k-2"
		Expect(k8s.Status().Patch(ctx, u, client.MergeFrom(before))).To(Succeed())

		stored := &kidv1.KidUser{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(u), stored)).To(Succeed())
		Expect(stored.Status.KUID).To(Equal("k-2"))
		Expect(stored.Status.Session.Permissions).To(HaveLen(2))
		Expect(stored.Status.Conditions).To(HaveLen(2))

		owned := ownedFields(stored)
		Expect(owned).To(HaveKeyWithValue("Update/status", map[string]any{"f:status": map[string]any{}}))
		Expect(owned).To(HaveKey("Update/"))
		Expect(owned["Update/"]).To(HaveKeyWithValue("f:spec", map[string]any{}))
		Expect(owned["Update/"]).To(HaveKey("f:metadata"), "metadata stays key by key: labels and owners are shared")
	})

	It("records a KidEvent's spec and status as one field each", func() {
		e := validEvent(ns)
		e.Spec.Subject = kidv1.EventSubject{SessionID: "s-1", ChallengeID: "c-1"}
		Expect(k8s.Create(ctx, e)).To(Succeed())

		before := e.DeepCopy()
		e.Status.Phase = kidv1.EventApplied
		e.Status.UserRef = &kidv1.LocalObjectReference{Name: "demo-session-0123"}
		Expect(k8s.Status().Patch(ctx, e, client.MergeFrom(before))).To(Succeed())

		stored := &kidv1.KidEvent{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(e), stored)).To(Succeed())
		owned := ownedFields(stored)
		Expect(owned).To(HaveKeyWithValue("Update/status", map[string]any{"f:status": map[string]any{}}))
		Expect(owned["Update/"]).To(HaveKeyWithValue("f:spec", map[string]any{}))
	})
})

// crdServed bounds the wait for the API server to serve a CRD just
// updated: it swaps the schema asynchronously, and Gomega's default of 1 s
// is short on a loaded machine.
const crdServed = 30 * time.Second

var _ = Describe("A KidUser written before its status was atomic", Serial, func() {
	It("takes the operator's next status write, and keeps its status", func() {
		ns := newNamespace()
		crd := &apiextensionsv1.CustomResourceDefinition{}
		Expect(k8s.Get(ctx, client.ObjectKey{Name: "kidusers.kid.dev"}, crd)).To(Succeed())
		atomic := crd.DeepCopy()
		DeferCleanup(func() {
			Expect(k8s.Get(ctx, client.ObjectKey{Name: "kidusers.kid.dev"}, crd)).To(Succeed())
			crd.Spec = atomic.Spec
			Expect(k8s.Update(ctx, crd)).To(Succeed())
		})
		props := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties
		for _, f := range []string{"spec", "status"} {
			p := props[f]
			p.XMapType = nil
			props[f] = p
		}
		Expect(k8s.Update(ctx, crd)).To(Succeed())

		u := validUser(ns)
		Expect(k8s.Create(ctx, u)).To(Succeed())
		Eventually(func(g Gomega) {
			before := u.DeepCopy()
			u.Status.Session = kidv1.SessionStatus{State: kidv1.SessionActive, Permissions: []kidv1.SessionPermission{{Name: "chat", Enabled: true}}}
			u.Status.ObservedEvents++
			g.Expect(k8s.Status().Patch(ctx, u, client.MergeFrom(before))).To(Succeed())
			g.Expect(ownedFields(u)["Update/status"]).To(HaveKeyWithValue("f:status", HaveKey("f:session")), "the old schema's key-by-key record")
		}).WithTimeout(crdServed).Should(Succeed())

		crd.Spec = atomic.Spec
		Expect(k8s.Update(ctx, crd)).To(Succeed())
		Eventually(func(g Gomega) {
			before := u.DeepCopy()
			u.Status.KUID = "k-1"
			u.Status.ObservedEvents++
			g.Expect(k8s.Status().Patch(ctx, u, client.MergeFrom(before))).To(Succeed())
			g.Expect(ownedFields(u)["Update/status"]).To(Equal(map[string]any{"f:status": map[string]any{}}))
		}).WithTimeout(crdServed).Should(Succeed())
		stored := &kidv1.KidUser{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(u), stored)).To(Succeed())
		Expect(stored.Status.Session.Permissions).To(HaveLen(1))
		Expect(stored.Status.KUID).To(Equal("k-1"))
	})
})
