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
		"failed runs waiting: fire while the gauge is above 0, however long ago they failed, and stop once redriven": {
			alert: "KidFailedRunsWaiting", by: "cluster, namespace, name",
			script: `
load 1m
  kid_product_failed_runs{cluster="c1",namespace="games",name="backend",pod="m1"} 0x10 2x110 0x10
  kid_product_failed_runs{cluster="c1",namespace="games",name="fine",pod="m1"} 0x130

eval instant at 5m ALERT

eval instant at 15m ALERT
  {cluster="c1",namespace="games",name="backend"} 1

eval instant at 115m ALERT
  {cluster="c1",namespace="games",name="backend"} 1

eval instant at 125m ALERT
`,
		},
		"product not Ready: fires for the product whose gauge is 0, by its namespace and name": {
			alert: "KidProductNotReady", by: "cluster, namespace, name",
			script: `
load 1m
  kid_product_ready{cluster="c1",namespace="games",name="broken",pod="m1"} 1x5 0x20
  kid_product_ready{cluster="c1",namespace="games",name="fine",pod="m1"} 1x25
  kid_product_ready{cluster="c2",namespace="games",name="broken",pod="m1"} 1x25

eval instant at 3m ALERT

eval instant at 10m ALERT
  {cluster="c1",namespace="games",name="broken"} 1
`,
		},
		"no leader: fires when every replica reports 0, and when the managers' series vanish": {
			alert: "KidOperatorNoLeader", by: "cluster, namespace",
			script: `
load 1m
  leader_election_master_status{cluster="c1",namespace="kid-system",name="kid-operator.kid.dev",pod="m1"} 1x10 0x10 stale
  leader_election_master_status{cluster="c1",namespace="kid-system",name="kid-operator.kid.dev",pod="m2"} 0x10 0x10 stale
  leader_election_master_status{cluster="c2",namespace="kid-system",name="kid-operator.kid.dev",pod="m1"} 1x100

eval instant at 5m ALERT

eval instant at 15m ALERT
  {cluster="c1",namespace="kid-system"} 1

eval instant at 40m ALERT
  {cluster="c1",namespace="kid-system"} 1
`,
		},
		"no leader: quiet when leader election is off (no series, ever), and an hour after the managers went": {
			alert: "KidOperatorNoLeader", by: "cluster, namespace",
			script: `
load 1m
  controller_runtime_active_workers{cluster="c1",namespace="kid-system",controller="kidevent",pod="m1"} 1x100
  leader_election_master_status{cluster="c2",namespace="kid-system",name="kid-operator.kid.dev",pod="m1"} 1x10 stale

eval instant at 50m ALERT
  {cluster="c2",namespace="kid-system"} 1

eval instant at 90m ALERT
`,
		},
		"memory near the limit: fires for the container past 90 % of its limit, not for others' containers": {
			alert: "KidOperatorMemoryNearLimit", by: "cluster, namespace, pod, container",
			script: `
load 1m
  container_memory_working_set_bytes{namespace="kid-system",pod="kid-operator-manager-abc",container="manager",image="i",id="/a"} 480e6x30
  kube_pod_container_resource_limits{namespace="kid-system",pod="kid-operator-manager-abc",container="manager",resource="memory",unit="byte"} 512e6x30
  kube_pod_container_resource_limits{namespace="kid-system",pod="kid-operator-manager-abc",container="manager",resource="cpu",unit="core"} 1x30
  container_memory_working_set_bytes{namespace="kid-system",pod="kid-operator-receiver-def",container="receiver",image="i",id="/b"} 100e6x30
  kube_pod_container_resource_limits{namespace="kid-system",pod="kid-operator-receiver-def",container="receiver",resource="memory",unit="byte"} 256e6x30
  container_memory_working_set_bytes{namespace="other",pod="someone-else-manager-xyz",container="manager",image="i",id="/c"} 510e6x30
  kube_pod_container_resource_limits{namespace="other",pod="someone-else-manager-xyz",container="manager",resource="memory",unit="byte"} 512e6x30

eval instant at 10m ALERT
  {namespace="kid-system",pod="kid-operator-manager-abc",container="manager"} 1
`,
		},
		"OOM killed: fires after a restart whose cause was an OOM kill, not for an old one or another cause": {
			alert: "KidOperatorOOMKilled", by: "cluster, namespace, pod, container",
			script: `
load 1m
  kube_pod_container_status_restarts_total{namespace="kid-system",pod="kid-operator-manager-abc",container="manager",uid="u1"} 0x10 1x100
  kube_pod_container_status_last_terminated_reason{namespace="kid-system",pod="kid-operator-manager-abc",container="manager",reason="OOMKilled",uid="u1"} _x10 1x100
  kube_pod_container_status_restarts_total{namespace="kid-system",pod="kid-operator-receiver-def",container="receiver",uid="u2"} 0x10 1x100
  kube_pod_container_status_last_terminated_reason{namespace="kid-system",pod="kid-operator-receiver-def",container="receiver",reason="Error",uid="u2"} _x10 1x100

eval instant at 15m ALERT
  {namespace="kid-system",pod="kid-operator-manager-abc",container="manager"} 1

eval instant at 60m ALERT
`,
		},
		"restarting: three restarts of a tier's containers in 30 minutes fire, across pods replaced": {
			alert: "KidOperatorRestarting", by: "cluster, namespace, container",
			script: `
load 1m
  kube_pod_container_status_restarts_total{namespace="kid-system",pod="kid-operator-manager-a",container="manager",uid="u1"} 0x5 1x5 2x5 stale
  kube_pod_container_status_restarts_total{namespace="kid-system",pod="kid-operator-manager-b",container="manager",uid="u2"} _x15 0x5 1x20
  kube_pod_container_status_restarts_total{namespace="kid-system",pod="kid-operator-receiver-c",container="receiver",uid="u3"} 0x20 1x20

eval instant at 25m ALERT
  {namespace="kid-system",container="manager"} 1

eval instant at 70m ALERT
`,
		},
		"cache sync slow: fires once the leader has waited over 5 minutes, never for 0 (synced, or not leading)": {
			alert: "KidOperatorCacheSyncSlow", by: "cluster, namespace",
			script: `
load 1m
  kid_cache_syncing_since_timestamp_seconds{namespace="kid-system",pod="m1"} 0x2 120x20 0x10
  kid_cache_syncing_since_timestamp_seconds{namespace="kid-system",pod="m2"} 0x30

eval instant at 6m ALERT

eval instant at 8m ALERT
  {namespace="kid-system"} 1

eval instant at 25m ALERT
`,
		},
		"etcd near its quota: etcd's own size and quota where scraped, else the API server's view against 2 GiB": {
			alert: "KidEtcdNearQuota", by: "cluster",
			script: `
load 1m
  etcd_mvcc_db_total_size_in_bytes{cluster="self",namespace="kube-system",pod="etcd-0"} 7e9x20
  etcd_server_quota_backend_bytes{cluster="self",namespace="kube-system",pod="etcd-0"} 8e9x20
  apiserver_storage_size_bytes{cluster="self",storage_cluster_id="x"} 7e9x20
  etcd_mvcc_db_total_size_in_bytes{cluster="roomy",namespace="kube-system",pod="etcd-0"} 3e9x20
  etcd_server_quota_backend_bytes{cluster="roomy",namespace="kube-system",pod="etcd-0"} 8e9x20
  apiserver_storage_size_bytes{cluster="roomy",storage_cluster_id="x"} 3e9x20
  apiserver_storage_size_bytes{cluster="managed",storage_cluster_id="y"} 1.9e9x20
  apiserver_storage_size_bytes{cluster="small",storage_cluster_id="z"} 1e9x20

eval instant at 10m ALERT
  {cluster="self"} 1
  {cluster="managed"} 1
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
