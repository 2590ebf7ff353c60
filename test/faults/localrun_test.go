//go:build faults && linux

package faults

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// `make run` as a new user runs it: its banner invites a delivery, so the
// delivery sent the moment the banner appears must be stored (defect 5 of
// the Reliability issue: the banner came before the receiver was ready).
var _ = Describe("make run", func() {
	It("stores a delivery sent the moment its banner appears, and stops cleanly on Ctrl-C", func() {
		bin := filepath.Join(suiteDir, "localrun")
		build := exec.Command("go", "build", "-o", bin, "./cmd/localrun")
		build.Dir = testenv.RepoRoot()
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))

		webhookAddr := freeAddr()
		const secret = "make-run-test-secret"
		cmd := exec.Command(bin)
		cmd.Dir = testenv.RepoRoot()
		cmd.Env = append(os.Environ(),
			"KID_LISTEN_ADDR="+webhookAddr, "KIDSIM_LISTEN_ADDR="+freeAddr(), "KID_DEMO_LISTEN_ADDR="+freeAddr(),
			"KID_WEBHOOK_SECRET="+secret, "KID_KUBECONFIG="+filepath.Join(suiteDir, "make-run.kubeconfig"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stdout, err := cmd.StdoutPipe()
		Expect(err).NotTo(HaveOccurred())
		cmd.Stderr = GinkgoWriter
		Expect(cmd.Start()).To(Succeed())
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		DeferCleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
			}
		})

		banner := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			sc := bufio.NewScanner(stdout)
			seen := false
			for sc.Scan() {
				fmt.Fprintln(GinkgoWriter, sc.Text())
				if !seen && strings.Contains(sc.Text(), "kid-operator is running") {
					seen = true
					close(banner)
				}
			}
			_, _ = io.Copy(io.Discard, stdout)
		}()
		Eventually(banner).WithTimeout(2 * time.Minute).Should(BeClosed())

		body, err := kidsim.Build(kid.ChallengeStateChange, kidsim.Fields{Status: kid.StatusPass, ProductID: 11472})
		Expect(err).NotTo(HaveOccurred())
		s := kidsim.NewSender("http://"+webhookAddr+kidv1.WebhookPath("default", "demo"), []byte(secret))
		s.Client = &http.Client{Timeout: 10 * time.Second}
		attempts, err := s.Send(context.Background(), body)
		Expect(err).NotTo(HaveOccurred(), "%v", attempts)
		report("counted", "the delivery sent as the banner appeared: %s", attempts[0])

		Expect(cmd.Process.Signal(os.Interrupt)).To(Succeed())
		Eventually(exited).WithTimeout(time.Minute).Should(Receive(BeNil()), "make run exits 0 on Ctrl-C")
	})
})
