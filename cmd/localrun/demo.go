package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/kid-operator/kid-operator/cmd/localrun/browserdemo"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/webhookserver/relaytoken"
)

// demoRelaySecret is the Secret of the demo product's relay token key.
const demoRelaySecret = "demo-browser"

// demoTokenTTL is how long a demo page's relay token lives.
const demoTokenTTL = time.Hour

// serveDemo serves the DOM events demo on addr until ctx ends and returns
// the address bound. It plays the game: each page load starts a challenge at
// the fake k-ID (as a game's backend does through /age-gate/check), mints a
// relay token for it with the product's key (as the game's backend does,
// webhookserver/relaytoken), and renders the page, which frames the fake's
// widget for that challenge and imports kid-events.js from the receiver.
func serveDemo(ctx context.Context, addr, receiverURL, fakeURL string, fake *kidsim.Fake, relayKey []byte) (string, error) {
	handler := browserdemo.Handler(browserdemo.Config{
		ReceiverURL:   receiverURL,
		Namespace:     "default",
		Product:       "demo",
		WidgetOrigins: []string{fakeURL},
		Start: func(_ context.Context, r *http.Request) (browserdemo.Player, error) {
			challenge := fake.StartChallenge()
			token, err := relaytoken.Mint(relayKey, "default/demo",
				relaytoken.Subject{Kind: relaytoken.KindChallenge, ID: challenge}, time.Now().Add(demoTokenTTL))
			if err != nil {
				return browserdemo.Player{}, fmt.Errorf("minting the relay token: %w", err)
			}
			return browserdemo.Player{
				ChallengeID: challenge,
				Token:       token,
				WidgetURL:   kidsim.WidgetURL(fakeURL, challenge, "http://"+r.Host),
			}, nil
		},
	})
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		// ctx has ended: the shutdown gets a deadline of its own.
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	return ln.Addr().String(), nil
}

// demoOrigins are the origins the demo product allows: the demo's address,
// and the same port on localhost, where a browser may open it too.
func demoOrigins(addr string) []string {
	origins := []string{"http://" + addr}
	if host, port, err := net.SplitHostPort(addr); err == nil && host == "127.0.0.1" {
		origins = append(origins, "http://localhost:"+port)
	}
	return origins
}
