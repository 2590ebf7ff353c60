package main

import "slices"

// externalMetric is a metric the rules may read that kid-operator does not
// export, from what a cluster's monitoring stack scrapes anyway. The test
// that compares the rules with the operator's /metrics (test/monitoring)
// cannot see these, so the checker vouches for their names here, and for
// the labels a selector may match on them. Any other name must be the
// operator's: a misspelt external name is an unexported one, and fails.
type externalMetric struct {
	// Source is who exports it.
	Source string
	// Labels are the labels the source sets, which a selector may match.
	// cluster, set by a multi-cluster setup's relabelling or external
	// labels, is always allowed.
	Labels []string
	// ClusterScoped is a metric of the whole cluster (etcd's database): an
	// alert aggregates it by cluster alone, since the namespace of the
	// etcd or API server that reports it says nothing.
	ClusterScoped bool
}

// externalMetrics are the names the rules in config/prometheus may read
// beside the operator's own (docs/design.md, "Monitoring, as built").
var externalMetrics = map[string]externalMetric{
	// kube-state-metrics v2.
	"kube_pod_container_resource_limits": {
		Source: "kube-state-metrics",
		Labels: []string{"namespace", "pod", "uid", "container", "node", "resource", "unit"},
	},
	"kube_pod_container_status_restarts_total": {
		Source: "kube-state-metrics",
		Labels: []string{"namespace", "pod", "uid", "container"},
	},
	"kube_pod_container_status_last_terminated_reason": {
		Source: "kube-state-metrics",
		Labels: []string{"namespace", "pod", "uid", "container", "reason"},
	},
	// The kubelet's cAdvisor endpoint (/metrics/cadvisor).
	"container_memory_working_set_bytes": {
		Source: "cAdvisor (kubelet)",
		Labels: []string{"namespace", "pod", "container", "image", "name", "id"},
	},
	// etcd's own /metrics, where the control plane lets it be scraped.
	"etcd_mvcc_db_total_size_in_bytes": {Source: "etcd", ClusterScoped: true},
	"etcd_server_quota_backend_bytes":  {Source: "etcd", ClusterScoped: true},
	// kube-apiserver's /metrics (Kubernetes 1.28 and later), also on
	// managed control planes.
	"apiserver_storage_size_bytes": {Source: "kube-apiserver", Labels: []string{"storage_cluster_id"}, ClusterScoped: true},
}

// checkExternal checks a selector of an external metric: each matcher's
// label must be one its source sets. It reports whether s's metric is
// external.
func (c *checker) checkExternal(s *Selector) bool {
	m, ok := externalMetrics[s.Metric]
	if !ok {
		return false
	}
	s.External = m.Source
	for _, x := range s.Matchers {
		if x.Label == "cluster" || slices.Contains(m.Labels, x.Label) {
			continue
		}
		c.errorf("%s: %s (from %s) has no label %q; it has %v", s.Where, s.Metric, m.Source, x.Label, m.Labels)
	}
	return true
}
