package kubectlkid

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// forwardToService forwards a free local port to a ready pod behind the
// Service, as kubectl port-forward svc/<name> does, and returns the local
// base URL and a function that stops the forward.
//
// Envtest has no kubelet, so no test runs a pod to forward to: this is kept
// to the calls kubectl makes (pick a pod, resolve the target port, SPDY
// dial the pod's portforward subresource), and every other path of the
// test command runs in the tests with --url.
func forwardToService(ctx context.Context, cfg *rest.Config, ns, name string, errOut io.Writer) (*url.URL, func(), error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	svc, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("reading the receiver Service %s/%s (--service-namespace, --service; or pass --url): %w", ns, name, err)
	}
	pod, err := readyPod(ctx, cs, svc)
	if err != nil {
		return nil, nil, err
	}
	port, err := targetPort(svc, pod)
	if err != nil {
		return nil, nil, err
	}
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, nil, err
	}
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod.Name).SubResource("portforward")
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, req.URL())
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, stop, ready, io.Discard, errOut)
	if err != nil {
		return nil, nil, err
	}
	failed := make(chan error, 1)
	go func() { failed <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-failed:
		return nil, nil, fmt.Errorf("port-forwarding to pod %s/%s: %w", ns, pod.Name, err)
	case <-ctx.Done():
		close(stop)
		return nil, nil, ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		close(stop)
		return nil, nil, fmt.Errorf("port-forwarding to pod %s/%s: no local port: %v", ns, pod.Name, err)
	}
	return &url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(int(ports[0].Local))}, func() { close(stop) }, nil
}

// readyPod is a running, ready pod the Service selects.
func readyPod(ctx context.Context, cs kubernetes.Interface, svc *corev1.Service) (*corev1.Pod, error) {
	if len(svc.Spec.Selector) == 0 {
		return nil, fmt.Errorf("the Service %s/%s selects no pods", svc.Namespace, svc.Name)
	}
	pods, err := cs.CoreV1().Pods(svc.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(svc.Spec.Selector).String()})
	if err != nil {
		return nil, fmt.Errorf("listing the pods of Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	for i := range pods.Items {
		if podReady(&pods.Items[i]) {
			return &pods.Items[i], nil
		}
	}
	return nil, fmt.Errorf("no ready pod behind Service %s/%s", svc.Namespace, svc.Name)
}

// podReady says whether a pod serves: running, not being deleted, and
// Ready (its readiness probe passes), as a Service's endpoints count it.
func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// targetPort is the pod's port behind the Service's port named webhook (or
// its only port).
func targetPort(svc *corev1.Service, pod *corev1.Pod) (int, error) {
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Name == "webhook" || len(svc.Spec.Ports) == 1 {
			sp = &svc.Spec.Ports[i]
			break
		}
	}
	if sp == nil {
		return 0, fmt.Errorf("the Service %s/%s has no port named webhook", svc.Namespace, svc.Name)
	}
	switch {
	case sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal == 0:
		return int(sp.Port), nil
	case sp.TargetPort.Type == intstr.Int:
		return int(sp.TargetPort.IntVal), nil
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == sp.TargetPort.StrVal {
				return int(p.ContainerPort), nil
			}
		}
	}
	return 0, fmt.Errorf("pod %s/%s has no port named %s", pod.Namespace, pod.Name, sp.TargetPort.StrVal)
}
