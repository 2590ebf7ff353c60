package webhookserver_test

import (
	"context"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kid-operator/kid-operator/test/testenv"
)

// These specs run the receiver as a user runs it, in the operator's manager
// against a real kube-apiserver and etcd, and deliver with the simulator.

var (
	h   = testenv.SuiteHarness()
	ctx = context.Background()
)

func TestReceiver(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Receiver on a local control plane")
}
