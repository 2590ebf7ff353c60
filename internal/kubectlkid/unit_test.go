package kubectlkid

import (
	"context"
	"os"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// The port-forward cannot run without a kubelet; its choices can.

func receiverService(ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kid-operator-webhook", Namespace: "kid-system"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "receiver"}, Ports: ports},
	}
}

func receiverPod(name string, phase corev1.PodPhase, ready corev1.ConditionStatus) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kid-system", Labels: map[string]string{"app": "receiver"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "receiver", Ports: []corev1.ContainerPort{{Name: "webhook", ContainerPort: 8080}}}}},
		Status:     corev1.PodStatus{Phase: phase, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}},
	}
}

func TestTargetPortFollowsTheServiceToTheContainerPort(t *testing.T) {
	pod := receiverPod("r-1", corev1.PodRunning, corev1.ConditionTrue)
	cases := []struct {
		name  string
		ports []corev1.ServicePort
		want  int
		err   string
	}{
		{name: "a named target port is the container's port of that name", ports: []corev1.ServicePort{{Name: "webhook", Port: 80, TargetPort: intstr.FromString("webhook")}}, want: 8080},
		{name: "a numbered target port is used as it is", ports: []corev1.ServicePort{{Name: "webhook", Port: 80, TargetPort: intstr.FromInt32(9090)}}, want: 9090},
		{name: "no target port means the service port", ports: []corev1.ServicePort{{Name: "webhook", Port: 80}}, want: 80},
		{name: "the port named webhook wins among several", ports: []corev1.ServicePort{{Name: "metrics", Port: 8443}, {Name: "webhook", Port: 80, TargetPort: intstr.FromString("webhook")}}, want: 8080},
		{name: "a single port needs no name", ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}, want: 8080},
		{name: "several ports and none named webhook is an error", ports: []corev1.ServicePort{{Name: "a", Port: 1}, {Name: "b", Port: 2}}, err: "no port named webhook"},
		{name: "a target port name the pod does not have is an error", ports: []corev1.ServicePort{{Name: "webhook", Port: 80, TargetPort: intstr.FromString("http")}}, err: "has no port named http"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := targetPort(receiverService(tc.ports...), pod)
			if tc.err != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tc.err)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tc.want))
		})
	}
}

func TestReadyPodPicksARunningReadyPodOfTheService(t *testing.T) {
	cases := []struct {
		name string
		pods []*corev1.Pod
		want string
	}{
		{name: "the ready one of several", pods: []*corev1.Pod{
			receiverPod("pending", corev1.PodPending, corev1.ConditionFalse),
			receiverPod("unready", corev1.PodRunning, corev1.ConditionFalse),
			receiverPod("ready", corev1.PodRunning, corev1.ConditionTrue),
		}, want: "ready"},
		{name: "none ready is an error", pods: []*corev1.Pod{receiverPod("unready", corev1.PodRunning, corev1.ConditionFalse)}},
		{name: "no pod is an error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			cs := fake.NewClientset()
			for _, p := range tc.pods {
				_, err := cs.CoreV1().Pods("kid-system").Create(context.Background(), p, metav1.CreateOptions{})
				g.Expect(err).NotTo(HaveOccurred())
			}
			got, err := readyPod(context.Background(), cs, receiverService(corev1.ServicePort{Port: 80}))
			if tc.want == "" {
				g.Expect(err).To(MatchError("no ready pod behind Service kid-system/kid-operator-webhook"))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got.Name).To(Equal(tc.want))
		})
	}
}

func TestRedriveArgumentsNameOneEventOrFailed(t *testing.T) {
	cases := []struct {
		name string
		opts redriveOptions
		args []string
		err  string
	}{
		{name: "one event", args: []string{"demo-test-0123"}},
		{name: "--failed", opts: redriveOptions{failed: true, action: "notify", product: "demo"}},
		{name: "neither is an error", err: "name one event, or pass --failed"},
		{name: "both is an error", opts: redriveOptions{failed: true}, args: []string{"e"}, err: "name one event, or pass --failed"},
		{name: "--product without --failed is an error", opts: redriveOptions{product: "demo"}, args: []string{"e"}, err: "--product goes with --failed"},
		{name: "an event name that is no object name is an error", args: []string{"Not/A/Name"}, err: "is not a KidEvent name"},
		{name: "an action name that is no object name is an error", opts: redriveOptions{failed: true, action: "x y"}, err: "is not a KidAction name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.check(tc.args)
			if tc.err == "" {
				NewWithT(t).Expect(err).NotTo(HaveOccurred())
			} else {
				NewWithT(t).Expect(err).To(MatchError(ContainSubstring(tc.err)))
			}
		})
	}
}

func TestFailedRunsWithAnActionAreTheWholeEventsFailedRuns(t *testing.T) {
	e := &kidv1.KidEvent{Status: kidv1.KidEventStatus{Actions: []kidv1.ActionRunStatus{
		{Name: "a", Phase: kidv1.RunFailed}, {Name: "b", Phase: kidv1.RunFailed}, {Name: "c", Phase: kidv1.RunSucceeded},
	}}}
	g := NewWithT(t)
	g.Expect((&redriveOptions{}).failedRuns(e)).To(HaveLen(2))
	g.Expect((&redriveOptions{action: "b"}).failedRuns(e)).To(HaveLen(2), "the controller redrives every failed run of the event")
	g.Expect((&redriveOptions{action: "c"}).failedRuns(e)).To(BeEmpty(), "c did not fail")
}

func TestStrongestHolderIsThePlayerAndATieIsAmbiguous(t *testing.T) {
	user := func(name string, kind kidv1.IdentityKind) match {
		return match{user: &kidv1.KidUser{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: kidv1.KidUserSpec{Identity: kidv1.UserIdentity{Kind: kind}}}}
	}
	g := NewWithT(t)
	m, err := strongest([]match{user("acct", kidv1.IdentityAccount), user("session", kidv1.IdentitySession), user("challenge", kidv1.IdentityChallenge)}, "ns", "k-1")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(m.user.Name).To(Equal("session"))
	_, err = strongest([]match{user("s-a", kidv1.IdentitySession), user("s-b", kidv1.IdentitySession)}, "ns", "k-1")
	g.Expect(err).To(MatchError(ContainSubstring("id k-1 names 2 players in namespace ns: s-a, s-b")))
	_, err = strongest(nil, "ns", "k-1")
	g.Expect(err).To(MatchError(ContainSubstring("no KidUser in namespace ns")))
}

// The Krew manifest is filled in by a release; what it must say about the
// binary is checked here so that it cannot drift from cmd/kubectl-kid.
func TestKrewManifestInstallsKubectlKidOnEveryPlatform(t *testing.T) {
	g := NewWithT(t)
	raw, err := os.ReadFile("../../config/krew/kid.yaml")
	g.Expect(err).NotTo(HaveOccurred())
	var m struct {
		APIVersion string                `json:"apiVersion"`
		Kind       string                `json:"kind"`
		Metadata   struct{ Name string } `json:"metadata"`
		Spec       struct {
			Version   string `json:"version"`
			Platforms []struct {
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				} `json:"selector"`
				URI    string                      `json:"uri"`
				SHA256 string                      `json:"sha256"`
				Bin    string                      `json:"bin"`
				Files  []struct{ From, To string } `json:"files"`
			} `json:"platforms"`
		} `json:"spec"`
	}
	g.Expect(yaml.Unmarshal(raw, &m)).To(Succeed())
	g.Expect(m.APIVersion).To(Equal("krew.googlecontainertools.github.com/v1alpha2"))
	g.Expect(m.Kind).To(Equal("Plugin"))
	g.Expect(m.Metadata.Name).To(Equal("kid"), "kubectl kid runs the binary kubectl-kid")
	var platforms []string
	for _, p := range m.Spec.Platforms {
		goos, arch := p.Selector.MatchLabels["os"], p.Selector.MatchLabels["arch"]
		platforms = append(platforms, goos+"/"+arch)
		g.Expect(p.Bin).To(Equal("kubectl-kid"))
		g.Expect(p.Files).To(ContainElement(HaveField("From", "kubectl-kid")))
		g.Expect(p.URI).To(HaveSuffix("/kubectl-kid_" + m.Spec.Version + "_" + goos + "_" + arch + ".tar.gz"))
		g.Expect(p.SHA256).To(MatchRegexp(`^[0-9a-f]{64}$`))
	}
	g.Expect(platforms).To(ConsistOf("linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64"))
}
