package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/kid-operator/kid-operator/webhookserver/relaytoken"
)

func TestRelayTokenPrintsATokenTheReceiverVerifies(t *testing.T) {
	for _, tc := range []struct {
		flag string
		kind string
	}{
		{"--challenge", relaytoken.KindChallenge},
		{"--verification", relaytoken.KindVerification},
		{"--session", relaytoken.KindSession},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			g := NewWithT(t)
			var out bytes.Buffer
			err := run(t.Context(), []string{"relay-token", "--secret", "k", "--product", "games/demo", tc.flag, "id-1", "--ttl", "30m"}, &out)
			g.Expect(err).NotTo(HaveOccurred())
			tok := strings.TrimSuffix(out.String(), "\n")
			c, err := relaytoken.VerifyClaims([][]byte{[]byte("k")}, tok, "games/demo", time.Now())
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(c.Subject).To(Equal(relaytoken.Subject{Kind: tc.kind, ID: "id-1"}))
			g.Expect(c.Expires).To(BeTemporally("~", time.Now().Add(30*time.Minute), 2*time.Second))
		})
	}
}

func TestRelayTokenRefuses(t *testing.T) {
	t.Setenv("KID_RELAY_SECRET", "")
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no secret":                   {[]string{"--product", "games/demo", "--session", "s"}, "--secret"},
		"no product":                  {[]string{"--secret", "k", "--session", "s"}, "--product"},
		"a product without namespace": {[]string{"--secret", "k", "--product", "demo", "--session", "s"}, "namespace/name"},
		"no subject":                  {[]string{"--secret", "k", "--product", "games/demo"}, "exactly one"},
		"two subjects":                {[]string{"--secret", "k", "--product", "games/demo", "--session", "s", "--challenge", "c"}, "exactly one"},
		"a ttl over 24h":              {[]string{"--secret", "k", "--product", "games/demo", "--session", "s", "--ttl", "25h"}, "at most 24h"},
		"a negative ttl":              {[]string{"--secret", "k", "--product", "games/demo", "--session", "s", "--ttl", "-1m"}, "more than 0"},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			var out bytes.Buffer
			err := run(t.Context(), append([]string{"relay-token"}, tc.args...), &out)
			g.Expect(err).To(MatchError(ContainSubstring(tc.want)))
		})
	}
}
