package webhookserver

import (
	"net/http"

	"github.com/kid-operator/kid-operator/webhookserver/browser"
)

// handleSDK registers GET /sdk/kid-events.js: the ES module with which the
// game's pages listen to k-ID's widget events, relay them to this receiver
// and follow a player's status (webhookserver/browser, README "DOM events").
// It is public, the same for every product, and served on every replica.
func handleSDK(mux *http.ServeMux) {
	mux.Handle("GET "+browser.ModulePath, browser.ModuleHandler())
}
