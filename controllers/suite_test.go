package controllers_test

import (
	"context"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kid-operator/kid-operator/test/testenv"
)

// These specs run the real reconcilers in the operator's manager against a
// real kube-apiserver and etcd; events arrive through the real receiver,
// signed by the simulator, as they would from k-ID.

var (
	h   = testenv.SuiteHarness()
	ctx = context.Background()
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controllers on a local control plane")
}
