package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/kid-operator/kid-operator/internal/kidsim"
)

type serveOptions struct {
	listen, apiKey, webhookURL, secret string
	productID                          int64
	propagation                        time.Duration
	propagationStatus                  int
	windowLimit                        int
	maxRecords                         int
}

func newServeCommand() *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a stateful fake k-ID",
		Long: `serve runs a stateful fake k-ID until interrupted: its REST API (/api/v1/),
an admin API (/kidsim/) that the control commands call, webhook deliveries
of every state change on k-ID's retry schedule, and a stand-in for k-ID's
widget (/widget?challengeId=ID) that posts k-ID's DOM events to the page
that frames it. It logs each API call and each delivery attempt on a line.`,
		GroupID: groupFake,
		Args:    wantArgs(),
		RunE:    func(cmd *cobra.Command, _ []string) error { return o.run(cmd.Context(), cmd.OutOrStdout()) },
	}
	fl := cmd.Flags()
	fl.StringVar(&o.listen, "listen", "127.0.0.1:8090", "address to listen on (port 0 picks a free one)")
	secretFlag(cmd, &o.apiKey, "api-key", "KID_API_KEY", "the Bearer key the REST API accepts")
	fl.StringVar(&o.webhookURL, "webhook-url", "", "where state changes are delivered, for example http://127.0.0.1:8080/webhooks/default/demo (empty: nowhere)")
	secretFlag(cmd, &o.secret, "secret", "KID_WEBHOOK_SECRET", "the webhook secret that signs deliveries")
	fl.Int64Var(&o.productID, "product-id", 0, "data.productId of the events that carry one")
	fl.DurationVar(&o.propagation, "propagation-delay", 1500*time.Millisecond,
		"how long /session/get answers 404 for a session an approval just created, as k-ID does")
	fl.IntVar(&o.propagationStatus, "propagation-status", 404,
		"how the propagation delay answers: 404 (k-ID's vendor guidance) or 400 NOT_FOUND (its docs)")
	fl.IntVar(&o.windowLimit, "window-limit", kidsim.TestRateLimit,
		"API calls a second per key, counted in whole seconds as k-ID does; over it 429 (default k-ID's test limit; 0: off)")
	fl.IntVar(&o.maxRecords, "max-records", 10000,
		"the API calls and delivery attempts the admin API keeps (the last ones; X-Total-Count counts all), so a fake that runs for days stays bounded")
	return cmd
}

// run serves the stateful fake k-ID until ctx ends, logging each API call
// and each delivery attempt on one line.
func (o *serveOptions) run(ctx context.Context, out io.Writer) error {
	if o.apiKey == "" {
		return errors.New("--api-key (or KID_API_KEY) is required: the fake refuses every call without one, as k-ID does")
	}
	if o.webhookURL != "" && o.secret == "" {
		return errors.New("--secret (or KID_WEBHOOK_SECRET) is required with --webhook-url")
	}

	if o.maxRecords < 1 {
		return errors.New("--max-records must be at least 1: a long-running fake keeps a bounded log")
	}

	log := &lineLog{out: out}
	f := kidsim.NewFake(kidsim.FakeOptions{
		MaxRecords:       o.maxRecords,
		APIKey:           o.apiKey,
		ProductID:        o.productID,
		WebhookURL:       o.webhookURL,
		WebhookSecret:    []byte(o.secret),
		PropagationDelay: o.propagation,
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
	if err := f.SetPropagationStatus(o.propagationStatus); err != nil {
		return fmt.Errorf("--propagation-status: %w", err)
	}
	if err := f.SetWindowLimit(o.windowLimit); err != nil {
		return fmt.Errorf("--window-limit: %w", err)
	}
	addr, err := f.ListenAndServe(ctx, o.listen)
	if err != nil {
		return err
	}
	target := o.webhookURL
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
