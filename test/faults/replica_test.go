//go:build faults && linux

package faults

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// replica is one manager process, started from the binary the suite built,
// with the flags a Deployment would give it. Its ports stay the same across
// restarts, as a Service's endpoint would for a pod restarted in place.
type replica struct {
	name string
	// args are the flags besides the addresses.
	args []string
	// webhookAddr is "" for a controllers-only replica.
	webhookAddr, probeAddr, metricsAddr string
	logPath                             string

	cmd    *exec.Cmd
	exited chan struct{}
	// starts counts the processes started.
	starts int

	mu sync.Mutex
	// exits are when each of its processes ended, killed or on its own.
	exits []time.Time
}

// newReplica reserves the replica's ports; receiver says whether it runs a
// receiver.
func newReplica(name string, receiver bool, args ...string) *replica {
	r := &replica{name: name, args: args, probeAddr: freeAddr(), metricsAddr: freeAddr(), logPath: filepath.Join(suiteDir, name+".log")}
	if receiver {
		r.webhookAddr = freeAddr()
	}
	return r
}

// freeAddr is a loopback address with a port free at the time of asking.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start launches the process; it does not wait until it is ready.
func (r *replica) start() error {
	if r.running() {
		return fmt.Errorf("%s is already running", r.name)
	}
	webhook := r.webhookAddr
	if webhook == "" {
		webhook = "0"
	}
	args := append([]string{
		"--webhook-bind-address=" + webhook,
		"--health-probe-bind-address=" + r.probeAddr,
		"--metrics-bind-address=" + r.metricsAddr,
		"--outbound-allow-cidrs=127.0.0.0/8",
	}, r.args...)
	logFile, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	r.starts++
	fmt.Fprintf(logFile, "===== start %d of %s: %s\n", r.starts, r.name, strings.Join(args, " "))
	cmd := exec.Command(managerBin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Dies with the test binary, whatever ends it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	exited := r.exited
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		r.mu.Lock()
		r.exits = append(r.exits, time.Now())
		r.mu.Unlock()
		close(exited)
	}()
	return nil
}

func (r *replica) running() bool {
	if r.exited == nil {
		return false
	}
	select {
	case <-r.exited:
		return false
	default:
		return true
	}
}

// ready reports whether the replica's readiness probe answers 200.
func (r *replica) ready() bool {
	return get("http://"+r.probeAddr+"/readyz") == http.StatusOK
}

// waitReady waits until the readiness probe passes.
func (r *replica) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !r.ready() {
		if !r.running() {
			return fmt.Errorf("%s exited before it was ready: %s", r.name, r.tail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %s", r.name, timeout, r.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// term sends SIGTERM, as the kubelet does, and waits for the exit.
func (r *replica) term(timeout time.Duration) error {
	if !r.running() {
		return nil
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-r.exited:
		if code := r.cmd.ProcessState.ExitCode(); code != 0 {
			return fmt.Errorf("%s exited with %d after SIGTERM: %s", r.name, code, r.tail())
		}
		return nil
	case <-time.After(timeout):
		r.kill()
		return fmt.Errorf("%s still running %s after SIGTERM", r.name, timeout)
	}
}

// kill sends SIGKILL and waits for the exit.
func (r *replica) kill() {
	if !r.running() {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
}

// stops returns when the processes of the replicas ended, in order.
func stops(replicas ...*replica) []time.Time {
	var out []time.Time
	for _, r := range replicas {
		r.mu.Lock()
		out = append(out, r.exits...)
		r.mu.Unlock()
	}
	slices.SortFunc(out, time.Time.Compare)
	return out
}

// leader reports whether the replica holds the leader election lease, by
// controller-runtime's metric.
func (r *replica) leader() bool {
	v, ok := metric(r.metricsAddr, `leader_election_master_status{name="kid-operator.kid.dev"}`)
	return ok && v == 1
}

// tail is the end of the replica's log, for failure messages.
func (r *replica) tail() string {
	raw, err := os.ReadFile(r.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	return "\n" + strings.Join(lines[max(0, len(lines)-15):], "\n")
}

var probeClient = &http.Client{Timeout: time.Second}

// get is the status of a GET, or 0 when there was no answer.
func get(url string) int {
	resp, err := probeClient.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// metric reads one sample from a plain-HTTP /metrics endpoint.
func metric(addr, series string) (float64, bool) {
	resp, err := probeClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}
