package actions

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"text/template"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

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
// text/template over the input (.event, .user). The object gets its
// deterministic name, the event's namespace and labels naming the event and
// the action.
func Render(a *kidv1.KidAction, e *kidv1.KidEvent, in *Input) (*unstructured.Unstructured, error) {
	var obj map[string]any
	if err := json.Unmarshal(a.Spec.Resource.Template.Raw, &obj); err != nil {
		return nil, fmt.Errorf("decoding template: %w", err)
	}
	rendered, err := renderValue(obj, map[string]any{"event": in.Event, "user": in.User})
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

func renderValue(v any, data map[string]any) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		for k, inner := range t {
			r, err := renderValue(inner, data)
			if err != nil {
				return nil, err
			}
			t[k] = r
		}
		return t, nil
	case []any:
		for i, inner := range t {
			r, err := renderValue(inner, data)
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
		tmpl, err := template.New("field").Option("missingkey=zero").Parse(t)
		if err != nil {
			return nil, fmt.Errorf("parsing template %q: %w", t, err)
		}
		var buf bytes.Buffer
		if err := tmpl.Execute(&buf, data); err != nil {
			return nil, fmt.Errorf("rendering template %q: %w", t, err)
		}
		return buf.String(), nil
	}
	return v, nil
}

// Describe names an object: kind namespace/name.
func Describe(obj *unstructured.Unstructured) string {
	return obj.GetKind() + " " + obj.GetNamespace() + "/" + obj.GetName()
}

// Create creates the rendered object once. AlreadyExists counts as done: it
// is the object an earlier attempt made.
func Create(ctx context.Context, c client.Client, a *kidv1.KidAction, e *kidv1.KidEvent, in *Input) Outcome {
	obj, err := Render(a, e, in)
	if err != nil {
		return Outcome{Err: err, Permanent: true}
	}
	switch err := c.Create(ctx, obj); {
	case err == nil, apierrors.IsAlreadyExists(err):
		return Outcome{Did: Describe(obj)}
	case apierrors.IsForbidden(err):
		gvk := obj.GroupVersionKind()
		return Outcome{Permanent: true, Err: fmt.Errorf("kid-operator may not create %s in %s: grant its service account create on %s (see the README, Actions): %w",
			gvk.Kind, e.Namespace, gvk.GroupKind().String(), err)}
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsNotFound(err), meta.IsNoMatchError(err):
		return Outcome{Permanent: true, Err: err}
	default:
		return Outcome{Err: err}
	}
}
