// Command kube-apiserver is the upstream kube-apiserver built from the Go
// module proxy, so that envtest and `make run` need no binary downloaded from
// a release page.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
