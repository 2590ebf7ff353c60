package actions

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// A cloudEvent action's sink is shaped like Knative's Destination. Its ref is
// read as the action's ServiceAccount (see Impersonator), in the action's
// own namespace, never with kid-operator's rights: an author reaches only
// the objects that ServiceAccount may read, as with a resource action. The
// URL it resolves to is then called through the outbound guard like any
// other.

// maxSinkURLBytes bounds a resolved sink URL, as the CRD bounds http.url.
const maxSinkURLBytes = 2048

// ErrSinkServiceAccountRequired is the failure of a sink.ref when the action
// names no ServiceAccount and the administrator set no default.
var ErrSinkServiceAccountRequired = errors.New("spec.cloudEvent.serviceAccountName is required with sink.ref: kid-operator reads the referenced object as that ServiceAccount of the action's namespace, and no default is configured (--default-action-service-account)")

// ResolveSink returns the URL a cloudEvent action sends to: sink.uri, or the
// status.address.url of the object sink.ref names (with sink.uri, if set,
// resolved against it as a relative reference, as Knative does). Its errors
// are the SinkNotResolved messages: they name the object, never the URL.
func ResolveSink(ctx context.Context, imp *Impersonator, a *kidv1.KidAction) (string, error) {
	sink := a.Spec.CloudEvent.Sink
	if sink.Ref == nil {
		return checkSinkURL(sink.URI, "sink.uri")
	}
	ref := sink.Ref
	what := fmt.Sprintf("sink.ref %s %s", ref.Kind, ref.Name)
	if ref.Namespace != "" && ref.Namespace != a.Namespace {
		// The CRD refuses it; an object stored before is refused here.
		return "", fmt.Errorf("%s names namespace %s: a reference resolves in the action's own namespace only", what, ref.Namespace)
	}
	sa := imp.ServiceAccount(a)
	if sa == "" {
		return "", ErrSinkServiceAccountRequired
	}
	c, err := imp.Client(a.Namespace, sa)
	if err != nil {
		return "", err
	}
	obj := &unstructured.Unstructured{}
	obj.SetAPIVersion(ref.APIVersion)
	obj.SetKind(ref.Kind)
	// A namespace means nothing to a cluster-scoped kind: the client would
	// read it at cluster scope, outside the action's namespace.
	namespaced, err := c.IsObjectNamespaced(obj)
	switch {
	case meta.IsNoMatchError(err):
		return "", fmt.Errorf("%s: kind %s is not served by this cluster", what, obj.GroupVersionKind())
	case err != nil:
		return "", fmt.Errorf("%s: mapping its kind: %w", what, err)
	case !namespaced:
		return "", fmt.Errorf("%s: kind %s is cluster-scoped; a reference resolves in the action's own namespace only", what, obj.GroupVersionKind().GroupKind())
	}
	switch err := c.Get(ctx, client.ObjectKey{Namespace: a.Namespace, Name: ref.Name}, obj); {
	case err == nil:
	case IsImpersonationForbidden(err):
		return "", ImpersonationError(a.Namespace, sa)
	case apierrors.IsForbidden(err):
		return "", fmt.Errorf("%s: ServiceAccount %s may not get %s in %s: grant it get with a Role and RoleBinding",
			what, sa, obj.GroupVersionKind().GroupKind(), a.Namespace)
	case apierrors.IsNotFound(err):
		return "", fmt.Errorf("%s not found in namespace %s", what, a.Namespace)
	default:
		return "", fmt.Errorf("%s: reading it: %w", what, err)
	}
	address, _, _ := unstructured.NestedString(obj.Object, "status", "address", "url")
	if address == "" {
		return "", fmt.Errorf("%s has no status.address.url (is it ready?)", what)
	}
	base, err := url.Parse(address)
	if err != nil {
		return "", fmt.Errorf("%s: its status.address.url does not parse", what)
	}
	if sink.URI != "" {
		rel, err := url.Parse(sink.URI)
		if err != nil {
			return "", fmt.Errorf("sink.uri does not parse: %w", err)
		}
		base = base.ResolveReference(rel)
	}
	return checkSinkURL(base.String(), what+"'s URL")
}

// checkSinkURL accepts an absolute http(s) URL with a host, of at most
// maxSinkURLBytes. Its message names what, not the URL.
func checkSinkURL(s, what string) (string, error) {
	if len(s) > maxSinkURLBytes {
		return "", fmt.Errorf("%s is longer than %d bytes", what, maxSinkURLBytes)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%s is not an absolute http(s) URL", what)
	}
	return s, nil
}
