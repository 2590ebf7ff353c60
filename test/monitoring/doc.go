// Package monitoring holds the tests of kid-operator's alerts
// (config/prometheus) and dashboard (config/grafana): every expression
// parses with Prometheus's own parser (the checker in hack/promql, a module
// of its own), and every metric and label value they select is one the
// running operator exports. It has no code of its own.
package monitoring
