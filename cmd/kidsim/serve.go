package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// serve runs the stateful fake k-ID until ctx ends, logging each API call
// and each delivery attempt on one line.
func serve(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8090", "address to listen on (port 0 picks a free one)")
	apiKey := fs.String("api-key", os.Getenv("KID_API_KEY"), "the Bearer key the REST API accepts (default $KID_API_KEY)")
	webhookURL := fs.String("webhook-url", "", "where state changes are delivered, for example http://127.0.0.1:8080/webhooks/default/demo (empty: nowhere)")
	secret := fs.String("secret", os.Getenv("KID_WEBHOOK_SECRET"), "the webhook secret that signs deliveries (default $KID_WEBHOOK_SECRET)")
	productID := fs.Int64("product-id", 0, "data.productId of the events that carry one")
	propagation := fs.Duration("propagation-delay", 1500*time.Millisecond,
		"how long /session/get answers 404 for a session an approval just created, as k-ID does")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", fs.Args())
	}
	if *apiKey == "" {
		return errors.New("--api-key (or KID_API_KEY) is required: the fake refuses every call without one, as k-ID does")
	}
	if *webhookURL != "" && *secret == "" {
		return errors.New("--secret (or KID_WEBHOOK_SECRET) is required with --webhook-url")
	}

	log := &lineLog{out: out}
	f := kidsim.NewFake(kidsim.FakeOptions{
		APIKey:           *apiKey,
		ProductID:        *productID,
		WebhookURL:       *webhookURL,
		WebhookSecret:    []byte(*secret),
		PropagationDelay: *propagation,
		OnAPIRequest: func(r kidsim.APIRequest) {
			log.printf("api %s /api/v1/%s%s -> %d", r.Method, r.Endpoint, query(r.Query), r.Status)
		},
		OnDelivery: func(d kidsim.DeliveryRecord) {
			result := fmt.Sprint(d.Status)
			if d.Err != "" {
				result = "error: " + d.Err
			}
			if d.Fault != kidsim.FaultNone {
				result += " (fault " + string(d.Fault) + ")"
			}
			log.printf("delivery #%d %s attempt %d -> %s", d.Event, d.EventType, d.Attempt, result)
		},
	})
	defer f.Close()
	addr, err := f.ListenAndServe(ctx, *listen)
	if err != nil {
		return err
	}
	target := *webhookURL
	if target == "" {
		target = "nowhere (no --webhook-url)"
	}
	log.printf("kidsim serve listening on http://%s (API http://%s/api/v1/, admin http://%s/kidsim/, widget http://%s%s?challengeId=ID); deliveries to %s",
		addr, addr, addr, addr, kidsim.WidgetPath, target)
	<-ctx.Done()
	log.printf("kidsim serve stopping")
	return nil
}

// query renders a call's query for the log, without the kuid: it is
// personal data, and logs keep none even of a simulator's made-up users.
func query(q url.Values) string {
	if len(q) == 0 {
		return ""
	}
	if q.Has("kuid") {
		q = maps.Clone(q)
		q.Set("kuid", "REDACTED")
	}
	return "?" + q.Encode()
}

// lineLog writes whole lines from the API's and the deliveries' goroutines
// without interleaving them.
type lineLog struct {
	mu  sync.Mutex
	out io.Writer
}

func (l *lineLog) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.out, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}
