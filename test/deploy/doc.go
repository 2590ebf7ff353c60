// Package deploy holds the tests of how kid-operator is deployed: the
// Dockerfile builds what `make build` builds, the Helm chart
// (config/helm/kid-operator) renders what config/default applies and is
// accepted by a real API server, and `make deploy` and `make undeploy` do
// what they say. It has no code of its own.
//
// The tests run Helm from KID_HELM (`make test` sets it to the Helm that
// `make helm` builds) and kubectl from KID_KUBECTL (`make test` sets it to
// the one on the PATH, or builds one when there is none) or the PATH, for
// its built-in kustomize.
package deploy
