package testenv

import (
	"time"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// SuiteHarness registers the Ginkgo BeforeSuite that starts the operator on
// a local control plane, and the AfterSuite that stops it. The returned
// harness is filled in when the suite starts.
func SuiteHarness() *Harness { return suite(Start) }

// ControlPlaneSuite is SuiteHarness without the operator: the suite's specs
// start operators of their own (StartOperator).
func ControlPlaneSuite() *Harness { return suite(StartControlPlane) }

func suite(start func() (*Harness, error)) *Harness {
	h := &Harness{}
	ginkgo.BeforeSuite(func() {
		// An upper bound, not a wait: a controller's work under a loaded
		// machine, or a product's pass that waits for a burst of events to
		// settle (a second), outlasts Gomega's default of one second.
		gomega.SetDefaultEventuallyTimeout(10 * time.Second)
		ctrl.SetLogger(zap.New(zap.WriteTo(ginkgo.GinkgoWriter), zap.UseDevMode(true)))
		started, err := start()
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		*h = *started
	})
	ginkgo.AfterSuite(func() {
		if h.Env != nil {
			gomega.Expect(h.Stop()).To(gomega.Succeed())
		}
	})
	return h
}
