package outbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"syscall"
)

// Scrub returns a short message for err that is safe to put in a status field
// or an Event: it never holds the target's address, port or host name (the
// text of the errors it classifies does, and a tenant could use it to map the
// cluster's network), nor anything else taken from the error's text. An error
// it does not recognise is "request failed"; nil is "".
func Scrub(err error) string {
	if err == nil {
		return ""
	}
	var (
		dnsErr   *net.DNSError
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		alert    tls.AlertError
		record   tls.RecordHeaderError
		netErr   net.Error
	)
	switch {
	case errors.Is(err, ErrAddressRefused):
		return "address refused by the outbound guard"
	case errors.Is(err, ErrRedirectRefused):
		return "redirect refused"
	case errors.Is(err, ErrBodyTooLarge):
		return "response too large"
	case errors.As(err, &dnsErr):
		return "DNS lookup failed"
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid):
		return "TLS certificate verification failed"
	case errors.As(err, &alert), errors.As(err, &record):
		return "TLS handshake failed"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host unreachable"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before an answer"
	default:
		return "request failed"
	}
}
