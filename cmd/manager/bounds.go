package main

import (
	"fmt"

	"github.com/kid-operator/kid-operator/cmd/manager/operator"
	"github.com/kid-operator/kid-operator/controllers"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/webhookserver"
)

// maxAPIReadConcurrency bounds --api-read-concurrency: more readers than
// this would each hold a goroutine and a connection to k-ID for no rate a
// product may set (500/s at a 2 s round trip).
const maxAPIReadConcurrency = 1000

// checkFlagBounds refuses a flag outside its range. These flags bound what
// one namespace may take of workers every namespace shares, so a value
// outside the range would take that protection away (a filter budget of an
// hour, lanes for every worker) rather than tune it.
func checkFlagBounds(opts *operator.Options) error {
	if d := opts.Webhook.DrainPeriod; d < 0 || d > webhookserver.MaxDrainPeriod {
		return fmt.Errorf("--webhook-drain-period: %s is outside 0 to %s", d, webhookserver.MaxDrainPeriod)
	}
	if d := opts.CacheSyncTimeout; d < operator.MinCacheSyncTimeout || d > operator.MaxCacheSyncTimeout {
		return fmt.Errorf("--cache-sync-timeout: %s is outside %s to %s", d, operator.MinCacheSyncTimeout, operator.MaxCacheSyncTimeout)
	}
	if n := opts.APIReadConcurrency; n < 1 || n > maxAPIReadConcurrency {
		return fmt.Errorf("--api-read-concurrency: %d is outside 1 to %d", n, maxAPIReadConcurrency)
	}
	if d := opts.ActionFilterBudget; d < actions.MinFilterBudget || d > actions.MaxFilterBudget {
		return fmt.Errorf("--action-filter-budget: %s is outside %s to %s", d, actions.MinFilterBudget, actions.MaxFilterBudget)
	}
	if n := opts.MaxActionsPerNamespace; n < 1 || n > actions.MaxMaxActions {
		return fmt.Errorf("--max-actions-per-namespace: %d is outside 1 to %d", n, actions.MaxMaxActions)
	}
	if n := opts.ActionFilterLanes; n < 1 || n > controllers.MaxFilterLanes {
		return fmt.Errorf("--action-filter-lanes: %d is outside 1 to %d", n, controllers.MaxFilterLanes)
	}
	return nil
}
