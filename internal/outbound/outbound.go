// Package outbound is the one HTTP client the operator uses to call out:
// KidActions' http actions to user-supplied URLs and the k-ID REST API alike.
//
// A KidAction's URL is written by a namespace user, so the client is a
// multi-tenant boundary: an address guard refuses loopback, link-local (cloud
// metadata), private and cluster ranges unless an administrator allows them,
// and it checks the address actually dialed, so a name that resolves (or
// rebinds) to such an address is refused too. Redirects are never followed,
// no proxy is taken from the environment, every phase has a timeout, and
// Scrub turns an error into a message that names no address.
package outbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Defaults of the client.
const (
	// DefaultTimeout bounds one whole request when Options.Timeout is zero.
	DefaultTimeout = 10 * time.Second
	// DialTimeout bounds one TCP connect.
	DialTimeout = 5 * time.Second
	// TLSHandshakeTimeout bounds one TLS handshake.
	TLSHandshakeTimeout = 5 * time.Second
	// MaxResponseHeaderBytes bounds the response headers.
	MaxResponseHeaderBytes = 64 << 10
)

// ErrAddressRefused is the cause of a request whose target address the guard
// refused; errors.Is finds it in what http.Client.Do returns.
var ErrAddressRefused = errors.New("address refused by the outbound guard")

// ErrRedirectRefused is the cause of a request answered with a redirect: the
// client never follows one, since that would send the body and headers (a
// signature, an API key) to a place the configuration did not name.
var ErrRedirectRefused = errors.New("redirect refused")

// ErrBodyTooLarge is returned by ReadBounded when the body exceeds its limit.
var ErrBodyTooLarge = errors.New("body too large")

// Options configures New.
type Options struct {
	// Timeout bounds one whole request (default 10s).
	Timeout time.Duration
	// Allow lists address ranges the guard lets through although they are
	// denied by default (an administrator's choice, e.g. 127.0.0.0/8 for a
	// local walkthrough, or 10.0.0.0/8 for an in-cluster backend), for
	// every call.
	Allow []netip.Prefix
	// AllowHosts lists host names (exact, lower case) whose resolved
	// addresses are let through whatever they are, for every call.
	AllowHosts []string
	// NamespaceAllow adds ranges and host names for the calls made for one
	// namespace only (see WithNamespace): letting one team's backend
	// through does not let every namespace's actions call it.
	NamespaceAllow map[string]Allowance
	// Deny adds ranges to the default deny list (e.g. the cluster's service
	// and pod CIDRs when they are public).
	Deny []netip.Prefix
}

// Allowance is what an administrator lets the calls of one namespace reach
// beyond what every call may.
type Allowance struct {
	CIDRs []netip.Prefix
	Hosts []string
}

// forNamespace returns the options of the calls made for ns: the unscoped
// allowances and ns's own.
func (o Options) forNamespace(ns string) Options {
	extra := o.NamespaceAllow[ns]
	o.Allow = slices.Concat(o.Allow, extra.CIDRs)
	o.AllowHosts = slices.Concat(o.AllowHosts, extra.Hosts)
	o.NamespaceAllow = nil
	return o
}

type namespaceKey struct{}

// WithNamespace marks the requests made with ctx as made for an object of
// namespace ns (a KidAction's call), so that the guard applies the
// administrator's allowances scoped to ns as well as the unscoped ones. A
// request without it gets the unscoped ones only.
func WithNamespace(ctx context.Context, ns string) context.Context {
	return context.WithValue(ctx, namespaceKey{}, ns)
}

// New returns a client that applies the guard and the limits above. Each call
// builds its own transport, so keep the client and reuse it: its idle
// connections are pooled.
func New(o Options) *http.Client {
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	// A namespace with allowances of its own gets a transport of its own:
	// a pooled connection, dialed under one namespace's allowance, must
	// never carry another namespace's request, which the guard would not
	// have let dial.
	r := &router{shared: newTransport(newGuard(o), timeout), byNamespace: map[string]*http.Transport{}}
	for ns := range o.NamespaceAllow {
		r.byNamespace[ns] = newTransport(newGuard(o.forNamespace(ns)), timeout)
	}
	return &http.Client{
		Transport: r,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return ErrRedirectRefused
		},
	}
}

// router sends a request through the transport of the namespace it is made
// for (WithNamespace), or the shared one.
type router struct {
	shared      *http.Transport
	byNamespace map[string]*http.Transport
}

func (r *router) RoundTrip(req *http.Request) (*http.Response, error) {
	if ns, ok := req.Context().Value(namespaceKey{}).(string); ok {
		if t, ok := r.byNamespace[ns]; ok {
			return t.RoundTrip(req)
		}
	}
	return r.shared.RoundTrip(req)
}

// CloseIdleConnections closes the idle connections of every transport
// (http.Client.CloseIdleConnections calls it).
func (r *router) CloseIdleConnections() {
	r.shared.CloseIdleConnections()
	for _, t := range r.byNamespace {
		t.CloseIdleConnections()
	}
}

// newTransport is a transport that dials through g, with the limits above.
func newTransport(g *guard, timeout time.Duration) *http.Transport {
	return &http.Transport{
		// Proxy stays nil: an HTTPS_PROXY in the operator's environment
		// would otherwise dial the proxy, not the target, past the guard.
		Proxy:                  nil,
		DialContext:            g.dialContext,
		ForceAttemptHTTP2:      true,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    TLSHandshakeTimeout,
		ResponseHeaderTimeout:  timeout,
		ExpectContinueTimeout:  time.Second,
		MaxIdleConns:           64,
		MaxIdleConnsPerHost:    8,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: MaxResponseHeaderBytes,
	}
}

// ParsePrefixes reads a comma-separated list of address ranges, as the
// manager's flags take them: "127.0.0.0/8,10.1.2.3". A bare address is a
// range of one (/32 or /128); empty entries are skipped.
func ParsePrefixes(csv string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, field := range fields(csv) {
		p, err := parsePrefix(field)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// AddAllowCIDRs reads --outbound-allow-cidrs into o: comma-separated ranges
// (or addresses, see ParsePrefixes), each for every call, or, written
// RANGE@NAMESPACE, for the calls made for that namespace only (repeat the
// entry for more namespaces).
func (o *Options) AddAllowCIDRs(csv string) error {
	for _, field := range fields(csv) {
		value, ns, err := splitScope(field)
		if err != nil {
			return err
		}
		p, err := parsePrefix(value)
		if err != nil {
			return err
		}
		if ns == "" {
			o.Allow = append(o.Allow, p)
			continue
		}
		a := o.allowance(ns)
		a.CIDRs = append(a.CIDRs, p)
		o.NamespaceAllow[ns] = a
	}
	return nil
}

// AddAllowHosts reads --outbound-allow-hosts into o: comma-separated host
// names, each for every call, or, written HOST@NAMESPACE, for the calls made
// for that namespace only (repeat the entry for more namespaces).
func (o *Options) AddAllowHosts(csv string) error {
	for _, field := range fields(csv) {
		host, ns, err := splitScope(field)
		if err != nil {
			return err
		}
		if ns == "" {
			o.AllowHosts = append(o.AllowHosts, host)
			continue
		}
		a := o.allowance(ns)
		a.Hosts = append(a.Hosts, host)
		o.NamespaceAllow[ns] = a
	}
	return nil
}

func (o *Options) allowance(ns string) Allowance {
	if o.NamespaceAllow == nil {
		o.NamespaceAllow = map[string]Allowance{}
	}
	return o.NamespaceAllow[ns]
}

// fields splits a comma-separated flag value, skipping empty entries.
func fields(csv string) []string {
	var out []string
	for _, f := range strings.Split(csv, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// splitScope splits an allow entry "VALUE@NAMESPACE" into its value and its
// namespace, "" for an entry without one.
func splitScope(entry string) (string, string, error) {
	value, ns, scoped := strings.Cut(entry, "@")
	if !scoped {
		return entry, "", nil
	}
	if value == "" {
		return "", "", fmt.Errorf("entry %q: nothing before @", entry)
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return "", "", fmt.Errorf("entry %q: %q after @ is not a namespace name: %s", entry, ns, strings.Join(errs, "; "))
	}
	return value, ns, nil
}

// parsePrefix reads one range, or one address as a range of one.
func parsePrefix(field string) (netip.Prefix, error) {
	if strings.Contains(field, "/") {
		p, err := netip.ParsePrefix(field)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("parsing address range %q: %w", field, err)
		}
		return normalizePrefix(p), nil
	}
	addr, err := netip.ParseAddr(field)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("parsing address %q: %w", field, err)
	}
	if addr.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("parsing address %q: a zone is not allowed", field)
	}
	return normalizePrefix(netip.PrefixFrom(addr, addr.BitLen())), nil
}

// ReadBounded reads r to its end, but at most limit bytes: when r holds more,
// it returns the first limit bytes and an error wrapping ErrBodyTooLarge. To
// tell "exactly limit" from "more", it reads one byte past the limit.
func ReadBounded(r io.Reader, limit int64) ([]byte, error) {
	if limit < 0 {
		limit = 0
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return b, fmt.Errorf("reading body: %w", err)
	}
	if int64(len(b)) > limit {
		return b[:limit], fmt.Errorf("%w: more than %d bytes", ErrBodyTooLarge, limit)
	}
	return b, nil
}
