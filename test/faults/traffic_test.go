//go:build faults && linux

package faults

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// delivery is one event k-ID sent, with every attempt it made.
type delivery struct {
	body     []byte
	hash     string
	attempts []kidsim.Attempt
	// ok: some attempt got 200 within k-ID's schedule.
	ok bool
}

// traffic sends k-ID-shaped deliveries to a product, each on k-ID's retry
// schedule (5 s, then 10 s), concurrently, as k-ID does.
type traffic struct {
	sender *kidsim.Sender
	wg     sync.WaitGroup
	mu     sync.Mutex
	sent   []*delivery
}

func newTraffic(p *testenv.Product) *traffic {
	s := p.Sender()
	s.Schedule = kidsim.RetrySchedule
	// k-ID's own timeout is not documented; 10 s is longer than any
	// answer the receiver gives (its store timeout is 3 s).
	s.Client = &http.Client{Timeout: 10 * time.Second}
	return &traffic{sender: s}
}

// send delivers body in the background.
func (t *traffic) send(body []byte) {
	d := &delivery{body: body, hash: hashOf(body)}
	t.mu.Lock()
	t.sent = append(t.sent, d)
	t.mu.Unlock()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		attempts, err := t.sender.Send(context.Background(), body)
		t.mu.Lock()
		d.attempts, d.ok = attempts, err == nil
		t.mu.Unlock()
	}()
}

// start streams in the background: next(i) every 1/rate seconds, for at
// most d (0: no limit), until next returns nil or stop is called. stop
// returns once no more deliveries will start; done is closed then too.
func (t *traffic) start(rate float64, d time.Duration, next func(i int) []byte) (stop func(), done <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	if d > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), d)
	}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t.stream(ctx, rate, next)
	}()
	return func() { cancel(); <-finished }, finished
}

// stream sends next(i) every 1/rate seconds until ctx ends or next returns
// nil.
func (t *traffic) stream(ctx context.Context, rate float64, next func(i int) []byte) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for i := 0; ; i++ {
		body := next(i)
		if body == nil {
			return
		}
		t.send(body)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// counts summarises the deliveries once they all finished.
type counts struct {
	deliveries, firstTry, retried, lost int
	// answers counts the attempts by status ("200", "503", "502", "error").
	answers map[string]int
}

func (c counts) String() string {
	return fmt.Sprintf("%d deliveries: %d on the first attempt, %d after k-ID's retries, %d lost; attempts by answer %v",
		c.deliveries, c.firstTry, c.retried, c.lost, c.answers)
}

// wait waits for every delivery to finish (its retries included) and counts.
func (t *traffic) wait() counts {
	t.wg.Wait()
	t.mu.Lock()
	defer t.mu.Unlock()
	c := counts{deliveries: len(t.sent), answers: map[string]int{}}
	for _, d := range t.sent {
		switch {
		case !d.ok:
			c.lost++
		case len(d.attempts) == 1:
			c.firstTry++
		default:
			c.retried++
		}
		for _, a := range d.attempts {
			key := fmt.Sprint(a.Status)
			if a.Err != nil {
				key = "error"
			}
			c.answers[key]++
		}
	}
	return c
}

// eventNames are the KidEvents the deliveries k-ID saw answered 200 stand
// for: one a distinct event, as the receiver names it (kid.Envelope.Identity:
// a repeat of one event, and permission changes of one session within k-ID's
// notification window, are one), each with the hash of a body it came from.
func (t *traffic) eventNames(g Gomega, product string) map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	names := map[string]string{}
	for _, d := range t.sent {
		for _, a := range d.attempts {
			if !a.OK() {
				continue
			}
			env, err := kid.ParseEnvelope(d.body)
			g.Expect(err).NotTo(HaveOccurred())
			unix, err := strconv.ParseInt(a.Timestamp, 10, 64)
			g.Expect(err).NotTo(HaveOccurred())
			names[kid.EventName(product, env.EventType, env.Identity(d.body, time.Unix(unix, 0)))] = d.hash
		}
	}
	return names
}

// storedOnce checks that every delivery k-ID saw answered 200 is stored as
// exactly one KidEvent, and returns the events by body hash.
func (t *traffic) storedOnce(g Gomega, ns string) map[string]*kidv1.KidEvent {
	var list kidv1.KidEventList
	g.Expect(h.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	byHash := map[string]*kidv1.KidEvent{}
	for i := range list.Items {
		e := &list.Items[i]
		g.Expect(byHash).NotTo(HaveKey(e.Spec.BodySHA256), "one delivery stored twice: %s", e.Name)
		byHash[e.Spec.BodySHA256] = e
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	missing := 0
	for _, d := range t.sent {
		if _, ok := byHash[d.hash]; !ok {
			missing++
		}
	}
	g.Expect(missing).To(BeZero(), "%d of %d deliveries not stored", missing, len(t.sent))
	return byHash
}

// newProduct creates a product whose webhook URL is the balancer's (or the
// receiver's), waits until it is Ready and until every receiver knows it
// (an unsigned POST gets 401, not 404).
func newProduct(baseURL string, receivers ...*replica) (string, *testenv.Product) {
	ns, err := h.NewNamespace(ctx)
	Expect(err).NotTo(HaveOccurred())
	h.BaseURL = baseURL
	p, err := h.NewProduct(ctx, ns, "game", nil)
	Expect(err).NotTo(HaveOccurred())
	Expect(h.WaitReady(ctx, p)).To(Succeed())
	for _, r := range receivers {
		url := "http://" + r.webhookAddr + kidv1.WebhookPath(ns, "game")
		Eventually(func() int {
			resp, err := http.Post(url, "application/json", strings.NewReader("{}"))
			if err != nil {
				return 0
			}
			resp.Body.Close()
			return resp.StatusCode
		}).Should(Equal(http.StatusUnauthorized), "receiver %s knows the product", r.name)
	}
	return ns, p
}

// passWithSession is a Challenge.StateChange PASS for a new player.
func passWithSession(i int) []byte {
	body, err := kidsim.Build(kid.ChallengeStateChange, kidsim.Fields{
		ChallengeID: fmt.Sprintf("c-%d-%d", i, time.Now().UnixNano()), Status: kid.StatusPass, ProductID: 11472,
		SessionID: fmt.Sprintf("s-%d-%d", i, time.Now().UnixNano()),
	})
	Expect(err).NotTo(HaveOccurred())
	return body
}

// report prints a line of what a spec injected or counted (shown with -v,
// and with a failure).
func report(name, format string, args ...any) {
	fmt.Fprintf(GinkgoWriter, "%s: %s\n", name, fmt.Sprintf(format, args...))
}

// allApplied checks that every event in ns was folded and its runs settled
// with success (Applied with no runs, or Succeeded).
func allApplied(g Gomega, ns string) []kidv1.KidEvent {
	var list kidv1.KidEventList
	g.Expect(h.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	unsettled, failed := 0, 0
	for _, e := range list.Items {
		switch {
		case !e.Status.Finished():
			unsettled++
		case e.Status.Phase != kidv1.EventApplied && e.Status.Phase != kidv1.EventSucceeded:
			failed++
		}
	}
	g.Expect(unsettled).To(BeZero(), "%d of %d events not folded or with runs pending", unsettled, len(list.Items))
	g.Expect(failed).To(BeZero(), "%d of %d events Failed or Ignored", failed, len(list.Items))
	return list.Items
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func hashOf(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}
