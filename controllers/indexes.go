// Package controllers holds one reconciler per kid.dev kind.
package controllers

import (
	"context"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/cachemem"
)

// Field indexes on the informer cache.
const (
	// secretIndex: KidProducts by the names of their webhook and API
	// Secrets (secretNames), to wake the products of a Secret found
	// changed.
	secretIndex = "kid.dev/webhook-secret" //nolint:gosec // G101: an index's name, not a credential
	// userIDIndex: KidUsers by every k-ID id they hold, in buckets
	// (cachemem.UserCache reads it).
	userIDIndex = kidv1.UserIDIndex
	// eventIDIndex: KidEvents by every k-ID id they name, in buckets
	// (cachemem.EventsNaming reads it).
	eventIDIndex = cachemem.EventIDIndex
	// eventProductIndex: KidEvents by the name of their product, for the
	// product's pass over its events (a label selector would scan every
	// event of the namespace).
	eventProductIndex = "kid.dev/event-product"
)

// secretNames are the names of the Secrets a product names (webhook, then
// API), each once: the only Secrets the operator reads.
func secretNames(p *kidv1.KidProduct) []string {
	names := []string{p.Spec.Webhook.SecretRef.Name}
	if p.Spec.API != nil && p.Spec.API.SecretRef.Name != p.Spec.Webhook.SecretRef.Name {
		names = append(names, p.Spec.API.SecretRef.Name)
	}
	return names
}

// SetupIndexes registers the field indexes the reconcilers read. Every
// lookup is within one namespace, so each index stores its values once
// (cachemem.NamespacedIndex).
func SetupIndexes(ctx context.Context, mgr ctrl.Manager) error {
	informers := mgr.GetCache()
	for _, idx := range []struct {
		obj     client.Object
		field   string
		extract client.IndexerFunc
		what    string
	}{
		{&kidv1.KidProduct{}, secretIndex, func(o client.Object) []string { return secretNames(o.(*kidv1.KidProduct)) }, "KidProducts by secret"},
		{&kidv1.KidUser{}, userIDIndex, cachemem.UserIDBuckets, "KidUsers by id"},
		{&kidv1.KidEvent{}, eventIDIndex, cachemem.EventIDBuckets, "KidEvents by id"},
		{&kidv1.KidEvent{}, eventProductIndex, func(o client.Object) []string { return []string{o.(*kidv1.KidEvent).Spec.ProductRef.Name} }, "KidEvents by product"},
	} {
		if err := cachemem.NamespacedIndex(ctx, informers, idx.obj, idx.field, idx.extract); err != nil {
			return fmt.Errorf("indexing %s: %w", idx.what, err)
		}
	}
	return nil
}
