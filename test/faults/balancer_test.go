//go:build faults && linux

package faults

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// balancer stands for a Service in front of the receivers: it sends each
// request to one replica whose readiness probe passed at its last check
// (every probeEvery, as an EndpointSlice follows readiness), round robin,
// and never retries: a connection refused or reset reaches the client as a
// 502, as it would reach k-ID.
type balancer struct {
	*httptest.Server
	replicas []*replica

	mu    sync.Mutex
	ready []bool
	next  int

	// failures counts requests that met a refused or reset connection;
	// failuresWhileReady those of them sent while another replica was
	// ready (the rolling restart must have none).
	failures, failuresWhileReady atomic.Int64
	// noneReady counts requests answered 503 because no replica was ready.
	noneReady atomic.Int64
	stop      context.CancelFunc
}

const probeEvery = 100 * time.Millisecond

func newBalancer(replicas ...*replica) *balancer {
	ctx, cancel := context.WithCancel(context.Background())
	b := &balancer{replicas: replicas, ready: make([]bool, len(replicas)), stop: cancel}
	b.Server = httptest.NewServer(http.HandlerFunc(b.serve))
	go b.probe(ctx)
	return b
}

func (b *balancer) Close() {
	b.stop()
	b.Server.Close()
}

func (b *balancer) probe(ctx context.Context) {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		for i, r := range b.replicas {
			ok := r.ready()
			b.mu.Lock()
			b.ready[i] = ok
			b.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pick returns a ready replica, round robin, or -1.
func (b *balancer) pick() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for range b.replicas {
		i := b.next % len(b.replicas)
		b.next++
		if b.ready[i] {
			return i
		}
	}
	return -1
}

// otherReady reports whether a replica besides i is ready now.
func (b *balancer) otherReady(i int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for j, ok := range b.ready {
		if j != i && ok {
			return true
		}
	}
	return false
}

var balancerTransport = &http.Transport{DisableKeepAlives: true, ResponseHeaderTimeout: 10 * time.Second}

func (b *balancer) serve(w http.ResponseWriter, req *http.Request) {
	i := b.pick()
	if i < 0 {
		b.noneReady.Add(1)
		http.Error(w, "no ready endpoint", http.StatusServiceUnavailable)
		return
	}
	target := &url.URL{Scheme: "http", Host: b.replicas[i].webhookAddr}
	proxy := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: balancerTransport,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) {
			b.failures.Add(1)
			if b.otherReady(i) {
				b.failuresWhileReady.Add(1)
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	proxy.ServeHTTP(w, req)
}
