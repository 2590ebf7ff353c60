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
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"
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
	// local walkthrough, or 10.0.0.0/8 for an in-cluster backend).
	Allow []netip.Prefix
	// AllowHosts lists host names (exact, lower case) whose resolved
	// addresses are let through whatever they are.
	AllowHosts []string
	// Deny adds ranges to the default deny list (e.g. the cluster's service
	// and pod CIDRs when they are public).
	Deny []netip.Prefix
}

// New returns a client that applies the guard and the limits above. Each call
// builds its own transport, so keep the client and reuse it: its idle
// connections are pooled.
func New(o Options) *http.Client {
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	g := newGuard(o)
	transport := &http.Transport{
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
	return &http.Client{
		Transport: transport,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return ErrRedirectRefused
		},
	}
}

// ParsePrefixes reads a comma-separated list of address ranges, as the
// manager's flags take them: "127.0.0.0/8,10.1.2.3". A bare address is a
// range of one (/32 or /128); empty entries are skipped.
func ParsePrefixes(csv string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, field := range strings.Split(csv, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(field, "/") {
			parsed, err := netip.ParsePrefix(field)
			if err != nil {
				return nil, fmt.Errorf("parsing address range %q: %w", field, err)
			}
			p = parsed
		} else {
			addr, err := netip.ParseAddr(field)
			if err != nil {
				return nil, fmt.Errorf("parsing address %q: %w", field, err)
			}
			if addr.Zone() != "" {
				return nil, fmt.Errorf("parsing address %q: a zone is not allowed", field)
			}
			p = netip.PrefixFrom(addr, addr.BitLen())
		}
		out = append(out, normalizePrefix(p))
	}
	return out, nil
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
