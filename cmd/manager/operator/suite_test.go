package operator_test

import (
	"context"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kid-operator/kid-operator/test/testenv"
)

// These specs start operators of their own on a local control plane (a real
// kube-apiserver and etcd), each under the identity the spec is about, with
// no other operator running: what they show, that operator did.

var (
	h   = testenv.ControlPlaneSuite()
	ctx = context.Background()
)

func TestOperator(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Operator identities on a local control plane")
}
