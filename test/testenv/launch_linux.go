package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// launcherSupported: on Linux the control plane runs through the launcher,
// so that it dies with the process that started it.
const launcherSupported = true

func init() {
	if target, parent, ok := launcherTarget(); ok {
		launch(target, parent)
	}
}

// launcherTarget reports whether this program was started as a run
// directory's bin/etcd or bin/kube-apiserver, and if so, the binary to run
// and the pid of the process that made the run directory.
func launcherTarget() (target string, parent int, ok bool) {
	bin := filepath.Dir(os.Args[0])
	if filepath.Base(bin) != "bin" {
		return "", 0, false
	}
	parent, ok = runDirOwner(filepath.Base(filepath.Dir(bin)))
	if !ok {
		return "", 0, false
	}
	raw, err := os.ReadFile(os.Args[0] + ".target")
	if err != nil {
		return "", 0, false
	}
	return strings.TrimSpace(string(raw)), parent, true
}

// launch becomes target, with this program's arguments, after asking the
// kernel to SIGKILL it when its parent dies. envtest starts etcd and
// kube-apiserver in process groups of their own and has no way to set the
// parent-death signal itself.
func launch(target string, parent int) {
	// The parent-death signal belongs to the thread that sets it, which
	// must be the one that execs.
	runtime.LockOSThread()
	const prSetPdeathsig = 1
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetPdeathsig, uintptr(syscall.SIGKILL), 0); errno != 0 {
		fail(target, fmt.Errorf("setting the parent-death signal: %w", errno))
	}
	// The parent may have died before the signal was set.
	if os.Getppid() != parent {
		fail(target, fmt.Errorf("the process that started it (pid %d) is gone", parent))
	}
	if err := os.WriteFile(os.Args[0]+".pid", []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		fail(target, err)
	}
	args := append([]string{target}, os.Args[1:]...)
	fail(target, syscall.Exec(target, args, os.Environ()))
}

func fail(target string, err error) {
	fmt.Fprintf(os.Stderr, "launching %s: %v\n", target, err)
	os.Exit(1)
}
