package main

import (
	"os"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/promqltest"
	"go.yaml.in/yaml/v3"
)

// rulesFile is the PrometheusRule these tests evaluate.
const rulesFile = "../../config/prometheus/kid-operator-rules.yaml"

// alertExprs reads each alert's expression from the rules file, on one
// line (the test language takes an expression on the eval line).
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var pr promRule
	if err := yaml.Unmarshal(data, &pr); err != nil {
		t.Fatal(err)
	}
	var spec ruleSpec
	if err := pr.Spec.Decode(&spec); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, g := range spec.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out[r.Alert] = strings.Join(strings.Fields(r.Expr.Value), " ")
			}
		}
	}
	return out
}

// TestAlertsFireWhenTheyShould evaluates each alert's expression on
// series shaped like the operator's, with Prometheus's engine and its test
// language (promql/promqltest): "ALERT" in a script stands for the
// expression, wrapped in group by (...) so that an eval names who fires
// (value 1) or expects nothing. The "for:" of each rule is then Prometheus's
// business: what is shown here is when the condition holds. Points are a
// minute apart, and time() at "eval instant at 12m" is 720.
func TestAlertsFireWhenTheyShould(t *testing.T) {
	exprs := alertExprs(t)
	cases := map[string]struct {
		alert, by, script string
	}{
		"deliveries stopped: steady traffic that stops fires after 30 silent minutes, also when the receivers' series vanish": {
			alert: "KidWebhookDeliveriesStopped", by: "product",
			script: `
load 1m
  kid_webhook_requests_total{product="games/steady",code="200",pod="r1"} 0+1x180 180x60
  kid_webhook_requests_total{product="games/gone",code="200",pod="r1"} 0+1x180 stale

eval instant at 170m ALERT

eval instant at 200m ALERT

eval instant at 215m ALERT
  {product="games/steady"} 1
  {product="games/gone"} 1
`,
		},
		"deliveries stopped: a burst and then silence does not fire, nor does a quiet product": {
			alert: "KidWebhookDeliveriesStopped", by: "product",
			script: `
load 1m
  kid_webhook_requests_total{product="games/burst",code="200",pod="r1"} 0x60 0+10x10 100x170
  kid_webhook_requests_total{product="games/quiet",code="200",pod="r1"} 0+0.1x240

eval instant at 120m ALERT

eval instant at 150m ALERT

eval instant at 240m ALERT
`,
		},
		"deliveries stopped: a receiver pod replaced mid-stream is no silence": {
			alert: "KidWebhookDeliveriesStopped", by: "product",
			script: `
load 1m
  kid_webhook_requests_total{product="games/a",code="200",pod="r1"} 0+1x150 stale
  kid_webhook_requests_total{product="games/a",code="200",pod="r2"} _x151 1+1x60

eval instant at 200m ALERT
`,
		},
		"signature failures: a fifth of the deliveries refused fires; one stray request to a quiet product does not": {
			alert: "KidWebhookSignatureFailures", by: "product",
			script: `
load 1m
  kid_webhook_requests_total{product="games/a",code="200"} 0+8x30
  kid_webhook_requests_total{product="games/a",code="401"} 0+2x30
  kid_webhook_signature_failures_total{product="games/a",reason="mismatch"} 0+2x30
  kid_webhook_requests_total{product="games/quiet",code="200"} 0x30
  kid_webhook_requests_total{product="games/quiet",code="401"} 0x10 1x20
  kid_webhook_signature_failures_total{product="games/quiet",reason="malformed"} 0x10 1x20

eval instant at 20m ALERT
  {product="games/a"} 1
`,
		},
		"503s: a tenth of the deliveries fires, one in two hundred does not": {
			alert: "KidWebhookUnavailable", by: "product",
			script: `
load 1m
  kid_webhook_requests_total{product="games/down",code="200"} 0+9x30
  kid_webhook_requests_total{product="games/down",code="503"} 0+1x30
  kid_webhook_requests_total{product="games/fine",code="200"} 0+199x30
  kid_webhook_requests_total{product="games/fine",code="503"} 0+1x30

eval instant at 20m ALERT
  {product="games/down"} 1
`,
		},
		"spool not draining: fires once a pod's oldest spooled delivery is over 10 minutes old, never for 0 (an empty spool)": {
			alert: "KidWebhookSpoolNotDraining", by: "",
			script: `
load 1m
  kid_webhook_spool_oldest_entry_timestamp_seconds{pod="r1"} 0x4 60x30
  kid_webhook_spool_oldest_entry_timestamp_seconds{pod="r2"} 0x30

eval instant at 10m ALERT

eval instant at 12m ALERT
  {} 1
`,
		},
		"spool drained: an empty spool on every pod does not fire": {
			alert: "KidWebhookSpoolNotDraining", by: "",
			script: `
load 1m
  kid_webhook_spool_oldest_entry_timestamp_seconds{pod="r1"} 0x4 60x10 0x20

eval instant at 20m ALERT
`,
		},
		"stuck pending: fires once the oldest Pending event is over 10 minutes old, never for 0 (none Pending)": {
			alert: "KidEventsStuckPending", by: "product",
			script: `
load 1m
  kid_events_oldest_pending_timestamp_seconds{product="games/stuck"} 0x4 60x30
  kid_events_oldest_pending_timestamp_seconds{product="games/idle"} 0x30

eval instant at 10m ALERT

eval instant at 12m ALERT
  {product="games/stuck"} 1
`,
		},
		"actions failing: one failure fires for the next 15 minutes; retries alone do not": {
			alert: "KidActionsFailing", by: "action",
			script: `
load 1m
  kid_action_attempts_total{action="games/backend",result="failure"} 0x10 1x50
  kid_action_attempts_total{action="games/flaky",result="retry"} 0+3x60

eval instant at 15m ALERT
  {action="games/backend"} 1

eval instant at 40m ALERT
`,
		},
		"no leader: fires when every replica reports 0, and when none reports at all": {
			alert: "KidOperatorNoLeader", by: "",
			script: `
load 1m
  leader_election_master_status{name="kid-operator.kid.dev",pod="m1"} 1x10 0x10 stale
  leader_election_master_status{name="kid-operator.kid.dev",pod="m2"} 0x10 0x10 stale

eval instant at 5m ALERT

eval instant at 15m ALERT
  {} 1

eval instant at 40m ALERT
  {} 1
`,
		},
		"k-ID's 429s: five in 15 minutes fire": {
			alert: "KidAPIThrottledByKid", by: "product",
			script: `
load 1m
  kid_api_requests_total{product="games/a",endpoint="session/get",code="429"} 0+1x30
  kid_api_requests_total{product="games/b",endpoint="session/get",code="429"} 0x10 1x20

eval instant at 20m ALERT
  {product="games/a"} 1
`,
		},
		"own rate limit: fires when more calls wait than go": {
			alert: "KidAPIClientRateLimited", by: "product",
			script: `
load 1m
  kid_api_requests_total{product="games/a",endpoint="challenge/get-status",code="200"} 0+60x60
  kid_api_ratelimited_total{product="games/a"} 0+90x60
  kid_api_requests_total{product="games/b",endpoint="challenge/get-status",code="200"} 0+60x60
  kid_api_ratelimited_total{product="games/b"} 0+6x60

eval instant at 30m ALERT
  {product="games/a"} 1
`,
		},
		"API errors: a product whose calls mostly fail or get no answer fires": {
			alert: "KidAPIErrors", by: "product",
			script: `
load 1m
  kid_api_requests_total{product="games/a",endpoint="session/get",code="error"} 0+5x30
  kid_api_requests_total{product="games/a",endpoint="session/get",code="200"} 0+5x30
  kid_api_requests_total{product="games/b",endpoint="session/get",code="502"} 0+1x30
  kid_api_requests_total{product="games/b",endpoint="session/get",code="200"} 0+20x30

eval instant at 20m ALERT
  {product="games/a"} 1
`,
		},
	}
	tested := map[string]bool{}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			expr, ok := exprs[tc.alert]
			if !ok {
				t.Fatalf("no alert %s in %s", tc.alert, rulesFile)
			}
			tested[tc.alert] = true
			wrapped := "group by (" + tc.by + ") (" + expr + ")"
			if tc.by == "" {
				wrapped = "group (" + expr + ")"
			}
			script := strings.ReplaceAll(tc.script, "ALERT", wrapped)
			promqltest.RunTest(t, script, promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery))
		})
	}
	for alert := range exprs {
		if !tested[alert] {
			t.Errorf("alert %s has no case here", alert)
		}
	}
}
