package operator

import (
	"testing"

	. "github.com/onsi/gomega"
)

func TestMetricsAreAuthenticatedHTTPSUnlessOnLoopback(t *testing.T) {
	cases := []struct {
		addr   string
		secure bool
	}{
		{addr: "0", secure: false},
		{addr: "127.0.0.1:8443", secure: false},
		{addr: "[::1]:8443", secure: false},
		{addr: "localhost:8443", secure: false},
		{addr: ":8443", secure: true},
		{addr: "0.0.0.0:8443", secure: true},
		{addr: "10.1.2.3:8443", secure: true},
		{addr: "[::]:8443", secure: true},
		{addr: "metrics.example:8443", secure: true},
	}
	for _, tc := range cases {
		t.Run(tc.addr, func(t *testing.T) {
			g := NewWithT(t)
			m := metricsOptions(Options{MetricsAddr: tc.addr})
			g.Expect(m.BindAddress).To(Equal(tc.addr))
			g.Expect(m.SecureServing).To(Equal(tc.secure))
			g.Expect(m.FilterProvider != nil).To(Equal(tc.secure), "authentication and authorisation go with HTTPS")
		})
	}
}

func TestWatchNamespacesAreTrimmedAndChecked(t *testing.T) {
	g := NewWithT(t)
	got, err := watchNamespaces([]string{" games", "arcade ", "", "games"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(Equal([]string{"games", "arcade"}))
	got, err = watchNamespaces([]string{""})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(BeEmpty())
	_, err = watchNamespaces([]string{"Games/x"})
	g.Expect(err).To(HaveOccurred())
}
