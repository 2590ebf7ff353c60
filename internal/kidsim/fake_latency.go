package kidsim

import (
	"context"
	"fmt"
	"time"
)

// MaxAPILatency bounds SetAPILatency: past k-ID's slowest plausible answer
// and any client's timeout (the operator's is at most 30 s).
const MaxAPILatency = time.Minute

// SetAPILatency makes every REST API call wait d, in real time, before it
// is answered, as a k-ID far away or under load does; 0 answers at once.
// A call is recorded as arriving before its wait (APIRequest.At), and a
// client that gives up stops the wait.
func (f *Fake) SetAPILatency(d time.Duration) error {
	if d < 0 || d > MaxAPILatency {
		return fmt.Errorf("API latency: want 0 to %s, got %s", MaxAPILatency, d)
	}
	f.apiLatency.Store(int64(d))
	return nil
}

// waitAPILatency waits the latency SetAPILatency set, or until ctx ends.
func (f *Fake) waitAPILatency(ctx context.Context) {
	d := time.Duration(f.apiLatency.Load())
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
