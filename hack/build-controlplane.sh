#!/usr/bin/env bash
# Builds the local control plane (etcd and kube-apiserver) from the Go module
# proxy into bin/k8s/<kubernetes version>/, the directory envtest reads through
# KUBEBUILDER_ASSETS. Release-page downloads (setup-envtest) are not reachable
# from every machine we work on; the module proxy is.
#
# Prints the asset directory on stdout. Skips a binary that is already built.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
module_version() { # go.mod module
	awk -v m="$2" '$1 == m {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$1"
}
k8s_version=$(module_version "$root/hack/controlplane/kube-apiserver/go.mod" k8s.io/kubernetes)
etcd_version=$(module_version "$root/hack/controlplane/etcd/go.mod" go.etcd.io/etcd/server/v3)
dir="$root/bin/k8s/${k8s_version}-etcd${etcd_version}"
mkdir -p "$dir"

build() { # name [ldflags]
	local name=$1 ldflags=${2:-}
	if [ -x "$dir/$name" ]; then
		return
	fi
	echo "building $name into $dir (the first kube-apiserver build takes about 10 minutes on 2 cores)" >&2
	(cd "$root/hack/controlplane/$name" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w $ldflags" -o "$dir/$name.tmp" .)
	mv "$dir/$name.tmp" "$dir/$name"
}

# Stamp the version into kube-apiserver as the release build does, so that
# clients and `kubectl version` see v1.37.2 rather than v0.0.0-master.
minor=${k8s_version#v1.}
minor=${minor%%.*}
vpkg=k8s.io/component-base/version
build etcd
build kube-apiserver "-X $vpkg.gitVersion=$k8s_version -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
echo "$dir"
