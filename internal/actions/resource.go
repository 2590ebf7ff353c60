package actions

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// RenderTimeout bounds the render of a resource template (an http action's
// body is bounded by the attempt's timeout). A render takes microseconds;
// the bound is for a machine so loaded that it does not.
const RenderTimeout = 5 * time.Second

// Labels set on the objects resource actions create.
const (
	EventLabel  = "kid.dev/event"
	ActionLabel = "kid.dev/action"
)

// ResourceName is the deterministic name of the object an action creates for
// an event: a retry or a restart computes the same name, and the API server's
// AlreadyExists makes the create happen once.
func ResourceName(action, event string) string {
	sum := sha256.Sum256([]byte(event))
	prefix := action
	if len(prefix) > 40 {
		prefix = strings.TrimRight(prefix[:40], "-.")
	}
	return prefix + "-" + hex.EncodeToString(sum[:8])
}

// Render fills the template: every string value holding "{{" is a Go
// text/template over the input (.event, .user), held to the subset
// parseTemplate allows; all of them together write at most MaxRenderedBytes,
// produce at most RenderBudget and take at most RenderTimeout.
// The object gets its deterministic name, the event's namespace and labels
// naming the event and the action.
func Render(ctx context.Context, a *kidv1.KidAction, e *kidv1.KidEvent, in *Input) (*unstructured.Unstructured, error) {
	raw := a.Spec.Resource.Template.Raw
	if err := checkSize("template", raw, MaxResourceTemplateBytes); err != nil {
		return nil, err
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("decoding template: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, RenderTimeout)
	defer cancel()
	rendered, err := renderValue(newRender(ctx), obj, map[string]any{"event": in.Event, "user": in.User})
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: rendered.(map[string]any)}
	if u.GetAPIVersion() == "" || u.GetKind() == "" {
		return nil, fmt.Errorf("template needs apiVersion and kind")
	}
	u.SetName(ResourceName(a.Name, e.Name))
	u.SetGenerateName("")
	u.SetNamespace(e.Namespace)
	labels := u.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[EventLabel] = e.Name
	labels[ActionLabel] = a.Name
	u.SetLabels(labels)
	return u, nil
}

func renderValue(r *render, v any, data map[string]any) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		for k, inner := range t {
			r, err := renderValue(r, inner, data)
			if err != nil {
				return nil, err
			}
			t[k] = r
		}
		return t, nil
	case []any:
		for i, inner := range t {
			r, err := renderValue(r, inner, data)
			if err != nil {
				return nil, err
			}
			t[i] = r
		}
		return t, nil
	case string:
		if !strings.Contains(t, "{{") {
			return t, nil
		}
		tmpl, err := parseTemplate("field", t)
		if err != nil {
			return nil, fmt.Errorf("parsing template %s: %w", quoteShort(t), err)
		}
		b, err := r.execute(tmpl, data)
		if err != nil {
			return nil, fmt.Errorf("rendering template %s: %w", quoteShort(t), err)
		}
		return string(b), nil
	}
	return v, nil
}

// Describe names an object: kind namespace/name.
func Describe(obj *unstructured.Unstructured) string {
	return obj.GetKind() + " " + obj.GetNamespace() + "/" + obj.GetName()
}

// Create creates the rendered object once, as the action's ServiceAccount
// (see Impersonator), in the event's namespace. AlreadyExists counts as done:
// it is the object an earlier attempt made. What the user must fix (no
// ServiceAccount, a cluster-scoped kind, a missing grant, an invalid
// template) fails at once.
func Create(ctx context.Context, imp *Impersonator, a *kidv1.KidAction, e *kidv1.KidEvent, in *Input) Outcome {
	sa := imp.ServiceAccount(a)
	if sa == "" {
		return Outcome{Permanent: true, Err: ErrServiceAccountRequired}
	}
	c, err := imp.Client(e.Namespace, sa)
	if err != nil {
		return Outcome{Err: err}
	}
	obj, err := Render(ctx, a, e, in)
	if err != nil {
		// The same input renders the same, unless the render ran out of
		// time.
		return Outcome{Err: err, Permanent: !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)}
	}
	gvk := obj.GroupVersionKind()
	// The namespace set above means nothing to a cluster-scoped kind: the
	// client would create it at cluster scope, outside any tenant's reach.
	namespaced, err := c.IsObjectNamespaced(obj)
	switch {
	case meta.IsNoMatchError(err):
		return Outcome{Permanent: true, Err: fmt.Errorf("template kind %s is not served by this cluster", gvk)}
	case err != nil:
		return Outcome{Err: fmt.Errorf("mapping the template's kind: %w", err)}
	case !namespaced:
		return Outcome{Permanent: true, Err: ClusterScopedError(gvk.GroupKind())}
	}
	switch err := c.Create(ctx, obj); {
	case err == nil, apierrors.IsAlreadyExists(err):
		return Outcome{Did: Describe(obj) + " as ServiceAccount " + sa}
	case IsImpersonationForbidden(err):
		return Outcome{Permanent: true, Err: ImpersonationError(e.Namespace, sa)}
	case apierrors.IsForbidden(err):
		return Outcome{Permanent: true, Err: fmt.Errorf("ServiceAccount %s may not create %s in %s: grant it create on %s with a Role and RoleBinding (see config/samples/actions_rbac_jobs.yaml)",
			sa, gvk.Kind, e.Namespace, gvk.GroupKind().String())}
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsNotFound(err), meta.IsNoMatchError(err):
		return Outcome{Permanent: true, Err: err}
	default:
		return Outcome{Err: err}
	}
}

// ClusterScopedError is the InvalidTemplate message of a template whose kind
// is cluster-scoped.
func ClusterScopedError(gk schema.GroupKind) error {
	return fmt.Errorf("template kind %s is cluster-scoped: a KidAction creates objects only in its own namespace", gk)
}
