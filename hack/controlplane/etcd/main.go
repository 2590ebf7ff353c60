// Command etcd is etcd built from the Go module proxy, so that envtest and
// `make run` need no binary downloaded from a release page.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
