//go:build tools

// Package tools pins golangci-lint in a module of its own, so that the
// linters' dependencies never enter the operator's go.mod. make lint builds
// it from the Go module proxy into bin/tools/.
package tools

import _ "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
