//go:build tools

// Package tools pins the versions of the code generators `make manifests
// generate` runs, apart from the operator's own module.
package tools

import _ "sigs.k8s.io/controller-tools/cmd/controller-gen"
