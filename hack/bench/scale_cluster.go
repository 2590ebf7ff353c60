package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kubectlkid"
)

// What the players cost the cluster: their bytes as etcd stores them, the
// resident memory of kube-apiserver and etcd, and how long kubectl kid
// takes to find one player among them.

// lookupStandIn is the verification id of the stand-in the lookup by
// verification finds: a Verification.Result names nothing but its
// verification, so its player is the user known by it (the bench's
// players hold their verification in status, which no webhook links to a
// session, so a lookup of theirs would find nothing; see
// internal/kubectlkid/find.go).
const lookupStandIn = "v-scale-lookup"

// processMetric reads an unlabelled metric (process_resident_memory_bytes,
// process_cpu_seconds_total) from a Prometheus endpoint's text (0 if
// absent).
func processMetric(text, name string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// processRSS reads process_resident_memory_bytes from a Prometheus
// endpoint's text (0 if absent).
func processRSS(text string) int64 {
	return int64(processMetric(text, "process_resident_memory_bytes"))
}

// apiServerMetrics is kube-apiserver's own metrics ("" if they cannot be
// read).
func (p *plane) apiServerMetrics(ctx context.Context) string {
	cs, err := kubernetes.NewForConfig(p.cfg)
	if err != nil {
		return ""
	}
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return ""
	}
	return string(raw)
}

// etcdMetrics is etcd's metrics on its client URL ("" if they cannot be
// read).
func (p *plane) etcdMetrics(ctx context.Context) string {
	body, err := p.etcdHTTP(ctx, http.MethodGet, "/metrics", nil)
	if err != nil {
		return ""
	}
	return string(body)
}

// apiServerRSS is kube-apiserver's resident memory (0 if it cannot be
// read): what the players cost the cluster.
func (p *plane) apiServerRSS(ctx context.Context) int64 {
	return processRSS(p.apiServerMetrics(ctx))
}

// etcdRSS is etcd's resident memory (0 if it cannot be read).
func (p *plane) etcdRSS(ctx context.Context) int64 {
	return processRSS(p.etcdMetrics(ctx))
}

// startCPU is the CPU time each process spent on a start of the manager,
// from its launch to ready: on two shared cores it says which of them the
// start waits for.
type startCPU struct{ manager, apiServer, etcd float64 }

// timedStart starts m and returns how long it took to be ready and the CPU
// time each process spent meanwhile (the manager's: all of its own).
func timedStart(ctx context.Context, p *plane, m *manager) (time.Duration, startCPU, error) {
	cpu := func(text string) float64 { return processMetric(text, "process_cpu_seconds_total") }
	apiText := p.apiServerMetrics(ctx)
	apiBefore, etcdBefore, checksBefore := cpu(apiText), cpu(p.etcdMetrics(ctx)), consistencyChecks(apiText)
	took, err := m.start(ctx)
	if err != nil {
		return took, startCPU{}, err
	}
	apiText = p.apiServerMetrics(ctx)
	if checks := consistencyChecks(apiText) - checksBefore; checks > 0 {
		log("kube-apiserver checked its watch cache of KidUsers against etcd during this start (%.0f times): a read of every player from etcd", checks)
	}
	return took, startCPU{manager: m.cpuSeconds(), apiServer: cpu(apiText) - apiBefore, etcd: cpu(p.etcdMetrics(ctx)) - etcdBefore}, nil
}

// consistencyChecks counts kube-apiserver's checks of its KidUser watch
// cache against etcd (DetectCacheInconsistency, on by default since
// Kubernetes 1.34): every 5 to 7.5 minutes each one lists every player
// from etcd and decodes it, seconds of CPU at 250,000 players, so a start
// or a lookup it overlaps is slower for it.
func consistencyChecks(apiServerMetrics string) float64 {
	return sumMetric(apiServerMetrics, "apiserver_storage_consistency_checks_total", `resource="kidusers"`)
}

// etcdHTTP calls etcd's HTTP endpoint (its gRPC gateway, /metrics).
func (p *plane) etcdHTTP(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	u := *p.env.ControlPlane.Etcd.URL
	u.Path = path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("etcd %s %s: %s: %s", method, path, resp.Status, out)
	}
	return out, nil
}

// storedUserBytes is the mean size of the value etcd holds for the given
// KidUsers (JSON, managedFields included): what one player costs etcd
// before its revisions, and what kube-apiserver reads and decodes.
func (p *plane) storedUserBytes(ctx context.Context, names []string) (int64, error) {
	var total int64
	for _, name := range names {
		key := "/registry/kid.dev/kidusers/" + benchNS + "/" + name
		body, err := json.Marshal(map[string]string{"key": base64.StdEncoding.EncodeToString([]byte(key))})
		if err != nil {
			return 0, err
		}
		raw, err := p.etcdHTTP(ctx, http.MethodPost, "/v3/kv/range", body)
		if err != nil {
			return 0, err
		}
		var got struct {
			KVs []struct {
				Value string `json:"value"`
			} `json:"kvs"`
		}
		if err := json.Unmarshal(raw, &got); err != nil {
			return 0, err
		}
		if len(got.KVs) != 1 {
			return 0, fmt.Errorf("etcd holds no value under %s", key)
		}
		v, err := base64.StdEncoding.DecodeString(got.KVs[0].Value)
		if err != nil {
			return 0, err
		}
		total += int64(len(v))
	}
	return total / int64(len(names)), nil
}

// sampleUsers are the names of a few players spread over the first n.
func sampleUsers(n int) []string {
	var names []string
	for _, i := range []int{0, n / 4, n / 2, 3 * n / 4, n - 1} {
		session, _, _, _ := playerIDs(i)
		names = append(names, kidv1.UserName("bench", kidv1.IdentitySession, session))
	}
	return names
}

// createLookupStandIn stores the stand-in a Verification.Result about
// nobody's session leaves: known by its verification, with its record.
func createLookupStandIn(ctx context.Context, p *plane, product *kidv1.KidProduct) error {
	u := &kidv1.KidUser{
		ObjectMeta: metav1.ObjectMeta{
			Name: kidv1.UserName("bench", kidv1.IdentityVerification, lookupStandIn), Namespace: benchNS,
			Labels:          map[string]string{kidv1.ProductLabel: "bench", kidv1.IDLabel(lookupStandIn): ""},
			OwnerReferences: []metav1.OwnerReference{product.OwnerReference()},
		},
		Spec: kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "bench"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentityVerification, ID: lookupStandIn}},
	}
	if err := p.client.Create(ctx, u); err != nil {
		return err
	}
	at := metav1.Now()
	u.Status.Verification = kidv1.VerificationStatus{State: kidv1.VerificationVerified, Records: []kidv1.VerificationRecord{{ID: lookupStandIn, State: kidv1.VerificationVerified, Method: "age-estimation", Time: &at}}}
	return p.client.Status().Update(ctx, u)
}

// lookup is one timed kubectl kid user. A lookup that failed (without
// the API server's watch cache, a selector list reads every player of the
// namespace from etcd, which can outlast the request's 60 s) is a goal
// missed, not a reason to stop measuring the point: err says why.
type lookup struct {
	kind string
	took time.Duration
	err  string
}

// timeLookups runs `kubectl kid user <id>` (in process, against the
// bench's control plane, as a person types it) by the challenge and kuid
// of player i and by the stand-in's verification, and returns each one's
// time, or why it failed. Player i must be one whose consent is still
// about its seeded challenge (no fold of the bench's touched it).
func timeLookups(ctx context.Context, p *plane, i int) []lookup {
	checksBefore := consistencyChecks(p.apiServerMetrics(ctx))
	defer func() {
		if checks := consistencyChecks(p.apiServerMetrics(ctx)) - checksBefore; checks > 0 {
			log("kube-apiserver checked its watch cache of KidUsers against etcd during these lookups (%.0f times)", checks)
		}
	}()
	_, kuid, challenge, _ := playerIDs(i)
	var out []lookup
	for _, l := range []struct{ kind, id string }{{"challenge", challenge}, {"verification", lookupStandIn}, {"kuid", kuid}} {
		var stdout, stderr bytes.Buffer
		cmd := kubectlkid.NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &stdout, ErrOut: &stderr}, nil)
		cmd.SetArgs([]string{"--kubeconfig", p.kubeconfig, "-n", benchNS, "user", l.id})
		begin := time.Now()
		err := cmd.ExecuteContext(ctx)
		got := lookup{kind: l.kind, took: time.Since(begin)}
		if err != nil {
			got.err = fmt.Sprintf("kubectl kid user %s: %v: %s", l.id, err, strings.TrimSpace(stderr.String()))
		}
		out = append(out, got)
	}
	return out
}

// profileLookups takes kube-apiserver's CPU profile for seconds while
// player i's lookups repeat, one at a time as a person types them, and
// returns pprof's top lines.
func profileLookups(ctx context.Context, p *plane, i, seconds int, workDir string) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			timeLookups(ctx, p, i)
		}
	}()
	path, err := p.saveAPIServerProfile(ctx, seconds, workDir, "kube-apiserver-lookups.cpu.pprof")
	cancel()
	<-done
	if err != nil {
		return "", err
	}
	return pprofWhere(path)
}

// profiledStart starts a manager over the players and profiles the CPU of
// kube-apiserver from the launch, and of the manager from when its pprof
// answers, for seconds each; the manager is stopped once both are taken.
// It returns each one's pprof top lines: where a start's time goes.
func profiledStart(ctx context.Context, p *plane, m *manager, seconds int, workDir string) (apiServer, manager string, err error) {
	var wg sync.WaitGroup
	var apiErr, mgrErr error
	wg.Go(func() {
		var path string
		if path, apiErr = p.saveAPIServerProfile(ctx, seconds, workDir, "kube-apiserver-start.cpu.pprof"); apiErr == nil {
			apiServer, apiErr = pprofWhere(path)
		}
	})
	wg.Go(func() {
		deadline := time.Now().Add(time.Duration(seconds) * time.Second)
		for time.Now().Before(deadline) {
			if resp, err := http.Get("http://" + m.pprof + "/debug/pprof/"); err == nil {
				resp.Body.Close()
				path := filepath.Join(workDir, "manager-start.cpu.pprof")
				if mgrErr = savePprof(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", m.pprof, seconds), path); mgrErr == nil {
					manager, mgrErr = pprofWhere(path)
				}
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		mgrErr = errors.New("the manager's pprof never answered")
	})
	_, startErr := m.start(ctx)
	wg.Wait()
	_ = m.stop()
	return apiServer, manager, errors.Join(startErr, apiErr, mgrErr)
}

// lookupFailed is the first failed lookup's error, or "".
func lookupFailed(ls []lookup) string {
	for _, l := range ls {
		if l.err != "" {
			return l.err
		}
	}
	return ""
}

// worstLookup is the longest of the lookups.
func worstLookup(ls []lookup) time.Duration {
	var most time.Duration
	for _, l := range ls {
		most = max(most, l.took)
	}
	return most
}

// lookupsStr prints each lookup's time, for the table.
func lookupsStr(ls []lookup) string {
	parts := make([]string, 0, len(ls))
	for _, l := range ls {
		if l.err != "" {
			parts = append(parts, fmt.Sprintf("%s failed after %.0f", l.kind, ms(l.took)))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.0f", l.kind, ms(l.took)))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}
