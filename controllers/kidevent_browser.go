package controllers

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// A browser event (source browser: a k-ID widget's DOM event relayed by a
// game page) is a hint, never a fact: anyone can post a message, so it is
// never folded into a KidUser and never runs an action (spec §5.9). What it
// does is make the cluster ask k-ID at once (design.md §3, "Three
// channels"): the KidUser holding the event's subject (made as a stand-in
// when none does) is annotated kid.dev/requested-at, and the KidUser
// controller then polls the challenge or verification, or reads the
// session, without waiting for its schedule. k-ID's answer is stored as the
// authoritative event (source poll), named as the webhook would be, so a
// later webhook is a duplicate.

// confirmBrowserEvent records a browser event as Ignored and, with the
// product's k-ID API configured, asks for its subject to be confirmed.
func (r *KidEventReconciler) confirmBrowserEvent(ctx context.Context, event *kidv1.KidEvent) error {
	product := &kidv1.KidProduct{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: event.Namespace, Name: event.Spec.ProductRef.Name}, product); err != nil {
		if apierrors.IsNotFound(err) {
			return r.setPhase(ctx, event, kidv1.EventIgnored, nil, nil, nil)
		}
		return fmt.Errorf("reading product of event: %w", err)
	}
	var userRef *kidv1.LocalObjectReference
	kind, id := browserSubject(event.Spec.Subject)
	if product.Spec.API != nil && kind != "" {
		name, err := r.requestConfirmation(ctx, event, product, kind, id)
		if err != nil {
			return err
		}
		userRef = &kidv1.LocalObjectReference{Name: name}
		eventsProcessedTotal.WithLabelValues(typeLabel(event.Spec.EventType), "confirming").Inc()
	} else {
		// No API: the hint stays a record (the product's APIReady says
		// confirmation is off).
		eventsProcessedTotal.WithLabelValues(typeLabel(event.Spec.EventType), "ignored").Inc()
	}
	return r.setPhase(ctx, event, kidv1.EventIgnored, userRef, nil, nil)
}

// browserSubject is the one id a relayed event is about (the relay token's
// subject).
func browserSubject(s kidv1.EventSubject) (kidv1.IdentityKind, string) {
	switch {
	case s.ChallengeID != "":
		return kidv1.IdentityChallenge, s.ChallengeID
	case len(s.VerificationIDs) > 0:
		return kidv1.IdentityVerification, s.VerificationIDs[0]
	case s.SessionID != "":
		return kidv1.IdentitySession, s.SessionID
	}
	return "", ""
}

// requestConfirmation annotates the strongest KidUser holding the subject,
// or a new stand-in known by it, so that the KidUser controller asks k-ID
// now. The annotation's value is the event's name: the same event asks once.
func (r *KidEventReconciler) requestConfirmation(ctx context.Context, event *kidv1.KidEvent, p *kidv1.KidProduct, kind kidv1.IdentityKind, id string) (string, error) {
	product := event.Spec.ProductRef.Name
	holders, err := r.holders(ctx, event.Namespace, kidv1.UserIDKey(product, kind, id), nil)
	if err != nil {
		return "", err
	}
	user := &kidv1.KidUser{}
	if len(holders) > 0 {
		if err := r.Get(ctx, types.NamespacedName{Namespace: event.Namespace, Name: holders[0].name}, user); err != nil {
			return "", fmt.Errorf("reading user: %w", err)
		}
	} else {
		user = &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{
				Name: kidv1.UserName(product, kind, id), Namespace: event.Namespace,
				Labels:          map[string]string{kidv1.ProductLabel: product},
				Annotations:     map[string]string{kidv1.RequestedAtAnnotation: event.Name},
				OwnerReferences: []metav1.OwnerReference{p.OwnerReference()},
			},
			Spec: kidv1.KidUserSpec{ProductRef: event.Spec.ProductRef, Identity: kidv1.UserIdentity{Kind: kind, ID: id}},
		}
		if err := r.Create(ctx, user); err != nil {
			// AlreadyExists: made meanwhile; the retry annotates it.
			return "", fmt.Errorf("creating user to confirm: %w", err)
		}
		return user.Name, nil
	}
	if user.Annotations[kidv1.RequestedAtAnnotation] == event.Name {
		return user.Name, nil
	}
	patch := client.MergeFrom(user.DeepCopy())
	if user.Annotations == nil {
		user.Annotations = map[string]string{}
	}
	user.Annotations[kidv1.RequestedAtAnnotation] = event.Name
	if err := r.Patch(ctx, user, patch); err != nil {
		return "", fmt.Errorf("asking for confirmation: %w", err)
	}
	return user.Name, nil
}
