package webhookserver

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/kid-operator/kid-operator/webhookserver/browser"
)

func TestSDKModuleIsServedCacheableAndCrossOrigin(t *testing.T) {
	srv, err := New(nil, nil, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	handler := srv.Handler()
	etag := browser.ModuleETag()
	cases := []struct {
		name        string
		method      string
		ifNoneMatch string
		wantStatus  int
		wantBody    bool
	}{
		{name: "a GET gets the module", method: http.MethodGet, wantStatus: http.StatusOK, wantBody: true},
		{name: "a HEAD gets the headers and no body", method: http.MethodHead, wantStatus: http.StatusOK},
		{name: "a GET with the current ETag gets 304 and no body", method: http.MethodGet, ifNoneMatch: etag, wantStatus: http.StatusNotModified},
		{name: "a GET with the current ETag among others gets 304", method: http.MethodGet, ifNoneMatch: `"old", ` + etag, wantStatus: http.StatusNotModified},
		{name: "a GET with an older version's ETag gets the module", method: http.MethodGet, ifNoneMatch: `"0123456789abcdef0123456789abcdef"`, wantStatus: http.StatusOK, wantBody: true},
		{name: "a POST is refused", method: http.MethodPost, wantStatus: http.StatusMethodNotAllowed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			req := httptest.NewRequest(tc.method, "http://receiver.example/sdk/kid-events.js", nil)
			req.Header.Set("Origin", "https://play.example.com")
			if tc.ifNoneMatch != "" {
				req.Header.Set("If-None-Match", tc.ifNoneMatch)
			}
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req)
			resp := rec.Result()
			body, err := io.ReadAll(resp.Body)
			g.Expect(err).NotTo(HaveOccurred())

			g.Expect(resp.StatusCode).To(Equal(tc.wantStatus))
			if tc.wantStatus == http.StatusMethodNotAllowed {
				return
			}
			g.Expect(resp.Header.Get("ETag")).To(Equal(etag))
			g.Expect(resp.Header.Get("Cache-Control")).To(Equal("public, max-age=86400"))
			g.Expect(resp.Header.Get("Access-Control-Allow-Origin")).To(Equal("*"))
			if tc.wantBody {
				g.Expect(resp.Header.Get("Content-Type")).To(Equal("text/javascript; charset=utf-8"))
				g.Expect(resp.Header.Get("X-Content-Type-Options")).To(Equal("nosniff"))
				g.Expect(body).To(Equal(browser.Module()))
			} else {
				g.Expect(body).To(BeEmpty())
			}
		})
	}
}

func TestSDKModuleETagIsADigestOfTheContent(t *testing.T) {
	g := NewWithT(t)
	g.Expect(browser.ModuleETag()).To(MatchRegexp(`^"[0-9a-f]{32}"$`))
	g.Expect(browser.Module()).To(ContainSubstring("export function listen("))
	g.Expect(browser.Module()).To(ContainSubstring("export function watchStatus("))
}
