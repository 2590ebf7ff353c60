package inbox

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

// Store writes a KidEvent. It returns the API server's error as it is (an
// AlreadyExists is a retry of a delivery already stored).
type Store func(ctx context.Context, e *kidv1.KidEvent) error

// ClientStore stores through a controller-runtime client.
func ClientStore(w client.Writer) Store {
	return func(ctx context.Context, e *kidv1.KidEvent) error { return w.Create(ctx, e) }
}

// RESTStore stores with a plain REST POST and does not decode the object the
// API server sends back: the receiver already holds it, and decoding it was
// a sixth of the receiver's CPU under load (docs/benchmarks.md). Errors are
// still decoded, so AlreadyExists and Invalid are recognised.
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
	return func(ctx context.Context, e *kidv1.KidEvent) error {
		return rc.Post().Namespace(e.Namespace).Resource("kidevents").Body(e).Do(ctx).Error()
	}, nil
}
