// Package browser is what the receiver serves to the game's own pages: the ES
// module kid-events.js, which listens to k-ID's widget (DOM) events,
// dispatches them as typed DOM events, relays them to the receiver and
// follows the player's status stream. Its contract is documented in the
// module itself and in the README ("DOM events").
package browser

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"
)

// ModulePath is where the receiver serves the module.
const ModulePath = "/sdk/kid-events.js"

// ModuleMaxAge is how long browsers and CDNs may use the module without
// asking again. A new version (a new operator release) therefore reaches a
// page within ModuleMaxAge: the browser then revalidates with If-None-Match,
// the ETag (a digest of the content) no longer matches, and it gets the new
// module; until then an unchanged module costs a 304 and no body. A page
// that must have a new version at once can import the URL with any query
// string (`/sdk/kid-events.js?v=2`), which the receiver ignores and caches
// key on.
const ModuleMaxAge = 24 * time.Hour

//go:embed kid-events.js
var module []byte

// moduleETag is a strong ETag: the first 128 bits of the SHA-256 of the
// content, so it changes exactly when the module does.
var moduleETag = func() string {
	sum := sha256.Sum256(module)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}()

// Module returns the module's source.
func Module() []byte { return bytes.Clone(module) }

// ModuleETag returns the ETag the module is served with.
func ModuleETag() string { return moduleETag }

// ModuleHandler serves the module (GET and HEAD) as text/javascript, with
// its ETag (304 to a matching If-None-Match), Cache-Control
// max-age=ModuleMaxAge, and Access-Control-Allow-Origin: *: the module is
// public, and a page of any origin imports it, which for a module script is
// a CORS request.
func ModuleHandler() http.Handler {
	cacheControl := "public, max-age=" + strconv.Itoa(int(ModuleMaxAge/time.Second))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/javascript; charset=utf-8")
		h.Set("ETag", moduleETag)
		h.Set("Cache-Control", cacheControl)
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("X-Content-Type-Options", "nosniff")
		// ServeContent answers If-None-Match with 304 (and HEAD and
		// ranges); the zero time sends no Last-Modified, so the ETag alone
		// decides.
		http.ServeContent(w, r, "kid-events.js", time.Time{}, bytes.NewReader(module))
	})
}
