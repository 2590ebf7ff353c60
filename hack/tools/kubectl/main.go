// Command kubectl is the upstream kubectl, built from the Go module proxy for
// machines that have none on their PATH: `make test` (the chart's checks and
// `make deploy` against the local control plane) and `make deploy` use it
// then, so that nothing depends on a kubectl the machine happens to have.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
