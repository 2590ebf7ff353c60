package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/kid-operator/kid-operator/internal/kidsim"
)

const uuidRE = `[0-9a-f-]{36}`

// noAPIFaults is the faults command's line on a REST API that misbehaves
// in no way.
const noAPIFaults = `api: window limit off, propagation 0s as 404, undecided challenges IN_PROGRESS, PASS with sessionId; endpoint faults: none\n$`

func TestClientCommandsDriveTheFake(t *testing.T) {
	f := kidsim.NewFake(kidsim.FakeOptions{APIKey: "k"})
	t.Cleanup(f.Close)
	srv := httptest.NewServer(f.Handler())
	t.Cleanup(srv.Close)

	// ids holds what earlier steps printed, for later steps' arguments.
	ids := map[string]string{}
	grab := func(name, re string) func(string) {
		return func(out string) { ids[name] = regexp.MustCompile(re).FindStringSubmatch(out)[1] }
	}
	steps := []struct {
		name    string
		args    func() []string
		want    string // a regexp the output must match
		wantErr string
		after   func(string)
	}{
		{name: "challenge start prints the id and status", args: func() []string { return []string{"challenge", "start"} },
			want: `^challenge ` + uuidRE + ` started \(IN_PROGRESS\)\n$`, after: grab("challenge", `challenge (\S+) started`)},
		{name: "challenge approve takes flags after the id", args: func() []string {
			return []string{"challenge", "approve", ids["challenge"], "--kuid", "kuid-1", "--email", "p@example.com", "--dob", "2014-05-06"}
		}, want: `^challenge ` + uuidRE + ` approved: session (` + uuidRE + `), kuid kuid-1\n$`, after: grab("session", `session (\S+),`)},
		{name: "approving again reports the conflict", args: func() []string { return []string{"challenge", "approve", ids["challenge"]} },
			wantErr: `409 Conflict: challenge \S+ is PASS already`},
		{name: "challenge deny of an unknown id reports 404", args: func() []string { return []string{"challenge", "deny", "nope"} },
			wantErr: `404 Not Found`},
		{name: "challenge deny needs its id", args: func() []string { return []string{"challenge", "deny"} },
			wantErr: `wants 1 argument`},
		{name: "verification start", args: func() []string { return []string{"verification", "start"} },
			want: `^verification ` + uuidRE + ` started \(PENDING\)\n$`, after: grab("verification", `verification (\S+) started`)},
		{name: "verification pass", args: func() []string { return []string{"verification", "pass", ids["verification"]} },
			want: `^verification \S+ passed: id-document, age 15, digital-youth\n$`},
		{name: "verification revoke with a reason", args: func() []string {
			return []string{"verification", "revoke", ids["verification"], "--reason", "provider-reported-error"}
		}, want: `^verification \S+ revoked: provider-reported-error\n$`},
		{name: "verification fail", args: func() []string {
			id := f.StartVerification()
			return []string{"verification", "fail", id}
		}, want: `^verification \S+ failed: max-attempts-exceeded\n$`},
		{name: "session permission on", args: func() []string { return []string{"session", "permission", ids["session"], "text-chat-private", "on"} },
			want: `^session \S+: text-chat-private on \(etag [0-9a-f]{40}\)\n$`},
		{name: "session permission wants on or off", args: func() []string { return []string{"session", "permission", ids["session"], "voice-chat", "yes"} },
			wantErr: `want on or off`},
		{name: "faults set several at once", args: func() []string {
			return []string{"faults", "--deliveries", "5xx", "--delivery-delay", "2s", "--rate-limit", "10", "--retry-after", "3s"}
		}, want: `^faults: deliveries 5xx, delivery delay 2s, rate limit 10 rps \(burst 10\), retry-after 3s\n` + noAPIFaults},
		{name: "faults without flags reads them", args: func() []string { return []string{"faults"} },
			want: `^faults: deliveries 5xx, delivery delay 2s, rate limit 10 rps \(burst 10\), retry-after 3s\n` + noAPIFaults},
		{name: "faults cleared", args: func() []string {
			return []string{"faults", "--deliveries", "", "--delivery-delay", "0s", "--rate-limit", "0"}
		},
			want: `^faults: deliveries delivered, delivery delay 0s, rate limit off, retry-after 3s\n` + noAPIFaults},
		{name: "API faults set several at once", args: func() []string {
			return []string{"faults", "--window-limit", "10", "--api-status", "503", "--api-calls", "2", "--propagation-delay", "1.5s",
				"--propagation-status", "400", "--challenges-pending", "--status-without-session"}
		}, want: `\napi: window limit 10/s, propagation 1.5s as 400, undecided challenges PENDING, PASS without sessionId; endpoint faults: \* status 503 for 2 call\(s\)\n$`},
		{name: "an endpoint's own fault is set beside *", args: func() []string {
			return []string{"faults", "--api-endpoint", "session/get", "--api-hang"}
		}, want: `endpoint faults: \* status 503 for 2 call\(s\), session/get hang\n$`},
		{name: "API faults cleared", args: func() []string {
			return []string{"faults", "--window-limit", "0", "--api-status", "0", "--propagation-delay", "0s", "--propagation-status", "404",
				"--challenges-pending=false", "--status-without-session=false"}
		}, want: `endpoint faults: session/get hang\n$`},
		{name: "API faults cleared for session/get", args: func() []string {
			return []string{"faults", "--api-endpoint", "session/get", "--api-hang=false"}
		}, want: `\n` + noAPIFaults},
		{name: "an API fault the fake refuses is reported", args: func() []string { return []string{"faults", "--api-status", "404"} },
			wantErr: `400 Bad Request: api\[\*\]: status: want 500 to 599`},
		{name: "an unknown fault is refused before any call", args: func() []string { return []string{"faults", "--deliveries", "flaky"} },
			wantErr: `unknown delivery fault`},
		{name: "session delete", args: func() []string { return []string{"session", "delete", ids["session"]} },
			want: `^session \S+ deleted\n$`},
		{name: "account delete of a player without sessions reports 404", args: func() []string { return []string{"account", "delete", "kuid-1"} },
			wantErr: `404 Not Found: account kuid-1 has no session`},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			g := NewWithT(t)
			var out bytes.Buffer
			err := run(context.Background(), append(s.args(), "--sim", srv.URL), &out)
			if s.wantErr != "" {
				g.Expect(err).To(MatchError(MatchRegexp(s.wantErr)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(out.String()).To(MatchRegexp(s.want))
			if s.after != nil {
				s.after(out.String())
			}
		})
	}

	g := NewWithT(t)
	st := f.State()
	g.Expect(st.Challenges).To(HaveLen(1))
	g.Expect(st.Challenges[0].KUID).To(Equal("kuid-1"))
	g.Expect(st.Sessions).To(BeEmpty())
}

// syncBuffer is written by the serve command's goroutines and read by the
// test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestServeRunsTheFakeAndLogsEachCallAndDelivery(t *testing.T) {
	g := NewWithT(t)
	var received sync.WaitGroup
	received.Add(1)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { received.Done() }))
	t.Cleanup(hook.Close)

	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--api-key", "k", "--webhook-url", hook.URL, "--secret", "s"}, &out)
	}()
	addr := regexp.MustCompile(`listening on (http://\S+)`)
	g.Eventually(func() string { return out.String() }).Should(MatchRegexp(addr.String()))
	sim := addr.FindStringSubmatch(out.String())[1]

	var cmdOut bytes.Buffer
	g.Expect(run(ctx, []string{"challenge", "start", "--sim", sim}, &cmdOut)).To(Succeed())
	received.Wait()
	req, _ := http.NewRequest(http.MethodGet, sim+"/api/v1/session/get?kuid=someone", nil)
	req.Header.Set("Authorization", "Bearer k")
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()

	g.Eventually(func() string { return out.String() }).Should(And(
		MatchRegexp(`delivery #1 Challenge.StateChange attempt 1 -> 200\n`),
		MatchRegexp(`api GET /api/v1/session/get\?kuid=REDACTED -> 400\n`),
	))
	g.Expect(out.String()).NotTo(ContainSubstring("someone"), "no kuid in the log")

	cancel()
	g.Eventually(done, 5*time.Second).Should(Receive(BeNil()))
	g.Expect(strings.Count(out.String(), "\n")).To(BeNumerically(">=", 4))
}

func TestServeNeedsAnAPIKey(t *testing.T) {
	t.Setenv("KID_API_KEY", "")
	err := run(context.Background(), []string{"serve", "--listen", "127.0.0.1:0"}, &bytes.Buffer{})
	NewWithT(t).Expect(err).To(MatchError(ContainSubstring("--api-key")))
}

func TestServeKeepsABoundedLogAndKIDsTestLimit(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--api-key", "k", "--max-records", "5", "--window-limit", "0"}, &out)
	}()
	addr := regexp.MustCompile(`listening on (http://\S+)`)
	g.Eventually(func() string { return out.String() }).Should(MatchRegexp(addr.String()))
	sim := addr.FindStringSubmatch(out.String())[1]
	adminGet := func(path string) (*http.Response, string) {
		resp, err := http.Get(sim + path)
		g.Expect(err).NotTo(HaveOccurred())
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		resp.Body.Close()
		return resp, b.String()
	}

	for range 20 {
		req, _ := http.NewRequest(http.MethodGet, sim+"/api/v1/challenge/get-status?challengeId=c", nil)
		req.Header.Set("Authorization", "Bearer k")
		req.Header.Set("Accept", "application/json")
		resp, err := http.DefaultClient.Do(req)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(resp.StatusCode).To(Equal(400), "not found, never 429: --window-limit 0 turned the limit off")
		resp.Body.Close()
	}
	resp, body := adminGet("/kidsim/requests")
	g.Expect(resp.Header.Get("X-Total-Count")).To(Equal("20"))
	g.Expect(strings.Count(body, `"endpoint"`)).To(Equal(5), "the last 5 only")
	cancel()
	g.Eventually(done, 5*time.Second).Should(Receive(BeNil()))

	// By default, k-ID's test limit.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	var defaults syncBuffer
	go func() { done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--api-key", "k"}, &defaults) }()
	g.Eventually(func() string { return defaults.String() }).Should(MatchRegexp(addr.String()))
	sim = addr.FindStringSubmatch(defaults.String())[1]
	_, body = adminGet("/kidsim/faults")
	g.Expect(body).To(ContainSubstring(`"windowLimit":10`))
	cancel()
	g.Eventually(done, 5*time.Second).Should(Receive(BeNil()))

	g.Expect(run(context.Background(), []string{"serve", "--listen", "127.0.0.1:0", "--api-key", "k", "--max-records", "0"}, &bytes.Buffer{})).
		To(MatchError(ContainSubstring("--max-records")))
}
