//go:build faults && linux

package faults

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/kid-operator/kid-operator/test/testenv"
)

var (
	ctx = context.Background()
	// h is the control plane every replica of every spec runs on; it
	// runs no operator of its own.
	h *testenv.Harness
	// suiteDir holds the manager binary, its kubeconfig and the replicas'
	// logs (kept when a spec fails, with its path in the failure).
	suiteDir, managerBin, kubeconfig string
)

func TestFaults(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Faults")
}

var _ = BeforeSuite(func() {
	SetDefaultEventuallyTimeout(2 * time.Minute)
	SetDefaultEventuallyPollingInterval(250 * time.Millisecond)
	ctrl.SetLogger(zap.New(zap.WriteTo(GinkgoWriter)))
	var err error
	suiteDir, err = os.MkdirTemp("", "kid-faults-")
	Expect(err).NotTo(HaveOccurred())
	// KID_MANAGER_BIN runs the faults against another build (a release,
	// or a commit before a fix, to see a spec fail).
	if managerBin = os.Getenv("KID_MANAGER_BIN"); managerBin == "" {
		managerBin = filepath.Join(suiteDir, "manager")
		build := exec.Command("go", "build", "-o", managerBin, "./cmd/manager")
		build.Dir = testenv.RepoRoot()
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
	}

	h, err = testenv.StartControlPlane()
	Expect(err).NotTo(HaveOccurred())
	kubeconfig = filepath.Join(suiteDir, "kubeconfig")
	Expect(os.WriteFile(kubeconfig, h.Env.KubeConfig, 0o600)).To(Succeed())
})

var _ = AfterSuite(func() {
	if h != nil {
		Expect(h.Stop()).To(Succeed())
	}
	if !suiteKeep && suiteDir != "" {
		_ = os.RemoveAll(suiteDir)
	}
})

// logsOnFailure names the replicas' logs in a failed spec's report.
func logsOnFailure() {
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() {
			AddReportEntry("replica logs", suiteDir)
			suiteKeep = true
		}
	})
}

var suiteKeep bool
