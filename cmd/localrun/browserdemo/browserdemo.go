// Package browserdemo is the page of a game that embeds k-ID's widget and
// uses the receiver's kid-events.js: the demo of `make run` and the page the
// browser tests drive. It is never part of the operator: `make run` serves
// it on a local origin of its own, as a game serves its pages apart from the
// receiver, and the tests serve it from httptest servers.
//
// Each load of the page is one player: the game's backend (Config.Start)
// starts a challenge at k-ID and mints a relay token for it; the page frames
// the widget for that challenge, listens to its DOM events with the module,
// relays them to the receiver with the token, and shows the player's live
// status from the receiver's status stream.
package browserdemo

import (
	"context"
	_ "embed"
	"html/template"
	"net/http"
	"strings"

	"github.com/kid-operator/kid-operator/webhookserver/browser"
)

//go:embed page.html
var pageHTML string

var pageTemplate = template.Must(template.New("page").Parse(pageHTML))

// Player is the flow one page load follows.
type Player struct {
	// ChallengeID is the challenge the game started at k-ID.
	ChallengeID string
	// Token is the relay token minted for it (webhookserver/relaytoken);
	// "" means the page neither relays nor follows the status.
	Token string
	// WidgetURL is the iframe's: the fake k-ID's widget for the challenge.
	WidgetURL string
}

// Config configures the page.
type Config struct {
	// ReceiverURL is the receiver's base URL (http://127.0.0.1:8080): the
	// page imports the module from it, relays to it and reads the status
	// stream from it.
	ReceiverURL string
	// Namespace and Product name the KidProduct, whose spec.browser must
	// allow the page's origin.
	Namespace, Product string
	// WidgetOrigins are the origins the module accepts messages from
	// besides k-ID's own: the fake k-ID's.
	WidgetOrigins []string
	// Start is the game's backend for one page load.
	Start func(ctx context.Context, r *http.Request) (Player, error)
}

// pageConfig is what the page's script reads.
type pageConfig struct {
	ModuleURL     string   `json:"moduleURL"`
	ReceiverURL   string   `json:"receiverURL"`
	RelayURL      string   `json:"relayURL"`
	StatusURL     string   `json:"statusURL"`
	Namespace     string   `json:"namespace"`
	Product       string   `json:"product"`
	WidgetURL     string   `json:"widgetURL"`
	WidgetOrigins []string `json:"widgetOrigins"`
	ChallengeID   string   `json:"challengeId"`
	Token         string   `json:"token"`
}

// RelayURL is where the module relays a product's events.
func RelayURL(receiverURL, namespace, product string) string {
	return strings.TrimSuffix(receiverURL, "/") + "/browser/" + namespace + "/" + product
}

// StatusURL is the product's status stream.
func StatusURL(receiverURL, namespace, product string) string {
	return RelayURL(receiverURL, namespace, product) + "/status"
}

// Handler serves the page at GET /.
func Handler(cfg Config) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		player, err := cfg.Start(r.Context(), r)
		if err != nil {
			http.Error(w, "starting the player's flow: "+err.Error(), http.StatusBadGateway)
			return
		}
		origins := cfg.WidgetOrigins
		if origins == nil {
			origins = []string{}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = pageTemplate.Execute(w, pageConfig{
			ModuleURL:     strings.TrimSuffix(cfg.ReceiverURL, "/") + browser.ModulePath,
			ReceiverURL:   cfg.ReceiverURL,
			RelayURL:      RelayURL(cfg.ReceiverURL, cfg.Namespace, cfg.Product),
			StatusURL:     StatusURL(cfg.ReceiverURL, cfg.Namespace, cfg.Product),
			Namespace:     cfg.Namespace,
			Product:       cfg.Product,
			WidgetURL:     player.WidgetURL,
			WidgetOrigins: origins,
			ChallengeID:   player.ChallengeID,
			Token:         player.Token,
		})
	})
	return mux
}
