package browserdemo

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	. "github.com/onsi/gomega"
)

func TestPageCarriesItsPlayerAndTheReceiversURLsAsInertJSON(t *testing.T) {
	g := NewWithT(t)
	hostile := `</script><script>alert(1)</script>`
	handler := Handler(Config{
		ReceiverURL:   "http://127.0.0.1:8080/",
		Namespace:     "games",
		Product:       "demo",
		WidgetOrigins: []string{"http://127.0.0.1:8090"},
		Start: func(context.Context, *http.Request) (Player, error) {
			return Player{ChallengeID: hostile, Token: "v1.a.b", WidgetURL: "http://127.0.0.1:8090/widget?challengeId=c"}, nil
		},
	})
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))

	g.Expect(rec.Code).To(Equal(http.StatusOK))
	g.Expect(rec.Header().Get("Cache-Control")).To(Equal("no-store"), "each load is a new player")
	g.Expect(rec.Body.String()).NotTo(ContainSubstring(hostile))
	m := regexp.MustCompile(`(?s)<script type="application/json" id="config">(.*?)</script>`).FindStringSubmatch(rec.Body.String())
	g.Expect(m).To(HaveLen(2))
	var cfg pageConfig
	g.Expect(json.Unmarshal([]byte(m[1]), &cfg)).To(Succeed())
	g.Expect(cfg).To(Equal(pageConfig{
		ModuleURL:     "http://127.0.0.1:8080/sdk/kid-events.js",
		ReceiverURL:   "http://127.0.0.1:8080/",
		RelayURL:      "http://127.0.0.1:8080/browser/games/demo",
		StatusURL:     "http://127.0.0.1:8080/browser/games/demo/status",
		Namespace:     "games",
		Product:       "demo",
		WidgetURL:     "http://127.0.0.1:8090/widget?challengeId=c",
		WidgetOrigins: []string{"http://127.0.0.1:8090"},
		ChallengeID:   hostile,
		Token:         "v1.a.b",
	}))
}

func TestPageAnswers502WhenTheGamesBackendFails(t *testing.T) {
	g := NewWithT(t)
	handler := Handler(Config{Start: func(context.Context, *http.Request) (Player, error) {
		return Player{}, errors.New("k-ID is down")
	}})
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	g.Expect(rec.Code).To(Equal(http.StatusBadGateway))

	rec = httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/elsewhere", nil))
	g.Expect(rec.Code).To(Equal(http.StatusNotFound))
}
