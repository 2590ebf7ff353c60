package main

import (
	"strings"
	"testing"
	"time"

	"github.com/kid-operator/kid-operator/cmd/manager/operator"
	"github.com/kid-operator/kid-operator/controllers"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/webhookserver"
)

// TestFlagsPastTheirBoundsAreRefused sets each bounded flag just past its
// range, both ends, and expects the manager to refuse to start, naming the
// flag; the defaults and each bound itself are accepted.
func TestFlagsPastTheirBoundsAreRefused(t *testing.T) {
	defaults := func() operator.Options {
		var o operator.Options
		o.Webhook.DrainPeriod = webhookserver.DefaultDrainPeriod
		o.APIReadConcurrency = controllers.DefaultReadConcurrency
		o.ActionFilterBudget = actions.DefaultFilterBudget
		o.MaxActionsPerNamespace = actions.DefaultMaxActions
		o.ActionFilterLanes = controllers.DefaultFilterLanes
		o.CacheSyncTimeout = operator.DefaultCacheSyncTimeout
		return o
	}
	cases := []struct {
		flag   string
		past   []func(*operator.Options)
		atEdge []func(*operator.Options)
	}{
		{"--webhook-drain-period",
			[]func(*operator.Options){func(o *operator.Options) { o.Webhook.DrainPeriod = -time.Second }, func(o *operator.Options) { o.Webhook.DrainPeriod = webhookserver.MaxDrainPeriod + time.Second }},
			[]func(*operator.Options){func(o *operator.Options) { o.Webhook.DrainPeriod = 0 }, func(o *operator.Options) { o.Webhook.DrainPeriod = webhookserver.MaxDrainPeriod }}},
		{"--api-read-concurrency",
			[]func(*operator.Options){func(o *operator.Options) { o.APIReadConcurrency = 0 }, func(o *operator.Options) { o.APIReadConcurrency = maxAPIReadConcurrency + 1 }},
			[]func(*operator.Options){func(o *operator.Options) { o.APIReadConcurrency = 1 }, func(o *operator.Options) { o.APIReadConcurrency = maxAPIReadConcurrency }}},
		{"--action-filter-budget",
			[]func(*operator.Options){func(o *operator.Options) { o.ActionFilterBudget = actions.MinFilterBudget - time.Millisecond }, func(o *operator.Options) { o.ActionFilterBudget = actions.MaxFilterBudget + time.Millisecond }},
			[]func(*operator.Options){func(o *operator.Options) { o.ActionFilterBudget = actions.MinFilterBudget }, func(o *operator.Options) { o.ActionFilterBudget = actions.MaxFilterBudget }}},
		{"--max-actions-per-namespace",
			[]func(*operator.Options){func(o *operator.Options) { o.MaxActionsPerNamespace = 0 }, func(o *operator.Options) { o.MaxActionsPerNamespace = actions.MaxMaxActions + 1 }},
			[]func(*operator.Options){func(o *operator.Options) { o.MaxActionsPerNamespace = 1 }, func(o *operator.Options) { o.MaxActionsPerNamespace = actions.MaxMaxActions }}},
		{"--cache-sync-timeout",
			[]func(*operator.Options){func(o *operator.Options) { o.CacheSyncTimeout = operator.MinCacheSyncTimeout - time.Second }, func(o *operator.Options) { o.CacheSyncTimeout = operator.MaxCacheSyncTimeout + time.Second }},
			[]func(*operator.Options){func(o *operator.Options) { o.CacheSyncTimeout = operator.MinCacheSyncTimeout }, func(o *operator.Options) { o.CacheSyncTimeout = operator.MaxCacheSyncTimeout }}},
		{"--action-filter-lanes",
			[]func(*operator.Options){func(o *operator.Options) { o.ActionFilterLanes = 0 }, func(o *operator.Options) { o.ActionFilterLanes = controllers.MaxFilterLanes + 1 }},
			[]func(*operator.Options){func(o *operator.Options) { o.ActionFilterLanes = 1 }, func(o *operator.Options) { o.ActionFilterLanes = controllers.MaxFilterLanes }}},
	}
	o := defaults()
	if err := checkFlagBounds(&o); err != nil {
		t.Fatalf("the defaults are refused: %v", err)
	}
	for _, tc := range cases {
		for i, set := range tc.past {
			o := defaults()
			set(&o)
			err := checkFlagBounds(&o)
			if err == nil || !strings.Contains(err.Error(), tc.flag) {
				t.Errorf("%s past its bound (%d): got %v, want an error naming the flag", tc.flag, i, err)
			}
		}
		for i, set := range tc.atEdge {
			o := defaults()
			set(&o)
			if err := checkFlagBounds(&o); err != nil {
				t.Errorf("%s at its bound (%d) is refused: %v", tc.flag, i, err)
			}
		}
	}
}
