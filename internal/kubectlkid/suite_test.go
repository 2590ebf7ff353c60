package kubectlkid_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/internal/kubectlkid"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// These specs run kubectl kid, as a user types it (flags, kubeconfig and
// namespace included), against the real operator on a local control plane:
// events reach it through the real receiver, signed as k-ID signs them, and
// what the commands print and change is what the controllers did.

var (
	h   = testenv.SuiteHarness()
	ctx = context.Background()
	// kubeconfig is the file the commands run with: a user of the control
	// plane in system:masters, as a cluster admin's kubeconfig.
	kubeconfig string
)

func TestKubectlKid(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "kubectl kid against the operator on a local control plane")
}

var kubeconfigBytes []byte

// Each spec writes the kubeconfig into a directory of its own (removed
// after it); the user behind it is made once.
var _ = BeforeEach(func() {
	if kubeconfigBytes == nil {
		u, err := h.Env.AddUser(envtest.User{Name: "kubectl-kid-admin", Groups: []string{"system:masters"}}, nil)
		Expect(err).NotTo(HaveOccurred())
		kubeconfigBytes, err = u.KubeConfig()
		Expect(err).NotTo(HaveOccurred())
	}
	kubeconfig = filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(os.WriteFile(kubeconfig, kubeconfigBytes, 0o600)).To(Succeed())
})

// result is what one run of the command printed.
type result struct {
	out, errOut string
	err         error
}

// kubectl runs `kubectl kid <args>` in namespace ns with in as its input.
func kubectl(ns string, in io.Reader, args ...string) result {
	GinkgoHelper()
	out, errOut := &bytes.Buffer{}, &bytes.Buffer{}
	if in == nil {
		in = strings.NewReader("")
	}
	cmd := kubectlkid.NewCommand(genericiooptions.IOStreams{In: in, Out: out, ErrOut: errOut}, h.Clock)
	cmd.SetArgs(append([]string{"--kubeconfig", kubeconfig, "-n", ns}, args...))
	err := cmd.ExecuteContext(ctx)
	GinkgoWriter.Printf("$ kubectl kid -n %s %s\n%s%s", ns, strings.Join(args, " "), out, errOut)
	if err != nil {
		GinkgoWriter.Printf("error: %v\n", err)
	}
	return result{out: out.String(), errOut: errOut.String(), err: err}
}

// kidInBackground runs `kubectl kid <args>` until the spec ends, writing to
// the returned buffer (safe to read while it is written).
func kidInBackground(ns string, args ...string) *gbytes.Buffer {
	GinkgoHelper()
	out := gbytes.NewBuffer()
	cmd := kubectlkid.NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: out, ErrOut: GinkgoWriter}, h.Clock)
	cmd.SetArgs(append([]string{"--kubeconfig", kubeconfig, "-n", ns}, args...))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		defer GinkgoRecover()
		done <- cmd.ExecuteContext(runCtx)
	}()
	DeferCleanup(func() {
		cancel()
		Eventually(done).Should(Receive(BeNil()), "the command ends without error when its context ends")
		GinkgoWriter.Printf("$ kubectl kid -n %s %s\n%s", ns, strings.Join(args, " "), out.Contents())
	})
	return out
}

// newProduct makes a namespace and a Ready product "demo" in it.
func newProduct(mutate func(*kidv1.KidProduct)) *testenv.Product {
	GinkgoHelper()
	p, err := h.NewReadyProduct(ctx, "demo", mutate)
	Expect(err).NotTo(HaveOccurred())
	return p
}

// send delivers an event to the real receiver, signed as k-ID signs it,
// and returns the name of the KidEvent the receiver stores it as.
func send(p *testenv.Product, eventType string, f kidsim.Fields) string {
	GinkgoHelper()
	body, err := kidsim.Build(eventType, f)
	Expect(err).NotTo(HaveOccurred())
	now := h.Clock.Now()
	a := p.Sender().Deliver(ctx, body, strconv.FormatInt(now.Unix(), 10), kid.Sign)
	Expect(a.Status).To(Equal(200), a.String())
	env, err := kid.ParseEnvelope(body)
	Expect(err).NotTo(HaveOccurred())
	return kid.EventName(p.Name, eventType, env.Identity(body, time.Unix(now.Unix(), 0)))
}

// userNamed is the deterministic name of the KidUser known by an id.
func userNamed(p *testenv.Product, kind kidv1.IdentityKind, id string) string {
	return kidv1.UserName(p.Name, kind, id)
}

// getUser waits until the KidUser named name satisfies check.
func getUser(ns, name string, check func(Gomega, *kidv1.KidUser)) *kidv1.KidUser {
	GinkgoHelper()
	u := &kidv1.KidUser{}
	Eventually(func(g Gomega) {
		g.Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u)).To(Succeed())
		check(g, u)
	}).Should(Succeed())
	return u
}

// getEvent waits until the KidEvent named name satisfies check.
func getEvent(ns, name string, check func(Gomega, *kidv1.KidEvent)) *kidv1.KidEvent {
	GinkgoHelper()
	e := &kidv1.KidEvent{}
	Eventually(func(g Gomega) {
		g.Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, e)).To(Succeed())
		check(g, e)
	}).Should(Succeed())
	return e
}

// target is an action's HTTP target that answers from a script, then 200.
type target struct {
	*httptest.Server
	mu      sync.Mutex
	answers []int
	got     int
}

func newTarget(answers ...int) *target {
	t := &target{answers: answers}
	t.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.got++
		status := http.StatusOK
		if len(t.answers) > 0 {
			status, t.answers = t.answers[0], t.answers[1:]
		}
		w.WriteHeader(status)
	}))
	DeferCleanup(t.Close)
	return t
}

func (t *target) deliveries() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.got
}

// httpAction creates a KidAction calling url for the event types, and waits
// until its controller has seen it.
func httpAction(p *testenv.Product, name, url string, eventTypes ...string) {
	GinkgoHelper()
	a := &kidv1.KidAction{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.Namespace},
		Spec:       kidv1.KidActionSpec{EventTypes: eventTypes, HTTP: &kidv1.HTTPAction{URL: url, MaxAttempts: 1}},
	}
	Expect(h.Client.Create(ctx, a)).To(Succeed())
	Eventually(func(g Gomega) {
		got := &kidv1.KidAction{}
		g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(a), got)).To(Succeed())
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
	}).Should(Succeed())
}
