// Package testenv starts the local control plane (a real kube-apiserver and
// etcd, built by hack/build-controlplane.sh) with kid-operator's CRDs
// installed, for integration tests and `make run`.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kid-operator/kid-operator/internal/scheme"
)

// RepoRoot is the root of the source tree, found from this file.
func RepoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// New returns an environment with the CRDs of config/crd/bases, whose etcd
// and kube-apiserver die with this process and keep their data in a run
// directory of their own (RunDir; Stop removes it). It first removes what
// control planes of processes that died hard left behind. It needs
// KUBEBUILDER_ASSETS (the Makefile sets it); without it the error says what
// to run.
func New() (*envtest.Environment, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, or export KUBEBUILDER_ASSETS=$(./hack/build-controlplane.sh)")
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme.Scheme,
	}
	if _, err := newRunDir(env); err != nil {
		return nil, fmt.Errorf("preparing the control plane's run directory: %w", err)
	}
	return env, nil
}
