package kidapi

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Hosts are k-ID's API hosts (spec §4.1: live and test): the only hosts a
// product's spec.api.baseURL may name unless the operator's administrator
// allows more (AllowedHosts).
var Hosts = []string{"game-api.k-id.com", "game-api.test.k-id.com"}

// AllowedHosts are the hosts a product's API key may be sent to: k-ID's
// (Hosts) and those the administrator added (--api-allow-hosts), each for
// every namespace or for one. spec.api.baseURL is written by whoever may
// edit a KidProduct, and the operator sends the key of a Secret of that
// namespace to it as a Bearer token: without this list any namespace user
// could have any of its Secrets' values sent to a server of their choosing.
// The zero value allows k-ID's hosts only.
type AllowedHosts struct {
	entries []hostEntry
}

// hostEntry is one allowance: a host name, or a range of addresses for a
// URL whose host is an IP address; ns, if set, limits it to one namespace.
type hostEntry struct {
	name   string
	prefix netip.Prefix
	ns     string
}

// ParseAllowedHosts reads --api-allow-hosts: comma-separated host names
// (api.example.com), IP addresses or ranges (127.0.0.0/8, ::1), each for
// every namespace or, written ENTRY@NAMESPACE, for that namespace's
// products only (repeat the entry for more namespaces).
func ParseAllowedHosts(entries []string) (*AllowedHosts, error) {
	a := &AllowedHosts{}
	for _, field := range entries {
		if field = strings.TrimSpace(field); field == "" {
			continue
		}
		value, ns, scoped := strings.Cut(field, "@")
		if scoped {
			if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
				return nil, fmt.Errorf("entry %q: %q after @ is not a namespace name: %s", field, ns, strings.Join(errs, "; "))
			}
		}
		e := hostEntry{ns: ns}
		switch {
		case value == "":
			return nil, fmt.Errorf("entry %q: no host", field)
		case strings.Contains(value, "/"):
			p, err := netip.ParsePrefix(value)
			if err != nil {
				return nil, fmt.Errorf("entry %q: %w", field, err)
			}
			e.prefix = p.Masked()
		default:
			if addr, err := netip.ParseAddr(value); err == nil {
				e.prefix = netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen())
				break
			}
			if errs := validation.IsDNS1123Subdomain(strings.ToLower(value)); len(errs) > 0 {
				return nil, fmt.Errorf("entry %q: not a host name, address or range: %s", field, strings.Join(errs, "; "))
			}
			e.name = strings.ToLower(value)
		}
		a.entries = append(a.entries, e)
	}
	return a, nil
}

// Check returns nil when the API key of a product of namespace ns may be
// sent to baseURL: its host is one of k-ID's, or one the administrator
// allowed for every namespace or for ns. A nil *AllowedHosts allows k-ID's
// hosts only.
func (a *AllowedHosts) Check(ns, baseURL string) error {
	u, err := url.Parse(baseURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("spec.api.baseURL is not a URL with a host")
	}
	if u.User != nil {
		// user:password@ in a URL is sent as Basic credentials, and
		// makes the host hard to read: k-ID's URLs never carry one.
		return fmt.Errorf("spec.api.baseURL carries user information")
	}
	host := strings.ToLower(u.Hostname())
	for _, h := range Hosts {
		if host == h {
			return nil
		}
	}
	addr, addrErr := netip.ParseAddr(host)
	if a != nil {
		for _, e := range a.entries {
			if e.ns != "" && e.ns != ns {
				continue
			}
			if (e.name != "" && e.name == host) || (addrErr == nil && e.prefix.IsValid() && e.prefix.Contains(addr.Unmap())) {
				return nil
			}
		}
	}
	return fmt.Errorf("host %q of spec.api.baseURL is not one of k-ID's API hosts (%s) and the operator's --api-allow-hosts does not allow it for namespace %s", host, strings.Join(Hosts, ", "), ns)
}
