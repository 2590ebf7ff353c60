//go:build tools

// Package tools pins the Helm version that `make helm-check` lints and
// renders the chart with (config/helm/kid-operator). It is a module of its
// own so that Helm's many dependencies never enter the operator's go.mod.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
