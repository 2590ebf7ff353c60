package version

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestResolve(t *testing.T) {
	vcs := func(rev, modified string) *debug.BuildInfo {
		return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified},
		}}
	}
	for _, tc := range []struct {
		name              string
		stampedV, stamped string
		bi                *debug.BuildInfo
		want              Info
	}{
		{"the linker's facts win", "v0.2.0", "abc", vcs("def", "true"), Info{Version: "v0.2.0", Revision: "abc", GoVersion: "go1.26.8"}},
		{"without them, the toolchain's vcs settings", "", "", vcs("def", "false"), Info{Version: Unknown, Revision: "def", GoVersion: "go1.26.8"}},
		{"a modified work tree is dirty", "", "", vcs("def", "true"), Info{Version: Unknown, Revision: "def-dirty", GoVersion: "go1.26.8"}},
		{"go install ...@version records the module's version", "", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.2.0"}}, Info{Version: "v0.2.0", Revision: Unknown, GoVersion: "go1.26.8"}},
		{"nothing recorded (-buildvcs=false)", "", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, Info{Version: Unknown, Revision: Unknown, GoVersion: "go1.26.8"}},
		{"the linker's version, the toolchain's revision", "v0.2.0", "", vcs("def", "false"), Info{Version: "v0.2.0", Revision: "def", GoVersion: "go1.26.8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := resolve(tc.stampedV, tc.stamped, tc.bi)
			got.Platform = ""
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestBuildInfoCollector(t *testing.T) {
	version, revision = "v9.9.9", "f00"
	t.Cleanup(func() { version, revision = "", "" })
	want := `# HELP kid_build_info The build of the kid-operator binary that exports these metrics; always 1.
# TYPE kid_build_info gauge
kid_build_info{goversion="` + Get().GoVersion + `",revision="f00",version="v9.9.9"} 1
`
	if err := testutil.CollectAndCompare(BuildInfoCollector(), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
