package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

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

// A player's page relays every DOM message of its widget, and a token's
// holder can relay as many as the product's rate allows: were each to ask
// k-ID, one token would drive the product's k-ID calls. So a subject's
// browser events ask at most once per ConfirmSpacing (default 10 s): the
// first asks at once; one arriving within the window waits in Pending for
// the window's end and asks then; any further one meanwhile is covered by
// that read (which starts after it arrived) and is recorded Ignored without
// asking. Every relay is stored; k-ID is asked once per window at most, and
// never before a relay it has to answer.

// DefaultConfirmSpacing is the default of
// KidEventReconciler.ConfirmSpacing.
const DefaultConfirmSpacing = 10 * time.Second

// confirmSpacer remembers, per subject, when its browser events last asked
// k-ID and which event asks next. In memory: a restart forgets it, which
// costs at most one more read per subject.
type confirmSpacer struct {
	mu       sync.Mutex
	subjects map[string]*subjectAsks
}

// subjectAsks is one subject's confirmations.
type subjectAsks struct {
	// last is when one of its events last asked.
	last time.Time
	// next is the event that asks at last + spacing, if any.
	next string
}

// maxIdleSubjects is how many subjects the spacer holds before it forgets
// those whose window has passed.
const maxIdleSubjects = 1024

// take says what the browser event named event, about subject, does now:
// ask (0, false), wait d and come back (d, false), or nothing, because the
// read of the subject's next asker answers it (0, true).
func (c *confirmSpacer) take(subject, event string, now time.Time, spacing time.Duration) (wait time.Duration, covered bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subjects == nil {
		c.subjects = map[string]*subjectAsks{}
	}
	st := c.subjects[subject]
	if st == nil {
		if len(c.subjects) >= maxIdleSubjects {
			c.forgetIdle(now, spacing)
		}
		st = &subjectAsks{}
		c.subjects[subject] = st
	}
	due := st.last.Add(spacing)
	switch {
	case st.next != "" && st.next != event && now.Before(due.Add(spacing)):
		// Another event asks at due, after this one arrived. (Past a
		// second window, that event is gone: this one takes its place.)
		return 0, true
	case now.Before(due):
		st.next = event
		return due.Sub(now), false
	}
	st.last, st.next = now, ""
	return 0, false
}

// forgetIdle drops the subjects whose window has passed with no event
// waiting.
func (c *confirmSpacer) forgetIdle(now time.Time, spacing time.Duration) {
	for subject, st := range c.subjects {
		if st.next == "" && !now.Before(st.last.Add(spacing)) {
			delete(c.subjects, subject)
		}
	}
}

// confirmBrowserEvent records a browser event as Ignored and, with the
// product's k-ID API configured, asks for its subject to be confirmed, at
// most once per ConfirmSpacing per subject; an event that must wait for its
// subject's window stays Pending, and the pass comes back after wait.
func (r *KidEventReconciler) confirmBrowserEvent(ctx context.Context, event *kidv1.KidEvent) (wait time.Duration, err error) {
	product := &kidv1.KidProduct{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: event.Namespace, Name: event.Spec.ProductRef.Name}, product); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, r.setPhase(ctx, event, kidv1.EventIgnored, nil, nil, ignoredNoProduct.condition(event))
		}
		return 0, fmt.Errorf("reading product of event: %w", err)
	}
	var userRef *kidv1.LocalObjectReference
	kind, id := browserSubject(event.Spec.Subject)
	switch {
	case product.Spec.API == nil || kind == "":
		// No API: the hint stays a record (the product's APIReady says
		// confirmation is off).
		eventsProcessedTotal.WithLabelValues(typeLabel(event.Spec.EventType), "ignored").Inc()
	default:
		spacing := r.ConfirmSpacing
		if spacing <= 0 {
			spacing = DefaultConfirmSpacing
		}
		subject := event.Namespace + "/" + kidv1.UserIDKey(event.Spec.ProductRef.Name, kind, id)
		wait, covered := r.confirms.take(subject, event.Name, r.Clock.Now(), spacing)
		if wait > 0 {
			return wait, nil
		}
		if covered {
			// The subject's next asker's read answers this one too.
			if holders, err := r.holders(ctx, event.Namespace, kidv1.UserIDKey(event.Spec.ProductRef.Name, kind, id), nil); err == nil && len(holders) > 0 {
				userRef = &kidv1.LocalObjectReference{Name: holders[0].name}
			}
			eventsProcessedTotal.WithLabelValues(typeLabel(event.Spec.EventType), "confirm-coalesced").Inc()
			break
		}
		name, err := r.requestConfirmation(ctx, event, product, kind, id)
		if err != nil {
			return 0, err
		}
		userRef = &kidv1.LocalObjectReference{Name: name}
		eventsProcessedTotal.WithLabelValues(typeLabel(event.Spec.EventType), "confirming").Inc()
	}
	return 0, r.setPhase(ctx, event, kidv1.EventIgnored, userRef, nil, ignoredBrowser.condition(event))
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
				Labels:          map[string]string{kidv1.ProductLabel: product, kidv1.IDLabel(id): ""},
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
