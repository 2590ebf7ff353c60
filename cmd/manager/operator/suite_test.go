package operator_test

import (
	"context"
	"sync"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/cmd/manager/operator"
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

// apiReadyOf returns a poll of the product's APIReady condition, for
// Eventually: it fails the poll until the condition is there.
func apiReadyOf(p *testenv.Product) func(Gomega) *metav1.Condition {
	return func(g Gomega) *metav1.Condition {
		got := &kidv1.KidProduct{}
		g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(p.KidProduct), got)).To(Succeed())
		c := meta.FindStatusCondition(got.Status.Conditions, kidv1.APIReadyCondition)
		g.Expect(c).NotTo(BeNil())
		return c
	}
}

// startOperator starts an operator with opts and returns it with its stop,
// which a spec may call to start another with other options; the spec's
// cleanup stops it otherwise.
func startOperator(opts operator.Options) (*operator.Operator, func()) {
	GinkgoHelper()
	op, stop, err := testenv.StartOperator(h.Config, opts)
	Expect(err).NotTo(HaveOccurred())
	var once sync.Once
	stopOnce := func() { once.Do(func() { Expect(stop()).To(Succeed()) }) }
	DeferCleanup(stopOnce)
	return op, stopOnce
}
