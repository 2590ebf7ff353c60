package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kid-operator/kid-operator/internal/scheme"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// plane is the local control plane, with a client that never waits on its
// own rate limiter (the raw ceiling must measure the API server, not us).
type plane struct {
	env        *envtest.Environment
	cfg        *rest.Config
	client     client.Client
	kubeconfig string
	etcdDir    string
}

// configure, when given, adjusts the control plane's processes before they
// start (the scale benchmark's etcd quota and API server flags).
func startPlane(workDir string, configure ...func(*envtest.Environment)) (*plane, error) {
	env, err := testenv.New()
	if err != nil {
		return nil, err
	}
	etcdDir, err := os.MkdirTemp(workDir, "etcd-")
	if err != nil {
		return nil, err
	}
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: etcdDir}
	for _, c := range configure {
		c(env)
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	p := &plane{env: env, etcdDir: etcdDir, kubeconfig: filepath.Join(workDir, "kubeconfig")}
	user, err := env.AddUser(envtest.User{Name: "bench", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	raw, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.kubeconfig, raw, 0o600); err != nil {
		return nil, err
	}
	p.cfg = rest.CopyConfig(cfg)
	p.cfg.QPS, p.cfg.Burst = 1e6, 1e6
	if p.client, err = client.New(p.cfg, client.Options{Scheme: scheme.Scheme}); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *plane) stop() {
	_ = p.env.Stop()
	_ = os.RemoveAll(p.etcdDir)
}

// deleteAll deletes every object of a kind in a namespace. A collection
// delete of tens of thousands of objects outlasts the API server's request
// timeout (it answers 504, or resets the stream, and goes on deleting), so
// it is repeated until the list is empty.
func (p *plane) deleteAll(ctx context.Context, obj client.Object, list client.ObjectList, ns string) error {
	for {
		deleteErr := p.client.DeleteAllOf(ctx, obj, client.InNamespace(ns))
		if err := p.client.List(ctx, list, client.InNamespace(ns), client.Limit(1)); err != nil {
			return err
		}
		if meta.LenList(list) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("deleting %T in %s: %w (last error: %v)", obj, ns, ctx.Err(), deleteErr)
		case <-time.After(time.Second):
		}
	}
}

// etcdBytes is the size of etcd's database file.
func (p *plane) etcdBytes() int64 {
	fi, err := os.Stat(filepath.Join(p.etcdDir, "member", "snap", "db"))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// apiServerProfile takes a CPU profile of kube-apiserver (its
// /debug/pprof, as an admin) into workDir/name and returns pprof's top
// lines.
func (p *plane) apiServerProfile(ctx context.Context, seconds int, workDir, name string) (string, error) {
	path, err := p.saveAPIServerProfile(ctx, seconds, workDir, name)
	if err != nil {
		return "", err
	}
	return pprofTop(path)
}

// saveAPIServerProfile takes kube-apiserver's CPU profile into
// workDir/name and returns its path.
func (p *plane) saveAPIServerProfile(ctx context.Context, seconds int, workDir, name string) (string, error) {
	cs, err := kubernetes.NewForConfig(p.cfg)
	if err != nil {
		return "", err
	}
	raw, err := cs.RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", strconv.Itoa(seconds)).DoRaw(ctx)
	if err != nil {
		return "", err
	}
	path := filepath.Join(workDir, name)
	return path, os.WriteFile(path, raw, 0o644)
}

func pprofTop(path string) (string, error) {
	out, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount=30", path).CombinedOutput()
	return string(out), err
}

// handlerFrames are kube-apiserver's request wrappers (filters, flow
// control, tracing): in a cumulative top they hide what a request did.
const handlerFrames = `filters|filterlatency|otelhttp|flowcontrol|fairqueuing|TrackCompleted|ServeHTTP|HandlerFunc|withWaitGroup|WithWaitGroup|director|PathRecorderMux|pathHandler|proxyHandler`

// pprofWhere is pprof's flat top and its cumulative top without the
// request wrappers: where the time went, and what spent it.
func pprofWhere(path string) (string, error) {
	flat, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=25", path).CombinedOutput()
	if err != nil {
		return string(flat), err
	}
	cum, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount=40", "-hide="+handlerFrames, path).CombinedOutput()
	return string(flat) + "\ncumulative, request wrappers hidden:\n" + string(cum), err
}

// manager is the operator's manager, run as its own process.
type manager struct {
	bin, kubeconfig string
	extraArgs       []string
	cmd             *exec.Cmd
	webhook, probe  string
	metrics, pprof  string
	// noMemoryLimit runs it without GOMEMLIMIT (the scale benchmark's
	// comparison); by default it runs as the Deployment does.
	noMemoryLimit bool
	// readyTimeout bounds the wait for /readyz (zero: 2 minutes). The
	// initial lists of 250,000 players take longer.
	readyTimeout time.Duration
}

// memoryLimit is the manager's GOMEMLIMIT in the shipped Deployment.
const memoryLimit = "448MiB"

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func newManager(bin, kubeconfig string) *manager {
	return &manager{bin: bin, kubeconfig: kubeconfig, webhook: freeAddr(), probe: freeAddr(), metrics: freeAddr(), pprof: freeAddr()}
}

// start starts the manager and returns how long it took to be ready.
func (m *manager) start(ctx context.Context) (time.Duration, error) {
	begin := time.Now()
	m.cmd = exec.Command(m.bin,
		"--webhook-bind-address="+m.webhook, "--health-probe-bind-address="+m.probe,
		"--metrics-bind-address="+m.metrics, "--pprof-bind-address="+m.pprof,
		"--zap-log-level=error",
		// The session sync measurement's fake k-ID listens on loopback,
		// over plain http://.
		"--outbound-allow-cidrs=127.0.0.0/8", "--allow-insecure-api-urls", "--api-allow-hosts=127.0.0.0/8")
	m.cmd.Args = append(m.cmd.Args, m.extraArgs...)
	// GOMEMLIMIT as config/manager/manager.yaml sets it, unless asked
	// not to; then not inherited from the bench's environment either.
	m.cmd.Env = append(os.Environ(), "KUBECONFIG="+m.kubeconfig, "GOMEMLIMIT="+memoryLimit)
	if m.noMemoryLimit {
		m.cmd.Env = append(os.Environ(), "KUBECONFIG="+m.kubeconfig, "GOMEMLIMIT=off")
	}
	m.cmd.Stderr = os.Stderr
	if err := m.cmd.Start(); err != nil {
		return 0, err
	}
	for {
		resp, err := http.Get("http://" + m.probe + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(begin), nil
			}
		}
		timeout := cmp.Or(m.readyTimeout, 2*time.Minute)
		select {
		case <-ctx.Done():
			_ = m.stop()
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Since(begin) > timeout {
			// Stopped, not left holding its memory after the bench.
			_ = m.stop()
			return 0, fmt.Errorf("manager not ready after %s", timeout)
		}
	}
}

func (m *manager) stop() error {
	if m.cmd == nil || m.cmd.Process == nil {
		return nil
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- m.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		err = errors.Join(errors.New("manager did not stop within 30s of SIGTERM; killed"), <-done)
	}
	m.cmd = nil
	return err
}

// rssBytes is the manager's resident memory, from /proc.
func (m *manager) rssBytes() int64 { return m.procStatus("VmRSS:") }

// procStatus reads one of the manager's memory figures (VmRSS:, VmHWM:)
// from /proc, in bytes.
func (m *manager) procStatus(field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", m.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// metrics scrapes the manager's Prometheus text and returns the sum of the
// samples of a metric whose labels contain every given fragment.
// cpuSeconds is the manager process's CPU time so far, user and system
// (client_golang's process collector, read from /proc).
func (m *manager) cpuSeconds() float64 { return m.metric("process_cpu_seconds_total") }

func (m *manager) metric(name string, fragments ...string) float64 {
	resp, err := http.Get("http://" + m.metrics + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return sumMetric(string(body), name, fragments...)
}

// sumMetric sums the samples of a metric in Prometheus text whose lines
// contain every fragment (label pairs, say).
func sumMetric(text, name string, fragments ...string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, f := range fragments {
			ok = ok && strings.Contains(line, f)
		}
		if !ok {
			continue
		}
		fields := strings.Fields(line)
		v, _ := strconv.ParseFloat(fields[len(fields)-1], 64)
		sum += v
	}
	return sum
}

// writes is the number of mutating API requests the manager made so far.
func (m *manager) writes() float64 {
	var n float64
	for _, method := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		n += m.metric("rest_client_requests_total", `method="`+method+`"`)
	}
	return n
}

// profile takes a CPU profile of the manager into path and returns pprof's
// top lines.
func (m *manager) profile(seconds int, path string) (string, error) {
	if err := savePprof(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", m.pprof, seconds), path); err != nil {
		return "", err
	}
	return pprofTop(path)
}

// savePprof saves the profile a pprof endpoint answers into path.
func savePprof(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
