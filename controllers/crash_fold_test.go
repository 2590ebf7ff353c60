package controllers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/controllers"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/cachemem"
	"github.com/kid-operator/kid-operator/internal/fold"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

// builtEvent builds a KidEvent as the receiver stores it, not yet created,
// and what the fold reads of it.
func builtEvent(product *kidv1.KidProduct, now time.Time, eventType string, f kidsim.Fields) (*kidv1.KidEvent, *fold.Event) {
	GinkgoHelper()
	body, err := kidsim.Build(eventType, f)
	Expect(err).NotTo(HaveOccurred())
	env, err := kid.ParseEnvelope(body)
	Expect(err).NotTo(HaveOccurred())
	event, err := inbox.Build(product, env, body, now, now, kidv1.SourceWebhook)
	Expect(err).NotTo(HaveOccurred())
	fe := &fold.Event{Name: event.Name, Type: event.Spec.EventType, SignedAt: event.Spec.SignedAt.Time, Subject: event.Spec.Subject}
	Expect(json.Unmarshal(event.Spec.Data.Raw, &fe.Payload)).To(Succeed())
	return event, fe
}

// foldedBeforeACrash writes the KidUser known by (kind, id) as the KidEvent
// controller's first write leaves it: made, then fe folded into its status.
// A crash before the second write (the event's Applied) leaves the event
// Pending, and the restarted controller folds it again. The event is
// created after this, so that the running controller's first fold of it is
// that second one.
func foldedBeforeACrash(p *kidv1.KidProduct, kind kidv1.IdentityKind, id string, fe *fold.Event) *kidv1.KidUser {
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
	u.Status = *fold.Apply(&u.Status, fe, kid.Privacy{}, string(u.UID))
	Expect(h.Client.Status().Patch(ctx, u, client.MergeFrom(before))).To(Succeed())
	Expect(u.Status.ObservedEvents).To(BeEquivalentTo(1))
	Expect(u.Status.InFlightEvents).To(Equal([]string{fe.Name}))
	return u
}

// applied waits until the event is past Pending. The controller writes the
// user before the event, so the user's fold is done by then.
func applied(e *kidv1.KidEvent) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		got := &kidv1.KidEvent{}
		g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(e), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(kidv1.EventApplied))
	}).Should(Succeed())
}

var _ = Describe("A crash between a user's write and its event's", func() {
	It("counts the event folded again once, and forgets its name once it is applied", func() {
		p := newProduct(nil)
		event, fe := builtEvent(p.KidProduct, h.Clock.Now(), kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-crash", Status: kid.StatusPass, SessionID: "s-crash"})
		u := foldedBeforeACrash(p.KidProduct, kidv1.IdentitySession, "s-crash", fe)

		Expect(h.Client.Create(ctx, event)).To(Succeed())
		applied(event)
		got := &kidv1.KidUser{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(u), got)).To(Succeed())
		Expect(got.Status.ObservedEvents).To(BeEquivalentTo(1), "the event was counted once")
		Expect(got.Status.InFlightEvents).To(Equal([]string{event.Name}), "nothing has folded into the user since")

		// The next event for the player drops the name of the first, which
		// it sees Applied; its own stays until a later fold sees it so.
		send(p, kid.SessionChangePermissions, kidsim.Fields{SessionID: "s-crash"})
		var second string
		Eventually(func(g Gomega) {
			all := events(p.Namespace)
			g.Expect(all).To(HaveLen(2))
			for _, e := range all {
				if e.Name != event.Name {
					second = e.Name
				}
			}
		}).Should(Succeed())
		user(p, kidv1.IdentitySession, "s-crash", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.ObservedEvents).To(BeEquivalentTo(2))
			g.Expect(u.Status.InFlightEvents).To(Equal([]string{second}))
		})
	})

	It("counts an event folded into a stand-in once, when it is folded again after the stand-in was merged", func() {
		p := newProduct(nil)
		event, fe := builtEvent(p.KidProduct, h.Clock.Now(), kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-merged", Status: kid.StatusInProgress})
		standIn := foldedBeforeACrash(p.KidProduct, kidv1.IdentityChallenge, "c-merged", fe)

		// The challenge passes: the session's user holds the challenge, and
		// the KidUser controller merges the stand-in into it, name and all.
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-merged", Status: kid.StatusPass, SessionID: "s-merged"})
		Eventually(func() bool {
			return apierrors.IsNotFound(h.Client.Get(ctx, client.ObjectKeyFromObject(standIn), &kidv1.KidUser{}))
		}).Should(BeTrue(), "the stand-in was merged away")
		u := user(p, kidv1.IdentitySession, "s-merged", func(g Gomega, u *kidv1.KidUser) {
			g.Expect(u.Status.ObservedEvents).To(BeEquivalentTo(2))
			g.Expect(u.Status.InFlightEvents).To(ContainElement(event.Name))
		})

		Expect(h.Client.Create(ctx, event)).To(Succeed())
		applied(event)
		got := &kidv1.KidUser{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(u), got)).To(Succeed())
		Expect(got.Status.ObservedEvents).To(BeEquivalentTo(2), "the event was counted once, on the stand-in")
	})

	It("folds the event again into the stand-in that counted it, though a stronger user holds its id now", func() {
		// The order matters here, and the running controllers would merge
		// the stand-in before the retry, so the reconcilers are driven by
		// hand over a fake API server.
		crash := false
		f := newByHand("crash", func(obj client.Object) error {
			// The process dies after the user's write, before the
			// event's.
			if _, ok := obj.(*kidv1.KidEvent); ok && crash {
				crash = false
				return errors.New("killed")
			}
			return nil
		})
		product, c, store, reconcile, get := f.product, f.client, f.store, f.reconcile, f.get
		standIn := kidv1.UserName(product.Name, kidv1.IdentityChallenge, "c-race")
		session := kidv1.UserName(product.Name, kidv1.IdentitySession, "s-race")

		pending := store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-race", Status: kid.StatusInProgress})
		crash = true
		Expect(reconcile(pending)).To(MatchError("updating event status: killed"))
		Expect(get(standIn).Status.ObservedEvents).To(BeEquivalentTo(1))

		// After the restart, the challenge's PASS is folded first: the
		// session's user now holds the challenge, and the stand-in is not
		// merged into it yet.
		Expect(reconcile(store(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-race", Status: kid.StatusPass, SessionID: "s-race"}))).To(Succeed())
		Expect(get(session).Status.ChallengeIDs).To(ContainElement("c-race"))

		Expect(reconcile(pending)).To(Succeed())
		got := &kidv1.KidEvent{}
		Expect(c.Get(ctx, client.ObjectKeyFromObject(pending), got)).To(Succeed())
		Expect(got.Status.Phase).To(Equal(kidv1.EventApplied))
		Expect(got.Status.UserRef).To(Equal(&kidv1.LocalObjectReference{Name: standIn}), "folded again where it was counted")
		Expect(get(standIn).Status.ObservedEvents).To(BeEquivalentTo(1))
		Expect(get(session).Status.ObservedEvents).To(BeEquivalentTo(1))

		ur := &controllers.KidUserReconciler{Client: c, Clock: h.Clock}
		_, err := ur.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: product.Namespace, Name: standIn}})
		Expect(err).NotTo(HaveOccurred())
		Expect(apierrors.IsNotFound(c.Get(ctx, client.ObjectKey{Namespace: product.Namespace, Name: standIn}, &kidv1.KidUser{}))).To(BeTrue(), "the stand-in was merged away")
		Expect(get(session).Status.ObservedEvents).To(BeEquivalentTo(2), "two events, each counted once")
	})
})

// byHand drives the KidEvent reconciler over a fake API server, one
// reconcile at a time, for the specs where the order of folds matters and
// the running controllers would choose another. The reconciler reads
// through lag, a cache that shows what the API server holds unless a spec
// holds an object back; its APIReader is the API server.
type byHand struct {
	product *kidv1.KidProduct
	client  client.Client
	lag     *laggingCache
	r       *controllers.KidEventReconciler
	// writes lists each write made through client, as "verb Kind" (with
	// "status" for the status subresource), in order.
	writes *[]string
}

// newByHand builds the fake API server with the cache's indexes; statusPatch
// (when not nil) may fail a status patch before it is made.
func newByHand(ns string, statusPatch func(client.Object) error) *byHand {
	product := &kidv1.KidProduct{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: ns, UID: "uid-product"}}
	writes := &[]string{}
	wrote := func(verb string, obj client.Object, err error) error {
		if err == nil {
			*writes = append(*writes, verb+" "+strings.TrimPrefix(fmt.Sprintf("%T", obj), "*v1alpha1."))
		}
		return err
	}
	c := fake.NewClientBuilder().
		WithScheme(scheme.Scheme).
		WithStatusSubresource(&kidv1.KidUser{}, &kidv1.KidEvent{}).
		WithIndex(&kidv1.KidUser{}, kidv1.UserIDIndex, cachemem.UserIDBuckets).
		WithIndex(&kidv1.KidEvent{}, cachemem.EventIDIndex, cachemem.EventIDBuckets).
		WithObjects(product).
		WithInterceptorFuncs(interceptor.Funcs{
			// The event counts are keyed by UID, which the fake does
			// not assign.
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				obj.SetUID(types.UID("uid-" + obj.GetName()))
				return wrote("create", obj, c.Create(ctx, obj, opts...))
			},
			Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
				return wrote("patch", obj, c.Patch(ctx, obj, patch, opts...))
			},
			Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				return wrote("update", obj, c.Update(ctx, obj, opts...))
			},
			Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
				return wrote("delete", obj, c.Delete(ctx, obj, opts...))
			},
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
				if statusPatch != nil {
					if err := statusPatch(obj); err != nil {
						return err
					}
				}
				return wrote("patch "+sub, obj, c.SubResource(sub).Patch(ctx, obj, patch, opts...))
			},
		}).
		Build()
	lag := newLaggingCache(c)
	return &byHand{product: product, client: c, lag: lag, writes: writes, r: &controllers.KidEventReconciler{Client: lag, APIReader: c, Filters: actions.NewFilters(), Clock: clock.RealClock{}}}
}

// store creates an event as the receiver would (source webhook).
func (f *byHand) store(eventType string, fields kidsim.Fields) *kidv1.KidEvent {
	GinkgoHelper()
	e, _ := builtEvent(f.product, time.Now(), eventType, fields)
	Expect(f.client.Create(ctx, e)).To(Succeed())
	return e
}

func (f *byHand) reconcile(o client.Object) error {
	_, err := f.r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(o)})
	return err
}

func (f *byHand) get(name string) *kidv1.KidUser {
	GinkgoHelper()
	u := &kidv1.KidUser{}
	Expect(f.client.Get(ctx, client.ObjectKey{Namespace: f.product.Namespace, Name: name}, u)).To(Succeed())
	return u
}
