package testenv

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// helperEnv makes this test binary the process that starts a control plane
// and waits to be killed (TestControlPlaneDiesWithItsStarter).
const helperEnv = "KID_TESTENV_HELPER"

func TestControlPlaneDiesWithItsStarter(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		runHelper(t)
		return
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set")
	}
	g := NewWithT(t)

	helper := exec.Command(os.Args[0], "-test.run=^TestControlPlaneDiesWithItsStarter$", "-test.timeout=2m")
	helper.Env = append(os.Environ(), helperEnv+"=1")
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(helper.Start()).To(Succeed())
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = helper.Process.Kill()
			_ = helper.Wait()
		}
	})

	// The helper prints its run directory once the control plane is up.
	lines := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if dir, ok := strings.CutPrefix(s.Text(), "RUNDIR "); ok {
				lines <- dir
				break
			}
		}
		close(lines)
		for s.Scan() {
		}
	}()
	var dir string
	select {
	case dir = <-lines:
	case <-time.After(60 * time.Second):
		t.Fatal("the helper did not start a control plane in 60s")
	}
	g.Expect(dir).NotTo(BeEmpty(), "the helper ended before starting a control plane")

	pids := map[string]int{}
	for _, name := range controlPlaneBinaries {
		raw, err := os.ReadFile(filepath.Join(dir, "bin", name+".pid"))
		g.Expect(err).NotTo(HaveOccurred())
		pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(alive(pid)).To(BeTrue(), "%s (pid %d) runs", name, pid)
		g.Expect(commandNames(pid, dir)).To(BeTrue(), "pid %d is the %s of %s", pid, name, dir)
		pids[name] = pid
	}

	// A hard stop: nothing in the helper runs after this.
	g.Expect(helper.Process.Signal(syscall.SIGKILL)).To(Succeed())
	_ = helper.Wait()
	killed = true

	for name, pid := range pids {
		g.Eventually(func() bool { return alive(pid) }, 5*time.Second, 50*time.Millisecond).
			Should(BeFalse(), "%s (pid %d) outlived the process that started it", name, pid)
	}
	g.Expect(dir).To(BeADirectory(), "the data stays until the next start")

	// The next start removes the data the killed process left.
	env, err := New()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(dir).NotTo(BeADirectory(), "the next start removed the data of the killed control plane")
	g.Expect(RunDir(env)).To(BeADirectory())
	g.Expect(Stop(env)).To(Succeed())
	g.Expect(RunDir(env)).NotTo(BeADirectory(), "Stop removes the run directory")
}

// runHelper starts a control plane, prints its run directory and blocks
// until it is killed (at most a minute).
func runHelper(t *testing.T) {
	env, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Start(); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("RUNDIR " + RunDir(env) + "\n")
	time.Sleep(time.Minute)
	_ = Stop(env)
	t.Fatal("the helper was not killed")
}

func TestSweepLeavesLiveAndForeignDirectories(t *testing.T) {
	g := NewWithT(t)
	tmp := t.TempDir()
	dead := exec.Command("true")
	g.Expect(dead.Run()).To(Succeed())
	deadDir := filepath.Join(tmp, runDirPrefix+strconv.Itoa(dead.Process.Pid)+"-x")
	liveDir := filepath.Join(tmp, runDirPrefix+strconv.Itoa(os.Getpid())+"-x")
	foreign := filepath.Join(tmp, "kid-testenv-notapid-x")
	for _, d := range []string{deadDir, liveDir, foreign} {
		g.Expect(os.MkdirAll(filepath.Join(d, "bin"), 0o700)).To(Succeed())
	}
	// A pid file naming a process that is not the control plane (this
	// test) is not killed.
	g.Expect(os.WriteFile(filepath.Join(deadDir, "bin", "etcd.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600)).To(Succeed())

	sweep(tmp)

	g.Expect(deadDir).NotTo(BeADirectory())
	g.Expect(liveDir).To(BeADirectory())
	g.Expect(foreign).To(BeADirectory())
}
