package outbound

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// defaultDeny are the ranges a tenant must not reach through the operator:
// "this network", loopback, link-local (169.254.169.254 is the cloud metadata
// service), the private and carrier-grade NAT ranges clusters are built on,
// unique-local IPv6, multicast and broadcast; the IPv6 ranges that carry an
// IPv4 address to a gateway that reaches it (NAT64, 6to4), since the IPv4
// address inside may be any of the above; and the IPv4 ranges reserved for
// protocol assignments, benchmarking and future use, which no public
// backend has. IPv4-mapped IPv6 addresses are unmapped before the check, so
// ::ffff:127.0.0.1 meets 127.0.0.0/8.
var defaultDeny = mustPrefixes(
	"0.0.0.0/8",
	"127.0.0.0/8",
	"::1/128",
	"::/128",
	"169.254.0.0/16",
	"fe80::/10",
	"10.0.0.0/8",
	"172.16.0.0/12",
	"192.168.0.0/16",
	"100.64.0.0/10",
	"fc00::/7",
	"224.0.0.0/4",
	"ff00::/8",
	"255.255.255.255/32",
	"64:ff9b::/96",   // NAT64, well-known prefix (RFC 6052)
	"64:ff9b:1::/48", // NAT64, local-use prefix (RFC 8215)
	"2002::/16",      // 6to4 (RFC 3056)
	"192.0.0.0/24",   // IETF protocol assignments (RFC 6890)
	"198.18.0.0/15",  // benchmarking (RFC 2544)
	"240.0.0.0/4",    // reserved (RFC 1112)
)

// DefaultDeny returns a copy of the ranges the guard refuses unless allowed.
func DefaultDeny() []netip.Prefix {
	return append([]netip.Prefix(nil), defaultDeny...)
}

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		out = append(out, normalizePrefix(netip.MustParsePrefix(s)))
	}
	return out
}

// normalizePrefix masks the host bits and turns an IPv4-mapped IPv6 range
// into its IPv4 form, since addresses are unmapped before they are checked
// and a mapped range would otherwise never match.
func normalizePrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked()
}

// guard decides which addresses may be dialed.
type guard struct {
	allow []netip.Prefix
	deny  []netip.Prefix
	hosts map[string]bool
	// lookup resolves a host name; tests replace it to fake a resolver.
	lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)
}

func newGuard(o Options) *guard {
	g := &guard{hosts: map[string]bool{}, lookup: net.DefaultResolver.LookupNetIP}
	for _, p := range o.Allow {
		g.allow = append(g.allow, normalizePrefix(p))
	}
	for _, p := range o.Deny {
		g.deny = append(g.deny, normalizePrefix(p))
	}
	for _, h := range o.AllowHosts {
		if h = normalizeHost(h); h != "" {
			g.hosts[h] = true
		}
	}
	return g
}

// normalizeHost makes "Example.COM." and "example.com" the same name.
func normalizeHost(h string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), "."))
}

// permits says whether a may be dialed. An administrator's ranges are
// weighed against each other by specificity, so "allow 10.0.0.0/8, deny
// 10.96.0.0/12" lets a pod through but not a service, and "deny 34.0.0.0/8,
// allow 34.1.2.3" lets that one address through; on a tie the deny wins. An
// address neither list names is refused when the default list names it.
func (g *guard) permits(a netip.Addr) bool {
	// Prefix.Contains never matches an address with a zone, so fe80::1%eth0
	// would slip past fe80::/10 if the zone stayed.
	a = a.Unmap().WithZone("")
	if !a.IsValid() {
		return false
	}
	allowBits, denyBits := longestMatch(g.allow, a), longestMatch(g.deny, a)
	if denyBits >= 0 && denyBits >= allowBits {
		return false
	}
	if allowBits >= 0 {
		return true
	}
	return longestMatch(defaultDeny, a) < 0
}

// longestMatch returns the length of the longest prefix in ps that holds a,
// or -1 when none does.
func longestMatch(ps []netip.Prefix, a netip.Addr) int {
	best := -1
	for _, p := range ps {
		if p.Bits() > best && p.Contains(a) {
			best = p.Bits()
		}
	}
	return best
}

// control runs on the socket about to connect, with the address it connects
// to. It is the check that cannot be fooled by the resolver: whatever name
// led here, the address dialed must pass.
func (g *guard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !g.permits(ap.Addr()) {
		return ErrAddressRefused
	}
	return nil
}

// dialContext resolves the host itself and dials only the addresses the
// guard permits, each by its IP, so the transport never resolves a second
// time (a rebinding DNS answer cannot change the address between check and
// connect). The dialer's Control checks the dialed address once more.
func (g *guard) dialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("splitting the dial address: %w", err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("parsing the port: %w", err)
	}
	trusted := g.hosts[normalizeHost(host)]
	addrs, err := g.resolve(ctx, network, host)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}
	if !trusted {
		dialer.Control = g.control
	}
	var firstErr error
	for _, a := range addrs {
		if !trusted && !g.permits(a) {
			continue
		}
		conn, err := dialer.DialContext(ctx, network, netip.AddrPortFrom(a, uint16(port)).String())
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if firstErr == nil {
		return nil, fmt.Errorf("dial %s: %w", network, ErrAddressRefused)
	}
	return nil, firstErr
}

// resolve returns the addresses of host (an IP literal is its own), of the
// family network asks for.
func (g *guard) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	family := "ip"
	switch network {
	case "tcp4", "udp4":
		family = "ip4"
	case "tcp6", "udp6":
		family = "ip6"
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if (family == "ip4" && !a.Unmap().Is4()) || (family == "ip6" && a.Is4()) {
			return nil, fmt.Errorf("dial %s: address family mismatch", network)
		}
		return []netip.Addr{a}, nil
	}
	addrs, err := g.lookup(ctx, family, host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return addrs, nil
}
