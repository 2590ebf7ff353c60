package inbox

import (
	"context"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

// Store writes a KidEvent of a product. When the event is stored already
// (the name is its identity: a retried delivery, or the same event from
// another channel), it adds to the stored copy what this copy carries and
// the stored one lacks (Enrich, under the product's privacy settings), and
// then returns the API server's AlreadyExists as it is: a duplicate, whose
// fields are stored. Any other error, the enrichment's included, means the
// copy's content may not be stored, so the receiver must not answer 200.
type Store func(ctx context.Context, product *kidv1.KidProduct, e *kidv1.KidEvent) error

// enrichmentsTotal counts the later copies that met a stored event, by
// what they did to it: added fields, conflicted (a field both hold with
// different values; the stored one is kept), or both.
var enrichmentsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "kid_event_enrichments_total",
	Help: "Later copies of a stored KidEvent that added fields it lacked (result=added) or disagreed with it (result=conflict; the stored value is kept).",
}, []string{"result"})

func init() {
	metrics.Registry.MustRegister(enrichmentsTotal)
}

// backend is what a Store needs of the API server.
type backend struct {
	create func(ctx context.Context, e *kidv1.KidEvent) error
	get    func(ctx context.Context, key types.NamespacedName) (*kidv1.KidEvent, error)
	// patch writes merged over stored, only if stored is still the
	// version on the API server.
	patch func(ctx context.Context, stored, merged *kidv1.KidEvent) error
}

func (b backend) store(ctx context.Context, product *kidv1.KidProduct, e *kidv1.KidEvent) error {
	err := b.create(ctx, e)
	if !apierrors.IsAlreadyExists(err) || e.Spec.Source == kidv1.SourceBrowser {
		// A browser copy is a hint: it never adds to k-ID's word, so
		// its duplicate is not even read.
		return err
	}
	exists := err
	key := types.NamespacedName{Namespace: e.Namespace, Name: e.Name}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		stored, err := b.get(ctx, key)
		if err != nil {
			return err
		}
		en, err := Enrich(stored, e, PrivacyOf(product))
		if err != nil {
			return err
		}
		if len(en.Conflicts) > 0 {
			enrichmentsTotal.WithLabelValues("conflict").Inc()
			// Field names only: the values may be personal data.
			ctrl.LoggerFrom(ctx).Info("a later copy of a stored event disagrees with it; the stored values are kept",
				"event", e.Name, "source", e.Spec.Source, "storedSource", stored.Spec.Source, "fields", strings.Join(en.Conflicts, ","))
		}
		if en.Event == nil {
			return nil
		}
		if err := b.patch(ctx, stored, en.Event); err != nil {
			return err
		}
		enrichmentsTotal.WithLabelValues("added").Inc()
		ctrl.LoggerFrom(ctx).V(1).Info("a later copy of a stored event added what it lacked",
			"event", e.Name, "source", e.Spec.Source, "fields", strings.Join(en.Added, ","))
		return nil
	})
	if apierrors.IsNotFound(err) {
		// Deleted between the create and the read (retention, erasure):
		// the copy was stored once; nothing is left to add to.
		return exists
	}
	if err != nil {
		return fmt.Errorf("adding a later copy's fields to stored event %s: %w", e.Name, err)
	}
	return exists
}

// ClientStore stores through a controller-runtime client. r reads a stored
// event back on AlreadyExists; it should read around any cache (a manager's
// APIReader), which may not hold the event yet.
func ClientStore(w client.Writer, r client.Reader) Store {
	return backend{
		create: func(ctx context.Context, e *kidv1.KidEvent) error { return w.Create(ctx, e) },
		get: func(ctx context.Context, key types.NamespacedName) (*kidv1.KidEvent, error) {
			e := &kidv1.KidEvent{}
			return e, r.Get(ctx, key, e)
		},
		patch: func(ctx context.Context, stored, merged *kidv1.KidEvent) error {
			return w.Patch(ctx, merged, client.MergeFromWithOptions(stored, client.MergeFromWithOptimisticLock{}))
		},
	}.store
}

// RESTStore stores with a plain REST POST and does not decode the object the
// API server sends back: the receiver already holds it, and decoding it was
// a sixth of the receiver's CPU under load (docs/benchmarks.md). Errors are
// still decoded, so AlreadyExists and Invalid are recognised. A duplicate
// is read back and, when this copy adds to it, patched (Store).
func RESTStore(cfg *rest.Config) (Store, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &kidv1.GroupVersion
	cfg.APIPath = "/apis"
	cfg.ContentType = "application/json"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme.Scheme).WithoutConversion()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the KidEvent REST client: %w", err)
	}
	return backend{
		create: func(ctx context.Context, e *kidv1.KidEvent) error {
			return rc.Post().Namespace(e.Namespace).Resource("kidevents").Body(e).Do(ctx).Error()
		},
		get: func(ctx context.Context, key types.NamespacedName) (*kidv1.KidEvent, error) {
			e := &kidv1.KidEvent{}
			return e, rc.Get().Namespace(key.Namespace).Resource("kidevents").Name(key.Name).Do(ctx).Into(e)
		},
		patch: func(ctx context.Context, stored, merged *kidv1.KidEvent) error {
			// A merge patch carrying the version read: a concurrent
			// change makes it a conflict, and the store reads again.
			body, err := client.MergeFromWithOptions(stored, client.MergeFromWithOptimisticLock{}).Data(merged)
			if err != nil {
				return err
			}
			return rc.Patch(types.MergePatchType).Namespace(merged.Namespace).Resource("kidevents").Name(merged.Name).Body(body).Do(ctx).Error()
		},
	}.store, nil
}
