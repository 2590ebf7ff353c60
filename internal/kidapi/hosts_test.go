package kidapi

import (
	"testing"

	. "github.com/onsi/gomega"
)

func TestAllowedHostsRefuseWhatIsNotKIDs(t *testing.T) {
	allowed, err := ParseAllowedHosts([]string{"kid-proxy.example.com", "10.20.0.0/16", "127.0.0.1@games", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		hosts   *AllowedHosts
		ns, url string
		allowed bool
	}{
		{"k-ID's live host is allowed by default", nil, "a", LiveBaseURL, true},
		{"k-ID's test host is allowed by default, in any case and on any port", nil, "a", "https://GAME-API.test.k-id.com:443/api/v1", true},
		{"any other public host is refused by default", nil, "a", "https://attacker.example.com/api/v1", false},
		{"a look-alike host is refused", nil, "a", "https://game-api.k-id.com.attacker.example.com/api/v1", false},
		{"k-ID's host as user information is refused", nil, "a", "https://game-api.k-id.com@attacker.example.com/api/v1", false},
		{"user information on k-ID's host is refused", nil, "a", "https://user:pw@game-api.k-id.com/api/v1", false},
		{"loopback is refused by default", nil, "a", "http://127.0.0.1:8080/api/v1", false},
		{"a URL with no host is refused", nil, "a", "https:///api/v1", false},
		{"an added host is allowed", allowed, "a", "https://kid-proxy.example.com/api/v1", true},
		{"an added range allows its addresses", allowed, "a", "https://10.20.3.4/api/v1", true},
		{"an added range allows no other address", allowed, "a", "https://10.21.3.4/api/v1", false},
		{"an added IPv6 address is allowed", allowed, "a", "http://[::1]:9000/api/v1", true},
		{"an entry scoped to a namespace allows it there", allowed, "games", "http://127.0.0.1:9000/api/v1", true},
		{"an entry scoped to a namespace allows it nowhere else", allowed, "other", "http://127.0.0.1:9000/api/v1", false},
		{"k-ID's hosts stay allowed beside added ones", allowed, "other", TestBaseURL, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.hosts.Check(tc.ns, tc.url)
			if tc.allowed {
				NewWithT(t).Expect(err).NotTo(HaveOccurred())
			} else {
				NewWithT(t).Expect(err).To(HaveOccurred())
			}
		})
	}
}

func TestAllowedHostsParse(t *testing.T) {
	for _, bad := range []string{"@games", "host@Not_A_Namespace", "10.0.0.0/33", "not a host"} {
		if _, err := ParseAllowedHosts([]string{bad}); err == nil {
			t.Errorf("%q: parsed, want an error", bad)
		}
	}
	if _, err := ParseAllowedHosts([]string{"", " example.com ", "127.0.0.0/8@kid-1"}); err != nil {
		t.Errorf("valid entries: %v", err)
	}
}
