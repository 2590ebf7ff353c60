package deploy_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kid-operator/kid-operator/internal/scheme"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// The specs apply what the chart and config/default render to a local
// control plane (a real kube-apiserver and etcd, the CRDs installed), with
// no operator running: they check what the API server accepts, not what
// the operator then does.

var (
	h   = testenv.ControlPlaneSuite()
	ctx = context.Background()

	// kubeconfig is a kubeconfig file for the control plane, for kubectl
	// and Helm.
	kubeconfig string
	// c is a client that records the API server's warnings.
	c        client.Client
	warnings = &warningRecorder{}
)

func TestDeploy(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Deploying: the chart and make deploy on a local control plane")
}

var _ = BeforeEach(func() {
	if kubeconfig != "" {
		return
	}
	user, err := h.Env.AddUser(envtest.User{Name: "deploytest", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	data, err := user.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	// In the control plane's run directory, which the suite's end removes.
	kubeconfig = filepath.Join(testenv.RunDir(h.Env), "deploytest.kubeconfig")
	Expect(os.WriteFile(kubeconfig, data, 0o600)).To(Succeed())

	cfg := rest.CopyConfig(h.Config)
	cfg.WarningHandlerWithContext = warnings
	c, err = client.New(cfg, client.Options{Scheme: scheme.Scheme})
	Expect(err).NotTo(HaveOccurred())
})

// warningRecorder keeps the warnings the API server sends (deprecated
// APIs, Pod Security violations of a Deployment's pods, unknown fields).
type warningRecorder struct {
	mu   sync.Mutex
	list []string
}

func (w *warningRecorder) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

// take returns the warnings so far and forgets them.
func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.list
	w.list = nil
	return out
}
