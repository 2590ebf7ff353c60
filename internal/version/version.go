// Package version is what a kid-operator binary knows about its own build:
// the release version and the commit it was built from, stamped by `make
// build` (and the Dockerfile, and `make image`) through the linker:
//
//	go build -ldflags "-X github.com/kid-operator/kid-operator/internal/version.version=v0.2.0 \
//	  -X github.com/kid-operator/kid-operator/internal/version.revision=$(git rev-parse HEAD)"
//
// A binary built without them (go build, go install, go run) falls back to
// what the Go toolchain recorded: the module's version (go install ...@v0.2.0)
// and the vcs.revision and vcs.modified settings (a build inside a git
// checkout, unless -buildvcs=false).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Stamped by the linker (-X); empty in a binary built without it.
var (
	version  string
	revision string
)

// Unknown is what Get reports for a fact neither the linker nor the Go
// toolchain recorded.
const Unknown = "unknown"

// Info is a binary's build.
type Info struct {
	// Version is the release (v0.2.0), or git describe's answer for a
	// build between releases (v0.2.0-3-g1a2b3c4-dirty), or Unknown.
	Version string `json:"version"`
	// Revision is the commit the binary was built from, with "-dirty"
	// when the work tree had changes, or Unknown.
	Revision string `json:"revision"`
	// GoVersion is the Go toolchain that built it (go1.26.8).
	GoVersion string `json:"goVersion"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}

// Get returns this binary's build.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(version, revision, bi)
}

// resolve prefers the linker's facts and fills what it left out from the
// toolchain's build information (nil when the binary has none).
func resolve(stampedVersion, stampedRevision string, bi *debug.BuildInfo) Info {
	info := Info{Version: stampedVersion, Revision: stampedRevision, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		// "(devel)" is what go build in a checkout records: no version.
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		if info.Revision == "" {
			var rev string
			var modified bool
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					modified = s.Value == "true"
				}
			}
			if rev != "" && modified {
				rev += "-dirty"
			}
			info.Revision = rev
		}
	}
	if info.Version == "" {
		info.Version = Unknown
	}
	if info.Revision == "" {
		info.Revision = Unknown
	}
	return info
}

// String is the one line each binary's version command prints:
// "kid-operator v0.2.0 (revision 1a2b3c4..., go1.26.8, linux/amd64)".
func (i Info) String() string {
	return fmt.Sprintf("kid-operator %s (revision %s, %s, %s)", i.Version, i.Revision, i.GoVersion, i.Platform)
}

// BuildInfoCollector is the kid_build_info gauge: always 1, its labels the
// build's version, revision and Go version, as Prometheus's own
// prometheus_build_info and kube-state-metrics' build info are. Joined on
// it, any series shows which build exported it; a rollout shows as two
// revisions side by side.
func BuildInfoCollector() prometheus.Collector {
	i := Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "kid_build_info",
		Help:        "The build of the kid-operator binary that exports these metrics; always 1.",
		ConstLabels: prometheus.Labels{"version": i.Version, "revision": i.Revision, "goversion": i.GoVersion},
	})
	g.Set(1)
	return g
}
