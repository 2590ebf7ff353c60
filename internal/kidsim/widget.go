package kidsim

import (
	_ "embed"
	"html/template"
	"net/http"
	"net/url"
)

// WidgetPath is where the fake serves its widget.
const WidgetPath = "/widget"

//go:embed widget.html
var widgetHTML string

var widgetTemplate = template.Must(template.New("widget").Parse(widgetHTML))

// WidgetConfig is what the widget page reads from its URL.
type WidgetConfig struct {
	// ChallengeID is the challenge the age gate buttons name.
	ChallengeID string `json:"challengeId,omitempty"`
	// Parent is the target origin of postMessage; "" means "*", as a widget
	// that does not know its embedder must post.
	Parent string `json:"parent,omitempty"`
}

// WidgetURL returns the URL of the widget of a fake served at base
// (http://host:port) for a challenge, posting to parent ("" for any).
func WidgetURL(base, challengeID, parent string) string {
	q := url.Values{}
	if challengeID != "" {
		q.Set("challengeId", challengeID)
	}
	if parent != "" {
		q.Set("parent", parent)
	}
	u := base + WidgetPath
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// serveWidget serves a stand-in for k-ID's widget, to be framed by a game's
// page on another origin: its buttons post the DOM messages of k-ID's events
// spec §3.3 to the parent window, exactly as k-ID shapes them (the envelope
// {eventType, data}, the flat Verification.Error, a bare Widget.ExitReview),
// any message typed into it, and, as the parent would elsewhere, approve the
// challenge at this fake (which delivers the webhook). It reads the
// challenge's session and runs verifications through the admin API, on its
// own origin.
//
//	GET /widget?challengeId=ID&parent=https://game.example
func (f *Fake) serveWidget(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cfg := WidgetConfig{ChallengeID: q.Get("challengeId"), Parent: q.Get("parent")}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := widgetTemplate.Execute(w, cfg); err != nil {
		http.Error(w, "rendering the widget", http.StatusInternalServerError)
	}
}
