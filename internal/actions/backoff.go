package actions

import (
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Backoff of retried runs: exponential from BaseDelay, capped at MaxDelay,
// with ±20 % jitter so that runs failing together do not retry together.
const (
	BaseDelay = time.Second
	MaxDelay  = 5 * time.Minute
)

// NextDelay is the wait before attempt n+1 after n failed attempts (n ≥ 1).
// A Retry-After the target asked for wins when it is longer, up to MaxDelay:
// a target does not decide how long a run stays pending.
func NextDelay(n int32, retryAfter time.Duration) time.Duration {
	d := MaxDelay
	if n < 20 {
		d = min(BaseDelay<<(n-1), MaxDelay)
	}
	// ±20 %, uniform: 80 % of d plus up to half of that again.
	d = wait.Jitter(d-d/5, 0.5)
	return max(d, min(retryAfter, MaxDelay))
}
