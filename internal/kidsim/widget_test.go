package kidsim

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	. "github.com/onsi/gomega"
)

func TestWidgetURLCarriesTheChallengeAndTheParent(t *testing.T) {
	g := NewWithT(t)
	g.Expect(WidgetURL("http://127.0.0.1:8090", "c-1", "http://127.0.0.1:8092")).
		To(Equal("http://127.0.0.1:8090/widget?challengeId=c-1&parent=http%3A%2F%2F127.0.0.1%3A8092"))
	g.Expect(WidgetURL("http://127.0.0.1:8090", "", "")).To(Equal("http://127.0.0.1:8090/widget"))
}

func TestWidgetPageEmbedsItsConfigAsInertJSON(t *testing.T) {
	g := NewWithT(t)
	f := newTestFake(t, FakeOptions{})
	hostile := `</script><script>alert(1)</script>`
	rec := httptest.NewRecorder()
	f.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, WidgetURL("", hostile, "https://game.example"), nil))

	g.Expect(rec.Code).To(Equal(http.StatusOK))
	g.Expect(rec.Header().Get("Content-Type")).To(Equal("text/html; charset=utf-8"))
	body := rec.Body.String()
	g.Expect(body).NotTo(ContainSubstring(hostile))
	m := regexp.MustCompile(`(?s)<script type="application/json" id="config">(.*?)</script>`).FindStringSubmatch(body)
	g.Expect(m).To(HaveLen(2))
	var cfg WidgetConfig
	g.Expect(json.Unmarshal([]byte(m[1]), &cfg)).To(Succeed())
	g.Expect(cfg).To(Equal(WidgetConfig{ChallengeID: hostile, Parent: "https://game.example"}))
	for _, id := range []string{"post-challenge", "approve", "post-result", "post-verification", "post-verification-error", "post-consent", "post-exit", "post-raw"} {
		g.Expect(body).To(ContainSubstring(`id="`+id+`"`), "the widget has the button %s", id)
	}
}

func TestAdminAPIAnswersAChallengeByID(t *testing.T) {
	g := NewWithT(t)
	f := newTestFake(t, FakeOptions{})
	id := f.StartChallenge()
	session, err := f.ApproveChallenge(id, Approval{})
	g.Expect(err).NotTo(HaveOccurred())

	rec := httptest.NewRecorder()
	f.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/kidsim/challenges/"+id, nil))
	g.Expect(rec.Code).To(Equal(http.StatusOK))
	var c Challenge
	g.Expect(json.Unmarshal(rec.Body.Bytes(), &c)).To(Succeed())
	g.Expect(c.ChallengeID).To(Equal(id))
	g.Expect(c.Status).To(Equal("PASS"))
	g.Expect(c.SessionID).To(Equal(session))

	rec = httptest.NewRecorder()
	f.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/kidsim/challenges/nope", nil))
	g.Expect(rec.Code).To(Equal(http.StatusNotFound))
}
