package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// A control plane started by New lives in a run directory of its own,
// $TMPDIR/kid-testenv-<pid of the process that started it>-<random>:
//
//	bin/etcd, bin/kube-apiserver  the launcher (this program, see launch)
//	bin/<name>.target             the real binary the launcher runs
//	bin/<name>.pid                the pid the binary runs as
//	etcd/                         etcd's data
//	apiserver/                    the API server's certificates
//
// etcd and kube-apiserver die with the process that started them (on Linux,
// through the launcher's parent-death signal), and whatever a process that
// died hard still left behind is removed by the next New (sweep).
const runDirPrefix = "kid-testenv-"

// controlPlaneBinaries are the binaries the launcher wraps.
var controlPlaneBinaries = []string{"etcd", "kube-apiserver"}

// newRunDir sweeps what dead processes left, then makes a run directory
// for env: its data directories, and on Linux its launchers.
func newRunDir(env *envtest.Environment) (string, error) {
	sweep(os.TempDir())
	dir, err := os.MkdirTemp("", runDirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return "", err
	}
	for _, sub := range []string{"bin", "etcd", "apiserver"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			return "", errors.Join(err, os.RemoveAll(dir))
		}
	}
	etcd := &envtest.Etcd{DataDir: filepath.Join(dir, "etcd")}
	env.ControlPlane.Etcd = etcd
	api := env.ControlPlane.GetAPIServer()
	api.CertDir = filepath.Join(dir, "apiserver")
	if !launcherSupported {
		return dir, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", errors.Join(err, os.RemoveAll(dir))
	}
	assets := env.BinaryAssetsDirectory
	if assets == "" {
		assets = os.Getenv("KUBEBUILDER_ASSETS")
	}
	for _, name := range controlPlaneBinaries {
		link := filepath.Join(dir, "bin", name)
		if err := errors.Join(
			os.Symlink(self, link),
			os.WriteFile(link+".target", []byte(filepath.Join(assets, name)), 0o600),
		); err != nil {
			return "", errors.Join(err, os.RemoveAll(dir))
		}
	}
	etcd.Path = filepath.Join(dir, "bin", "etcd")
	api.Path = filepath.Join(dir, "bin", "kube-apiserver")
	return dir, nil
}

// RunDir is the run directory of a control plane New made, or "" for an
// environment New did not make.
func RunDir(env *envtest.Environment) string {
	if env.ControlPlane.Etcd == nil {
		return ""
	}
	dir := filepath.Dir(env.ControlPlane.Etcd.DataDir)
	if !strings.HasPrefix(filepath.Base(dir), runDirPrefix) {
		return ""
	}
	return dir
}

// Stop stops a control plane New made and removes its run directory.
func Stop(env *envtest.Environment) error {
	err := env.Stop()
	if dir := RunDir(env); dir != "" {
		err = errors.Join(err, os.RemoveAll(dir))
	}
	return err
}

// sweep removes the run directories in tmp whose process is gone, after
// killing the control plane processes still running from them.
func sweep(tmp string) {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		owner, ok := runDirOwner(e.Name())
		if !ok || !e.IsDir() || alive(owner) {
			continue
		}
		dir := filepath.Join(tmp, e.Name())
		killLeftovers(dir)
		_ = os.RemoveAll(dir)
	}
}

// runDirOwner is the pid in a run directory's name.
func runDirOwner(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, runDirPrefix)
	if !ok {
		return 0, false
	}
	pid, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(pid)
	return n, err == nil && n > 0
}

// alive reports whether a process with pid exists (a zombie counts as
// gone). A pid reused by another process counts as alive: its run
// directory waits for a later sweep.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if _, after, ok := strings.Cut(string(stat), ") "); ok && strings.HasPrefix(after, "Z") {
			return false
		}
	}
	return true
}

// killLeftovers kills the processes of dir's pid files whose command line
// still names dir (a pid reused since by another process does not).
func killLeftovers(dir string) {
	for _, name := range controlPlaneBinaries {
		raw, err := os.ReadFile(filepath.Join(dir, "bin", name+".pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil || pid <= 0 || !alive(pid) || !commandNames(pid, dir) {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// commandNames reports whether the command line of pid contains dir: from
// /proc on Linux, from ps(1) where there is no /proc (macOS).
func commandNames(pid int, dir string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		if cmdline, err = exec.Command("ps", "-o", "command=", "-p", strconv.Itoa(pid)).Output(); err != nil {
			return false
		}
	}
	return strings.Contains(string(cmdline), dir+string(filepath.Separator))
}
