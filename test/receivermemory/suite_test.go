package receivermemory

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/kid-operator/kid-operator/test/testenv"
)

// The spec starts a receiver of its own on a local control plane (a real
// kube-apiserver and etcd), under the receiver's role, with no other
// operator running: the heap it measures is that receiver's.

var (
	h   = testenv.ControlPlaneSuite()
	ctx = context.Background()
)

func TestReceiverMemory(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "The receiving tier's memory on a local control plane")
}

func newNamespace() string {
	GinkgoHelper()
	ns, err := h.NewNamespace(ctx)
	Expect(err).NotTo(HaveOccurred())
	return ns
}

// installClusterRole creates the ClusterRole of a file of the repository
// under a unique name, and returns the name.
func installClusterRole(path string) string {
	GinkgoHelper()
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), path))
	Expect(err).NotTo(HaveOccurred())
	role := &rbacv1.ClusterRole{}
	Expect(yaml.Unmarshal(raw, role)).To(Succeed())
	Expect(role.Kind).To(Equal("ClusterRole"), path)
	role.ObjectMeta = metav1.ObjectMeta{GenerateName: "kid-" + role.Name + "-"}
	Expect(h.Client.Create(ctx, role)).To(Succeed())
	return role.Name
}

// identity makes a user bound to the cluster role and to nothing else, and
// returns its config.
func identity(prefix, clusterRole string) *rest.Config {
	GinkgoHelper()
	name := prefix + "-" + rand.String(5)
	user, err := h.Env.AddUser(envtest.User{Name: name}, nil)
	Expect(err).NotTo(HaveOccurred())
	Expect(h.Client.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: name}},
	})).To(Succeed())
	return user.Config()
}

// liveHeap is the heap in use after a full collection.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
