package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/kid-operator/kid-operator/test/testenv"
)

// chart is the Helm chart, relative to the repository's root.
const chart = "config/helm/kid-operator"

// release and releaseNamespace are what config/default is compared with:
// released as kid-operator in kid-system, the chart's objects have
// config/default's names.
const (
	release          = "kid-operator"
	releaseNamespace = "kid-system"
)

var root = testenv.RepoRoot()

// helmBinary is the Helm that `make test` passes in KID_HELM.
func helmBinary() (string, error) {
	helm := os.Getenv("KID_HELM")
	if helm == "" {
		return "", errors.New("KID_HELM is not set: run these tests with `make test`, or `make helm` and " +
			"export KID_HELM=$PWD/bin/tools/helm-<version> (the Helm built from hack/tools/helm)")
	}
	if _, err := os.Stat(helm); err != nil {
		return "", fmt.Errorf("KID_HELM=%s: %w (`make helm` builds it)", helm, err)
	}
	return helm, nil
}

// kubectlBinary is kubectl, for `kubectl kustomize` and `make deploy`.
func kubectlBinary() (string, error) {
	if k := os.Getenv("KID_KUBECTL"); k != "" {
		return k, nil
	}
	k, err := exec.LookPath("kubectl")
	if err != nil {
		return "", errors.New("kubectl is not on the PATH: these tests render config/default with `kubectl kustomize` " +
			"and run `make deploy`; run them with `make test` (which builds one when none is on the PATH) or set KID_KUBECTL")
	}
	return k, nil
}

// run runs a command in the repository's root with env added to the
// process's, and returns its standard output; an error carries its
// standard error.
func run(env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// renderChart runs `helm template` for the release kid-operator in
// namespace ns, CRDs included, with more arguments (--set, -f) after.
func renderChart(ns string, args ...string) ([]*unstructured.Unstructured, error) {
	helm, err := helmBinary()
	if err != nil {
		return nil, err
	}
	out, err := run(nil, helm, append([]string{"template", release, chart, "--namespace", ns, "--include-crds"}, args...)...)
	if err != nil {
		return nil, err
	}
	return decode(out)
}

// renderKustomize runs `kubectl kustomize dir`.
func renderKustomize(dir string) ([]*unstructured.Unstructured, error) {
	kubectl, err := kubectlBinary()
	if err != nil {
		return nil, err
	}
	out, err := run(nil, kubectl, "kustomize", dir)
	if err != nil {
		return nil, err
	}
	return decode(out)
}

// decode splits a multi-document YAML stream into objects, leaving out
// empty documents.
func decode(data []byte) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// find returns the object of that kind and name (and namespace, unless
// ns is "*"), or nil.
func find(objs []*unstructured.Unstructured, kind, ns, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name && (ns == "*" || o.GetNamespace() == ns) {
			return o
		}
	}
	return nil
}

// ofKind returns the objects of a kind.
func ofKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// typed converts an object into a typed one (a Deployment, a ClusterRole).
func typed[T any](u *unstructured.Unstructured) (*T, error) {
	if u == nil {
		return nil, errors.New("no such object")
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
		return nil, fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return out, nil
}
