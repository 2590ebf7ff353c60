package controllers

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// maxHandledResume bounds status.lastHandledResumeErasures.
const maxHandledResume = 256

// reconcileErasures shows the product's erasure breaker (erasure_breaker.go)
// as the ErasuresHeld condition, present only while erasures are held, and
// closes the breaker when a person sets a new kid.dev/resume-erasures.
// After a restart the condition stands for the breaker until then.
func (r *KidProductReconciler) reconcileErasures(p *kidv1.KidProduct) {
	if r.APIClients == nil {
		return
	}
	key, b := productKey(p), &r.APIClients.erasures
	held := erasuresHeld(p)
	if req := firstBytes(p.Annotations[kidv1.ResumeErasuresAnnotation], maxHandledResume); req != "" && req != p.Status.LastHandledResumeErasures {
		p.Status.LastHandledResumeErasures = req
		if open, _, _ := b.state(key); open || held != nil {
			b.resume(key, r.Clock.Now())
			meta.RemoveStatusCondition(&p.Status.Conditions, kidv1.ErasuresHeldCondition)
			if r.Recorder != nil {
				r.Recorder.Eventf(p, nil, "Normal", "ErasuresResumed", "Reconcile", "erasures learned from k-ID's API resumed by %s", kidv1.ResumeErasuresAnnotation)
			}
			return
		}
	}
	if held != nil {
		b.restore(key, held.LastTransitionTime.Time)
	}
	open, count, sessions := b.state(key)
	if !open {
		return
	}
	msg := breakerMessage(count, sessions)
	if held != nil && count == 0 {
		// Restored after a restart: what tripped it is in the message.
		msg = held.Message
	}
	meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{
		Type: kidv1.ErasuresHeldCondition, Status: metav1.ConditionTrue, Reason: kidv1.NotFoundSurgeReason, Message: msg, ObservedGeneration: p.Generation,
	})
	if held == nil && r.Recorder != nil {
		r.Recorder.Eventf(p, nil, "Warning", kidv1.NotFoundSurgeReason, "Reconcile", "%s", msg)
	}
}

// erasuresHeld returns the product's ErasuresHeld condition while it is
// True.
func erasuresHeld(p *kidv1.KidProduct) *metav1.Condition {
	c := meta.FindStatusCondition(p.Status.Conditions, kidv1.ErasuresHeldCondition)
	if c == nil || c.Status != metav1.ConditionTrue {
		return nil
	}
	return c
}

func productKey(p *kidv1.KidProduct) types.NamespacedName { return client.ObjectKeyFromObject(p) }

// firstBytes returns at most n bytes of s.
func firstBytes(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// resumeErasuresChanged passes a product whose kid.dev/resume-erasures
// annotation changed: the product's watch otherwise sees spec changes only.
var resumeErasuresChanged = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetAnnotations()[kidv1.ResumeErasuresAnnotation] != e.ObjectNew.GetAnnotations()[kidv1.ResumeErasuresAnnotation]
	},
}
