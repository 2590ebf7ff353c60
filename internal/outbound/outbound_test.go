package outbound

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

func okServer(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func get(ctx context.Context, c *http.Client, target string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	return resp, err
}

func TestGuardOnRealRequests(t *testing.T) {
	srv, _ := okServer(t)
	_, portStr, _ := net.SplitHostPort(srv.Listener.Addr().String())
	cases := []struct {
		name    string
		opts    Options
		target  string
		refused bool
	}{
		{name: "loopback is refused by default", target: srv.URL, refused: true},
		{name: "loopback passes when the administrator allows 127.0.0.0/8", opts: Options{Allow: loopback}, target: srv.URL},
		{name: "loopback passes when the one address is allowed", opts: Options{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}, target: srv.URL},
		{name: "a name resolving to loopback is refused", target: "http://localhost:" + portStr + "/", refused: true},
		{name: "a name in AllowHosts passes whatever it resolves to", opts: Options{AllowHosts: []string{"localhost"}}, target: "http://LocalHost:" + portStr + "/"},
		{name: "IPv4-mapped loopback is refused", target: "http://[::ffff:127.0.0.1]:" + portStr + "/", refused: true},
		{name: "an administrator's deny beats an equally wide allow", opts: Options{Allow: loopback, Deny: loopback}, target: srv.URL, refused: true},
		{name: "a more specific allow inside a deny passes", opts: Options{Deny: loopback, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}, target: srv.URL},
		{name: "cloud metadata is refused before any connection", target: "http://169.254.169.254/latest/meta-data/", refused: true},
		{name: "the unspecified address is refused", target: "http://0.0.0.0:" + portStr + "/", refused: true},
		{name: "loopback through NAT64 is refused before any connection", target: "http://[64:ff9b::7f00:1]:" + portStr + "/", refused: true},
		{name: "a benchmarking address is refused before any connection", target: "http://198.18.0.1:" + portStr + "/", refused: true},
		{name: "a reserved address is refused before any connection", target: "http://240.0.0.1:" + portStr + "/", refused: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			resp, err := get(ctx, New(tc.opts), tc.target)
			if tc.refused {
				g.Expect(err).To(MatchError(ErrAddressRefused))
				// Refused by the guard, not by a connect that timed out.
				g.Expect(time.Since(start)).To(BeNumerically("<", time.Second))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
		})
	}
}

func TestPermits(t *testing.T) {
	cases := []struct {
		name string
		opts Options
		addr string
		want bool
	}{
		{name: "a public IPv4 address passes", addr: "93.184.216.34", want: true},
		{name: "a public IPv6 address passes", addr: "2606:2800:220:1:248:1893:25c8:1946", want: true},
		{name: "loopback is refused", addr: "127.0.0.1"},
		{name: "all of 127.0.0.0/8 is refused", addr: "127.1.2.3"},
		{name: "IPv6 loopback is refused", addr: "::1"},
		{name: "IPv6 unspecified is refused", addr: "::"},
		{name: "this-network is refused", addr: "0.0.0.0"},
		{name: "cloud metadata is refused", addr: "169.254.169.254"},
		{name: "IPv4-mapped metadata is refused", addr: "::ffff:169.254.169.254"},
		{name: "IPv6 link-local is refused", addr: "fe80::1"},
		{name: "IPv6 link-local with a zone is refused", addr: "fe80::1%eth0"},
		{name: "10/8 is refused", addr: "10.96.0.1"},
		{name: "172.16/12 is refused", addr: "172.31.255.255"},
		{name: "172.32 is public and passes", addr: "172.32.0.1", want: true},
		{name: "192.168/16 is refused", addr: "192.168.1.1"},
		{name: "carrier-grade NAT is refused", addr: "100.64.0.1"},
		{name: "unique-local IPv6 is refused", addr: "fd00::1"},
		{name: "IPv4 multicast is refused", addr: "224.0.0.1"},
		{name: "IPv6 multicast is refused", addr: "ff02::1"},
		{name: "broadcast is refused", addr: "255.255.255.255"},
		{name: "an allowed private range passes", opts: Options{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, addr: "10.1.2.3", want: true},
		{name: "an allowed range written IPv4-mapped passes", opts: Options{Allow: []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}}, addr: "10.1.2.3", want: true},
		{name: "a narrower deny inside an allow is refused", opts: Options{
			Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
			Deny:  []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
		}, addr: "10.96.0.10"},
		{name: "a public range the administrator denies is refused", opts: Options{Deny: []netip.Prefix{netip.MustParsePrefix("34.0.0.0/8")}}, addr: "34.1.2.3"},
		{name: "an allowed address inside a denied public range passes", opts: Options{
			Deny:  []netip.Prefix{netip.MustParsePrefix("34.0.0.0/8")},
			Allow: []netip.Prefix{netip.MustParsePrefix("34.1.2.3/32")},
		}, addr: "34.1.2.3", want: true},
		{name: "allowing IPv4 loopback does not allow IPv6 loopback", opts: Options{Allow: loopback}, addr: "::1"},
		// IPv6 ranges that carry an IPv4 address to a gateway: whatever
		// the address inside, here loopback and cloud metadata.
		{name: "NAT64 of loopback (64:ff9b::/96) is refused", addr: "64:ff9b::7f00:1"},
		{name: "NAT64 of cloud metadata is refused", addr: "64:ff9b::a9fe:a9fe"},
		{name: "NAT64 of a public address is refused too", addr: "64:ff9b::5db8:d822"},
		{name: "local-use NAT64 (64:ff9b:1::/48) is refused", addr: "64:ff9b:1::a9fe:a9fe"},
		{name: "6to4 of loopback (2002::/16) is refused", addr: "2002:7f00:1::1"},
		{name: "6to4 of cloud metadata is refused", addr: "2002:a9fe:a9fe::1"},
		// Reserved IPv4 ranges, written plain and IPv4-mapped.
		{name: "IETF protocol assignments (192.0.0.0/24) are refused", addr: "192.0.0.8"},
		{name: "IETF protocol assignments IPv4-mapped are refused", addr: "::ffff:192.0.0.170"},
		{name: "benchmarking (198.18.0.0/15) is refused", addr: "198.18.0.1"},
		{name: "the end of benchmarking is refused", addr: "198.19.255.254"},
		{name: "benchmarking IPv4-mapped is refused", addr: "::ffff:198.18.0.1"},
		{name: "reserved 240.0.0.0/4 is refused", addr: "240.0.0.1"},
		{name: "the end of 240.0.0.0/4 is refused", addr: "255.255.255.254"},
		{name: "reserved 240.0.0.0/4 IPv4-mapped is refused", addr: "::ffff:250.1.2.3"},
		{name: "an address beside benchmarking passes", addr: "198.20.0.1", want: true},
		{name: "an address beside the protocol assignments passes", addr: "192.0.1.1", want: true},
		{name: "an IPv6 address beside NAT64 passes", addr: "64:ff9c::1", want: true},
		{name: "an administrator may allow a NAT64 gateway", opts: Options{Allow: []netip.Prefix{netip.MustParsePrefix("64:ff9b::/96")}}, addr: "64:ff9b::5db8:d822", want: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(newGuard(tc.opts).permits(netip.MustParseAddr(tc.addr))).To(Equal(tc.want))
		})
	}
}

func TestControlChecksTheDialedAddress(t *testing.T) {
	cases := []struct {
		name    string
		address string
		wantErr bool
	}{
		{name: "a public address passes", address: "93.184.216.34:443"},
		{name: "a loopback address is refused", address: "127.0.0.1:8080", wantErr: true},
		{name: "an IPv6 loopback address is refused", address: "[::1]:8080", wantErr: true},
		{name: "an address that does not parse is refused", address: "nonsense", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			err := newGuard(Options{}).control("tcp4", tc.address, nil)
			if tc.wantErr {
				g.Expect(err).To(MatchError(ErrAddressRefused))
			} else {
				g.Expect(err).NotTo(HaveOccurred())
			}
		})
	}
}

func TestDialUsesOnlyPermittedResolvedAddresses(t *testing.T) {
	srv, hits := okServer(t)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	cases := []struct {
		name     string
		resolved []string
		allow    []netip.Prefix
		refused  bool
	}{
		{name: "a name rebound to loopback is refused", resolved: []string{"127.0.0.1"}, refused: true},
		{name: "a name resolving only to denied addresses is refused", resolved: []string{"10.0.0.1", "::1", "169.254.169.254"}, refused: true},
		{name: "a name with a permitted address dials only that one", resolved: []string{"169.254.169.254", "127.0.0.1"}, allow: loopback},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			before := hits.Load()
			gd := newGuard(Options{Allow: tc.allow})
			gd.lookup = func(context.Context, string, string) ([]netip.Addr, error) {
				var out []netip.Addr
				for _, s := range tc.resolved {
					out = append(out, netip.MustParseAddr(s))
				}
				return out, nil
			}
			c := New(Options{})
			c.Transport.(*router).shared.DialContext = gd.dialContext
			_, err := get(context.Background(), c, "http://backend.example:"+port+"/")
			if tc.refused {
				g.Expect(err).To(MatchError(ErrAddressRefused))
				g.Expect(hits.Load()).To(Equal(before))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(hits.Load()).To(Equal(before + 1))
		})
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method+" is answered with the redirect error and the second server is never hit", func(t *testing.T) {
			g := NewWithT(t)
			second, secondHits := okServer(t)
			first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, second.URL+"/stolen", http.StatusTemporaryRedirect)
			}))
			defer first.Close()
			req, err := http.NewRequest(method, first.URL, bytes.NewReader([]byte(`{"secret":"x"}`)))
			g.Expect(err).NotTo(HaveOccurred())
			req.Header.Set("Authorization", "Bearer k")
			resp, err := New(Options{Allow: loopback}).Do(req)
			if resp != nil {
				_ = resp.Body.Close()
			}
			g.Expect(err).To(MatchError(ErrRedirectRefused))
			g.Expect(secondHits.Load()).To(BeZero())
			g.Expect(Scrub(err)).To(Equal("redirect refused"))
		})
	}
}

func TestTimeoutBoundsTheWholeRequest(t *testing.T) {
	g := NewWithT(t)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	start := time.Now()
	_, err := get(context.Background(), New(Options{Allow: loopback, Timeout: 200 * time.Millisecond}), srv.URL)
	g.Expect(err).To(HaveOccurred())
	g.Expect(time.Since(start)).To(BeNumerically("<", 2*time.Second))
	g.Expect(Scrub(err)).To(Equal("timed out"))
}

func TestScrub(t *testing.T) {
	// A port nothing listens on: take one and close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l.Addr().String()
	_ = l.Close()
	_, closedPort, _ := net.SplitHostPort(closedAddr)

	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake we make fail is expected
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	_, tlsPort, _ := net.SplitHostPort(tlsSrv.Listener.Addr().String())

	allowed := New(Options{Allow: loopback})
	realErr := func(c *http.Client, target string) error {
		_, err := get(context.Background(), c, target)
		if err == nil {
			t.Fatalf("expected %s to fail", target)
		}
		return err
	}
	cases := []struct {
		name string
		err  error
		want string
		port string
	}{
		{name: "nil is empty", err: nil, want: ""},
		{name: "a refused connection says so without the address", err: realErr(allowed, "http://"+closedAddr+"/x?sessionId=s"), want: "connection refused", port: closedPort},
		{name: "a guard refusal says so without the address", err: realErr(New(Options{}), "http://"+closedAddr+"/"), want: "address refused by the outbound guard", port: closedPort},
		{name: "an untrusted certificate is a TLS failure without the address", err: realErr(allowed, tlsSrv.URL), want: "TLS certificate verification failed", port: tlsPort},
		{name: "a DNS failure does not name the host", err: &url.Error{Op: "Get", URL: "http://internal.corp:8080/", Err: &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "internal.corp", IsNotFound: true}}}, want: "DNS lookup failed"},
		{name: "a deadline is a timeout", err: &url.Error{Op: "Get", URL: "http://10.0.0.1/", Err: context.DeadlineExceeded}, want: "timed out"},
		{name: "an oversized body says so", err: ErrBodyTooLarge, want: "response too large"},
		{name: "anything else is a plain failure", err: errors.New("dial 10.0.0.1:443 something odd"), want: "request failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			got := Scrub(tc.err)
			g.Expect(got).To(Equal(tc.want))
			g.Expect(got).NotTo(ContainSubstring("127.0.0.1"))
			g.Expect(got).NotTo(ContainSubstring("10.0.0.1"))
			g.Expect(got).NotTo(ContainSubstring("internal.corp"))
			if tc.port != "" {
				g.Expect(got).NotTo(ContainSubstring(tc.port))
			}
		})
	}
}

func TestParsePrefixes(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    []string
		wantErr bool
	}{
		{name: "empty is no ranges", in: "", want: nil},
		{name: "ranges and bare addresses are read", in: "127.0.0.0/8, 10.1.2.3,fd00::1", want: []string{"127.0.0.0/8", "10.1.2.3/32", "fd00::1/128"}},
		{name: "host bits are masked", in: "10.1.2.3/8", want: []string{"10.0.0.0/8"}},
		{name: "an IPv4-mapped range becomes IPv4", in: "::ffff:10.0.0.0/104", want: []string{"10.0.0.0/8"}},
		{name: "empty entries are skipped", in: ",127.0.0.1,,", want: []string{"127.0.0.1/32"}},
		{name: "junk is refused", in: "127.0.0.0/8,not-an-address", wantErr: true},
		{name: "a host name is refused", in: "localhost", wantErr: true},
		{name: "a bad prefix length is refused", in: "10.0.0.0/33", wantErr: true},
		{name: "a zone is refused", in: "fe80::1%eth0", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := ParsePrefixes(tc.in)
			if tc.wantErr {
				g.Expect(err).To(HaveOccurred())
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			var gotStr []string
			for _, p := range got {
				gotStr = append(gotStr, p.String())
			}
			g.Expect(gotStr).To(Equal(tc.want))
		})
	}
}

func TestReadBounded(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		limit   int64
		want    string
		wantErr bool
	}{
		{name: "a short body is read whole", in: "hello", limit: 10, want: "hello"},
		{name: "a body of exactly the limit is read whole", in: "hello", limit: 5, want: "hello"},
		{name: "a body over the limit is an error with the first limit bytes", in: "hello!", limit: 5, want: "hello", wantErr: true},
		{name: "an empty body is empty", in: "", limit: 5, want: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := ReadBounded(strings.NewReader(tc.in), tc.limit)
			if tc.wantErr {
				g.Expect(err).To(MatchError(ErrBodyTooLarge))
			} else {
				g.Expect(err).NotTo(HaveOccurred())
			}
			g.Expect(string(got)).To(Equal(tc.want))
		})
	}
}

func TestNoProxyFromTheEnvironment(t *testing.T) {
	g := NewWithT(t)
	t.Setenv("HTTP_PROXY", "http://proxy.invalid:3128")
	t.Setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
	srv, hits := okServer(t)
	c := New(Options{Allow: loopback})
	g.Expect(c).NotTo(BeIdenticalTo(http.DefaultClient))
	g.Expect(c.Transport.(*router).shared.Proxy).To(BeNil())
	_, err := get(context.Background(), c, srv.URL)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(hits.Load()).To(Equal(int32(1)))
}

func TestScopedAllowancesApplyToTheirNamespaceOnly(t *testing.T) {
	srv, hits := okServer(t)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	byCIDR, byHost := Options{}, Options{}
	NewWithT(t).Expect(byCIDR.AddAllowCIDRs("127.0.0.0/8@team-a, 10.0.0.0/8@team-a")).To(Succeed())
	NewWithT(t).Expect(byHost.AddAllowHosts("localhost@team-a")).To(Succeed())
	for name, tc := range map[string]struct {
		opts   Options
		target string
	}{
		"a range scoped with --outbound-allow-cidrs": {byCIDR, srv.URL},
		"a host scoped with --outbound-allow-hosts":  {byHost, "http://localhost:" + port + "/"},
	} {
		t.Run(name+" lets namespace A call and refuses namespace B, even on A's pooled connection", func(t *testing.T) {
			g := NewWithT(t)
			c := New(tc.opts)
			before := hits.Load()
			ctx := context.Background()
			for range 2 {
				// Twice, so that the second reuses the pooled
				// connection the first dialed.
				resp, err := get(WithNamespace(ctx, "team-a"), c, tc.target)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
			}
			g.Expect(hits.Load()).To(Equal(before + 2))
			// A's connection is idle in the pool: B's request and an
			// unscoped one must not ride it.
			_, err := get(WithNamespace(ctx, "team-b"), c, tc.target)
			g.Expect(err).To(MatchError(ErrAddressRefused))
			_, err = get(ctx, c, tc.target)
			g.Expect(err).To(MatchError(ErrAddressRefused))
			g.Expect(hits.Load()).To(Equal(before+2), "B's and the unscoped request never reached the server")
		})
	}

	t.Run("an unscoped entry still lets every namespace call", func(t *testing.T) {
		g := NewWithT(t)
		var o Options
		g.Expect(o.AddAllowCIDRs("127.0.0.0/8")).To(Succeed())
		c := New(o)
		for _, ctx := range []context.Context{context.Background(), WithNamespace(context.Background(), "team-b")} {
			_, err := get(ctx, c, srv.URL)
			g.Expect(err).NotTo(HaveOccurred())
		}
	})

	t.Run("a scoped entry adds to the unscoped ones, and the administrator's deny still wins", func(t *testing.T) {
		g := NewWithT(t)
		var o Options
		g.Expect(o.AddAllowCIDRs("10.0.0.0/8,127.0.0.0/8@team-a")).To(Succeed())
		o.Deny = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
		gd := newGuard(o.forNamespace("team-a"))
		g.Expect(gd.permits(netip.MustParseAddr("127.0.0.1"))).To(BeTrue())
		g.Expect(gd.permits(netip.MustParseAddr("10.1.2.3"))).To(BeTrue())
		g.Expect(gd.permits(netip.MustParseAddr("10.96.0.1"))).To(BeFalse())
		g.Expect(newGuard(o.forNamespace("team-b")).permits(netip.MustParseAddr("127.0.0.1"))).To(BeFalse())
	})
}

func TestAllowEntriesParse(t *testing.T) {
	g := NewWithT(t)
	var o Options
	g.Expect(o.AddAllowCIDRs("10.20.0.0/16, 10.30.0.0/16@games,10.30.0.0/16@games-staging,fd00::1@games")).To(Succeed())
	g.Expect(o.AddAllowHosts("proxy.infra.svc, backend.games.svc.cluster.local@games")).To(Succeed())
	g.Expect(o.Allow).To(Equal([]netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}))
	g.Expect(o.AllowHosts).To(Equal([]string{"proxy.infra.svc"}))
	g.Expect(o.NamespaceAllow).To(Equal(map[string]Allowance{
		"games": {
			CIDRs: []netip.Prefix{netip.MustParsePrefix("10.30.0.0/16"), netip.MustParsePrefix("fd00::1/128")},
			Hosts: []string{"backend.games.svc.cluster.local"},
		},
		"games-staging": {CIDRs: []netip.Prefix{netip.MustParsePrefix("10.30.0.0/16")}},
	}))
	for _, bad := range []string{"10.0.0.0/8@", "@games", "10.0.0.0/8@Games", "10.0.0.0/8@a.b", "10.0.0.0/8@games@x", "not-an-address@games"} {
		g.Expect((&Options{}).AddAllowCIDRs(bad)).NotTo(Succeed(), bad)
	}
	for _, bad := range []string{"host@", "@games", "host@under_score"} {
		g.Expect((&Options{}).AddAllowHosts(bad)).NotTo(Succeed(), bad)
	}
}
