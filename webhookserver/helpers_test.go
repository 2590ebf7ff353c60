package webhookserver_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/test/testenv"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// do sends a raw request.
func do(method, url, body string, headers map[string]string) *http.Response {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	ExpectWithOffset(2, err).NotTo(HaveOccurred())
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	ExpectWithOffset(2, err).NotTo(HaveOccurred())
	return resp
}

// signed POSTs body to url, signed with the product's secret.
func signed(p *testenv.Product, url, body, timestamp string) *http.Response {
	return do(http.MethodPost, url, body, map[string]string{
		kid.HeaderTimestamp: timestamp,
		kid.HeaderSignature: kid.Sign([]byte(p.Secret), timestamp, []byte(body)),
	})
}

// readyProduct makes a namespace on the harness and a Ready product "demo"
// in it.
func readyProduct(on *testenv.Harness) (string, *testenv.Product) {
	GinkgoHelper()
	p, err := on.NewReadyProduct(ctx, "demo", nil)
	Expect(err).NotTo(HaveOccurred())
	return p.Namespace, p
}
