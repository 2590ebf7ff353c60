package controllers

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/cachemem"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// Actions see the permissions they were told about (design.md §2, "The
// KidEvent reconcile"). A Session.ChangePermissions carries nothing but the
// session id: its fold only stamps permissionsChangedAt, which makes the
// KidUser controller read the session. Matched at once, its actions would
// see the permissions from before the change. So the event stays Pending
// after its fold until the session was read at or after it: until the
// user's permissionsReadAt (written by the read, even a 304) reaches the
// event's time. A change of permissionsReadAt wakes the events waiting on
// it; the wait is bounded, and the event's SessionRead condition says
// whether its actions had the read or why not.

const (
	// permissionsReadWait bounds how long a Session.ChangePermissions
	// event waits for the read of its session: a read is asked for at the
	// fold and normally comes within seconds; longer means k-ID's API
	// fails or the product's rate is spent, and the actions then run
	// against the permissions last read rather than never.
	permissionsReadWait = 2 * time.Minute
	// permissionsRecheck is how often a waiting event looks again, should
	// no change of its user wake it.
	permissionsRecheck = 10 * time.Second
)

// sessionRead tells a folded Session.ChangePermissions event whether its
// actions may be matched now, with the SessionRead condition that says
// why, or how long to wait first. Any other event gets neither.
func (r *KidEventReconciler) sessionRead(p *eventPass) (*metav1.Condition, time.Duration) {
	e := p.event
	if e.Spec.EventType != kid.SessionChangePermissions || len(p.users) == 0 {
		return nil, 0
	}
	cond := func(ok bool, reason, msg string) *metav1.Condition {
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		return &metav1.Condition{Type: kidv1.SessionReadCondition, Status: status, Reason: reason, Message: msg, ObservedGeneration: e.Generation}
	}
	at := e.Spec.ReceivedAt
	if e.Spec.SignedAt != nil {
		at = *e.Spec.SignedAt
	}
	st := &p.users[0].Status
	switch {
	case p.product.Spec.API == nil:
		return cond(false, kidv1.NotConfiguredReason, "the product has no spec.api: the actions saw the permissions last read"), 0
	case !meta.IsStatusConditionTrue(p.product.Status.Conditions, kidv1.APIReadyCondition):
		return cond(false, kidv1.APINotReadyReason, "the product's APIReady is not True: the actions saw the permissions last read"), 0
	case st.ErasedAt != nil || st.Session.State == kidv1.SessionDeleted:
		return cond(false, kidv1.SessionGoneReason, "the player is erased or its session deleted"), 0
	case st.Session.PermissionsReadAt != nil && !st.Session.PermissionsReadAt.Before(&at):
		return cond(true, kidv1.ReadAfterChangeReason, "the session was read from k-ID after the change"), 0
	}
	if left := e.Spec.ReceivedAt.Add(permissionsReadWait).Sub(r.Clock.Now()); left > 0 {
		return nil, min(left, permissionsRecheck)
	}
	return cond(false, kidv1.ReadTimedOutReason, "no read of the session within "+permissionsReadWait.String()+": the actions saw the permissions last read"), 0
}

// wakePermissionEvents is the KidUser watch that wakes the
// Session.ChangePermissions events waiting for a read of the user's
// session, when a read says it was made (permissionsReadAt changed).
func (r *KidEventReconciler) wakePermissionEvents() handler.EventHandler {
	return handler.Funcs{
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			o, n := cachemem.UserOf(e.ObjectOld), cachemem.UserOf(e.ObjectNew)
			if o == nil || n == nil || n.Spec.Identity.Kind != kidv1.IdentitySession || n.Status.Session.PermissionsReadAt == nil ||
				n.Status.Session.PermissionsReadAt.Equal(o.Status.Session.PermissionsReadAt) {
				return
			}
			events, err := cachemem.EventsNaming(ctx, r, n.Namespace, kidv1.UserIDKey(n.Spec.ProductRef.Name, kidv1.IdentitySession, n.Spec.Identity.ID))
			if err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "listing the events waiting for a read of a session")
				return
			}
			for i := range events {
				ev := &events[i]
				if ev.Spec.EventType == kid.SessionChangePermissions && (ev.Status.Phase == "" || ev.Status.Phase == kidv1.EventPending) {
					q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(ev)})
				}
			}
		},
	}
}
