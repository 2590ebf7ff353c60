package webhookserver_test

import (
	"context"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/kid-operator/kid-operator/internal/testenv"
)

// These specs run the receiver as a user runs it, in the operator's manager
// against a real kube-apiserver and etcd, and deliver with the simulator.

var (
	h   *testenv.Harness
	ctx = context.Background()
)

func TestReceiver(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Receiver on a local control plane")
}

var _ = BeforeSuite(func() {
	ctrl.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	var err error
	h, err = testenv.Start()
	Expect(err).NotTo(HaveOccurred())
})

var _ = AfterSuite(func() {
	if h != nil {
		Expect(h.Stop()).To(Succeed())
	}
})
