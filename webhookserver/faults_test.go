package webhookserver_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
	"github.com/kid-operator/kid-operator/webhookserver"
)

// The faults of the "Reliability" issue that concern the receiver: each
// spec injects a fault while sending k-ID-shaped traffic, counts what was
// stored, and prints what it injected and what it counted.

// report records a line in the spec's report (printed with -v and on
// failure).
func report(name, format string, args ...any) {
	AddReportEntry(name, fmt.Sprintf(format, args...))
}

// distinctDelivery is a challenge event k-ID could send, with a fresh id.
func distinctDelivery() []byte {
	body, err := kidsim.Build(kid.ChallengeStateChange, kidsim.Fields{Status: "PASS", ProductID: 11472})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return body
}

// storedBodies returns the body hashes of the namespace's KidEvents, one per
// object, as the harness h sees them.
func storedBodies(h *testenv.Harness, ns string) []string {
	var list kidv1.KidEventList
	ExpectWithOffset(1, h.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	var hashes []string
	for _, e := range list.Items {
		hashes = append(hashes, e.Spec.BodySHA256)
	}
	return hashes
}

// slowConn is a hostile connection: it sends its request a byte a second
// and records when the server closed it.
type slowConn struct {
	opened time.Time
	closed atomic.Int64 // unix nanos; 0 while open
	answer atomic.Value // string: the status line the server wrote, if any
}

// openSlow dials the receiver, sends head at once, then trickle a byte a
// second until the server closes the connection or stop is closed.
func openSlow(addr, head, trickle string, stop <-chan struct{}, wg *sync.WaitGroup) (*slowConn, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	sc := &slowConn{opened: time.Now()}
	if _, err := io.WriteString(conn, head); err != nil {
		conn.Close()
		return nil, err
	}
	done := make(chan struct{})
	wg.Add(2)
	go func() { // reader: notices the close
		defer wg.Done()
		defer close(done)
		line, _ := bufio.NewReader(conn).ReadString('\n')
		sc.answer.Store(strings.TrimSpace(line))
		// Read to the end: the server closes after its answer, if any.
		_, _ = io.Copy(io.Discard, conn)
		sc.closed.Store(time.Now().UnixNano())
	}()
	go func() { // writer: a byte a second
		defer wg.Done()
		defer conn.Close()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-done:
				return
			case <-t.C:
				if _, err := conn.Write([]byte{trickle[i%len(trickle)]}); err != nil {
					<-done
					return
				}
			}
		}
	}()
	return sc, nil
}

var _ = Describe("Fault 5: hostile clients", func() {
	var (
		ns string
		p  *testenv.Product
	)
	BeforeEach(func() { ns, p = readyProduct(h) })

	It("answers a well-formed delivery at its normal latency while 500 slow connections are open, and cuts them off", func() {
		// Baseline: the normal latency of a delivery, as a median and a
		// maximum of several, so that one slow answer on a loaded machine
		// moves neither much.
		deliveries := func(n int) []time.Duration {
			var out []time.Duration
			for range n {
				a := deliver(p, string(distinctDelivery()), now())
				Expect(a.Status).To(Equal(http.StatusOK), a.String())
				out = append(out, a.Duration)
			}
			slices.Sort(out)
			return out
		}
		const samples, times, noise = 9, 3, 50 * time.Millisecond
		baseline := deliveries(samples)
		median, slowest := baseline[samples/2], baseline[samples-1]

		// 250 slowloris connections (headers a byte a second, never
		// finished) and 250 whose body never ends (headers complete, a
		// 60000-byte body sent a byte a second): loopback only.
		addr := strings.TrimPrefix(h.BaseURL, "http://")
		path := strings.TrimPrefix(p.URL, h.BaseURL)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		DeferCleanup(func() { close(stop); wg.Wait() })
		ts := now()
		body := distinctDelivery()
		slowHead := "POST " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nX-Slow: "
		bodyHead := "POST " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/json\r\n" +
			"Content-Length: 60000\r\n" + kid.HeaderTimestamp + ": " + ts + "\r\n" +
			kid.HeaderSignature + ": " + kid.Sign([]byte(p.Secret), ts, body) + "\r\n\r\n" + string(body[:10])
		var headers, bodies []*slowConn
		for range 250 {
			sc, err := openSlow(addr, slowHead, "abcdefgh", stop, &wg)
			Expect(err).NotTo(HaveOccurred())
			headers = append(headers, sc)
			sc, err = openSlow(addr, bodyHead, `"x":"y",`, stop, &wg)
			Expect(err).NotTo(HaveOccurred())
			bodies = append(bodies, sc)
		}
		opened := time.Now()
		time.Sleep(1500 * time.Millisecond)

		// Well-formed deliveries during the flood, each answered 200: the
		// median at most a few times as slow as before it, and none near
		// ReadHeaderTimeout. The harm is a server whose handlers or slots
		// the slow connections hold: a delivery then waits one out
		// (seconds) or is refused. The upper deliveries are not held to a
		// ratio: a delivery is an API server create, whose own p50 is 24
		// to 43 ms in make bench, and on a loaded machine make test saw
		// 57 and 117 ms against 15 ms before, and a third slowest of 60
		// ms against 10 (the others within 35), which is load, not the
		// harm. No ratio asks for less than noise.
		during := deliveries(samples)
		Expect(during[samples/2]).To(BeNumerically("<=", max(times*median, noise)), "the median delivery during the flood took %s; before it %s: %v", during[samples/2], median, during)
		Expect(during[samples-1]).To(BeNumerically("<", webhookserver.ReadHeaderTimeout/5), "the slowest delivery during the flood took %s: %v", during[samples-1], during)

		// The server closes every slow connection within its timeout.
		slack := 2 * time.Second
		allClosed := func(conns []*slowConn) func(g Gomega) {
			return func(g Gomega) {
				for _, c := range conns {
					g.Expect(c.closed.Load()).NotTo(BeZero())
				}
			}
		}
		Eventually(allClosed(headers)).WithTimeout(time.Until(opened.Add(webhookserver.ReadHeaderTimeout + slack))).WithPolling(100 * time.Millisecond).Should(Succeed())
		Eventually(allClosed(bodies)).WithTimeout(time.Until(opened.Add(webhookserver.ReadTimeout + slack))).WithPolling(100 * time.Millisecond).Should(Succeed())
		longest := func(conns []*slowConn) time.Duration {
			var d time.Duration
			for _, c := range conns {
				d = max(d, time.Unix(0, c.closed.Load()).Sub(c.opened))
			}
			return d
		}
		headerAnswers, bodyAnswers := map[string]int{}, map[string]int{}
		for _, c := range headers {
			s, _ := c.answer.Load().(string)
			headerAnswers[s]++
		}
		for _, c := range bodies {
			s, _ := c.answer.Load().(string)
			bodyAnswers[s]++
		}
		Expect(longest(headers)).To(BeNumerically("<=", webhookserver.ReadHeaderTimeout+slack))
		Expect(longest(bodies)).To(BeNumerically("<=", webhookserver.ReadTimeout+slack))

		stored := storedBodies(h, ns)
		Expect(stored).To(HaveLen(len(baseline)+len(during)), "only the well-formed deliveries are stored")
		report("fault 5: slow connections",
			"injected 250 slowloris + 250 never-ending bodies; %d deliveries before: median %s, slowest %s; %d during the flood, all 200: median %s (bound: %d times the median before), slowest %s (bound: %s); slowloris closed by the server after at most %s (ReadHeaderTimeout %s), answers %v; slow bodies closed after at most %s (ReadTimeout %s), answers %v; stored %d = %d well-formed deliveries",
			samples, median.Round(time.Microsecond), slowest.Round(time.Microsecond), samples, during[samples/2].Round(time.Microsecond), times, during[samples-1].Round(time.Microsecond), webhookserver.ReadHeaderTimeout/5,
			longest(headers).Round(time.Millisecond), webhookserver.ReadHeaderTimeout, headerAnswers,
			longest(bodies).Round(time.Millisecond), webhookserver.ReadTimeout, bodyAnswers, len(stored), len(baseline)+len(during))
	})

	It("refuses a 1 MiB header with 431 and stores nothing", func() {
		addr := strings.TrimPrefix(h.BaseURL, "http://")
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		Expect(err).NotTo(HaveOccurred())
		defer conn.Close()
		Expect(conn.SetDeadline(time.Now().Add(10 * time.Second))).To(Succeed())
		ts := now()
		body := distinctDelivery()
		req := "POST " + strings.TrimPrefix(p.URL, h.BaseURL) + " HTTP/1.1\r\nHost: " + addr + "\r\n" +
			"Content-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n" +
			kid.HeaderTimestamp + ": " + ts + "\r\n" + kid.HeaderSignature + ": " + kid.Sign([]byte(p.Secret), ts, body) + "\r\n" +
			"X-Pad: " + strings.Repeat("x", 1<<20) + "\r\n\r\n" + string(body)
		// Write while reading: the server answers before it has read it all.
		go func() { _, _ = io.WriteString(conn, req) }()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusRequestHeaderFieldsTooLarge))
		Consistently(func() []string { return storedBodies(h, ns) }, "300ms", "50ms").Should(BeEmpty())
		report("fault 5: 1 MiB header", "injected one signed delivery with a 1 MiB header; answered %d; stored %d", resp.StatusCode, len(storedBodies(h, ns)))
	})
})

var _ = Describe("Fault 3: the API server restarted for 10 s under load", Serial, func() {
	It("stores every delivery exactly once, each 200 on some attempt of k-ID's schedule", func() {
		// A control plane and operator of this spec's own: the restart
		// leaves the controllers' watches on a backoff of up to 30 s, which
		// the suite's shared operator must not inherit. (The harness stops
		// a component within 5 s, so the outage stays near 10 s.)
		h, err := testenv.Start()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			// A control plane killed after its stop timeout is still gone.
			if err := h.Stop(); err != nil {
				fmt.Fprintf(GinkgoWriter, "stopping fault 3's control plane: %v\n", err)
			}
		})
		ns, p := readyProduct(h)

		apiServer := h.Env.ControlPlane.APIServer

		type result struct {
			body     []byte
			attempts []kidsim.Attempt
			err      error
		}
		var (
			mu      sync.Mutex
			results []result
			wg      sync.WaitGroup
		)
		stopSending := make(chan struct{})
		sending := make(chan struct{})
		go func() { // a distinct delivery every 500 ms, each on k-ID's schedule
			defer close(sending)
			t := time.NewTicker(500 * time.Millisecond)
			defer t.Stop()
			for {
				body := distinctDelivery()
				wg.Add(1)
				go func() {
					defer wg.Done()
					s := p.Sender()
					s.Schedule = kidsim.RetrySchedule
					attempts, err := s.Send(ctx, body)
					mu.Lock()
					results = append(results, result{body, attempts, err})
					mu.Unlock()
				}()
				select {
				case <-stopSending:
					return
				case <-t.C:
				}
			}
		}()

		time.Sleep(1500 * time.Millisecond)
		stopBegan := time.Now()
		// Stop returns an error when the API server had to be killed after
		// its stop timeout; either way it is down.
		_ = apiServer.Stop()
		stopped := time.Now()
		// Down for 10 s in all, the stop included.
		time.Sleep(time.Until(stopBegan.Add(10 * time.Second)))
		close(stopSending)
		<-sending
		startBegan := time.Now()
		Expect(apiServer.Start()).To(Succeed())
		started := time.Now()
		wg.Wait()
		finished := time.Now()

		byAttempt := map[int]int{}
		var unavailable, otherStatus, transport, lost int
		for _, r := range results {
			for _, a := range r.attempts {
				switch {
				case a.Err != nil:
					transport++
				case a.Status == http.StatusServiceUnavailable:
					unavailable++
				case a.Status != http.StatusOK:
					otherStatus++
				}
			}
			if r.err != nil {
				lost++
				fmt.Fprintf(GinkgoWriter, "lost: %v\n", r.attempts)
				continue
			}
			byAttempt[len(r.attempts)]++
		}
		sent := map[string]bool{}
		for _, r := range results {
			sent[sha256Hex(string(r.body))] = true
		}
		stored := storedBodies(h, ns)
		distinct := map[string]int{}
		for _, hash := range stored {
			distinct[hash]++
		}
		report("fault 3: API server restarted",
			"injected: API server stopped %s after the stream began (stop took %s), started again 10 s after the stop began (start took %s, down %s in all); deliveries sent %d (one per 500 ms, k-ID's schedule %v); 200 on attempt 1/2/3: %d/%d/%d; lost %d; 503 answers %d, other non-200 %d, transport errors %d; KidEvents stored %d, distinct %d; all done %s after the restart",
			1500*time.Millisecond, stopped.Sub(stopBegan).Round(time.Millisecond), started.Sub(startBegan).Round(time.Millisecond),
			started.Sub(stopBegan).Round(time.Millisecond), len(results), kidsim.RetrySchedule, byAttempt[1], byAttempt[2], byAttempt[3], lost, unavailable, otherStatus, transport,
			len(stored), len(distinct), finished.Sub(started).Round(time.Millisecond))

		Expect(lost).To(BeZero(), "every delivery got 200 on some attempt")
		Expect(unavailable).To(BeNumerically(">", 0), "the outage was seen as 503")
		Expect(byAttempt[2]+byAttempt[3]).To(BeNumerically(">", 0), "some deliveries were stored on a retry")
		Expect(stored).To(HaveLen(len(results)), "one KidEvent per delivery")
		Expect(distinct).To(HaveLen(len(results)))
		for hash := range distinct {
			Expect(sent).To(HaveKey(hash))
		}

	})
})
