package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// apiNS holds the product whose k-ID API is the simulator's fake, for the
// session sync measurement.
const apiNS = "bench-api"

// syncRun is what the session sync measurement saw.
type syncRun struct {
	sessions         int
	writesPerSession float64 // every API write of the manager, per player (two events and a read)
	syncWrites       float64 // status writes of the sync alone (reads that changed the user)
	apiCalls         int     // calls the fake k-ID answered
}

// sessionSync measures what session sync adds: n players consent at a fake
// k-ID, which delivers each PASS to the manager; the manager folds it and
// reads the new session from the fake. It returns the manager's API writes
// per player, to compare with writes_per_event of the webhook-only run.
func sessionSync(ctx context.Context, p *plane, m *manager, n, c int) (syncRun, error) {
	fake, addr, stopFake, err := serveBenchFake(ctx, m, apiNS)
	if err != nil {
		return syncRun{}, err
	}
	defer stopFake()
	if err := p.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: apiNS}}); err != nil {
		return syncRun{}, err
	}
	for name, data := range map[string]map[string]string{"bench-webhook": {"current": secret}, "bench-api": {"key": "bench-api-key"}} {
		if err := p.client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: apiNS, Labels: kidv1.SecretLabels()}, StringData: data}); err != nil {
			return syncRun{}, err
		}
	}
	rps := int32(500)
	if err := p.client.Create(ctx, &kidv1.KidProduct{
		ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: apiNS},
		Spec: kidv1.KidProductSpec{
			ProductID: 11472, Environment: kidv1.EnvironmentTest,
			Webhook: kidv1.WebhookSpec{SecretRef: kidv1.LocalObjectReference{Name: "bench-webhook"}},
			API: &kidv1.APISpec{
				SecretRef: kidv1.SecretKeySelector{Name: "bench-api", Key: "key"},
				BaseURL:   "http://" + addr + "/api/v1", RequestsPerSecond: &rps,
			},
		},
	}); err != nil {
		return syncRun{}, err
	}
	// The product must be Ready before the fake delivers to it.
	for ready := false; !ready; {
		got := &kidv1.KidProduct{}
		if err := p.client.Get(ctx, client.ObjectKey{Namespace: apiNS, Name: "bench"}, got); err != nil {
			return syncRun{}, err
		}
		for _, c := range got.Status.Conditions {
			ready = ready || (c.Type == kidv1.APIReadyCondition && c.Status == metav1.ConditionTrue)
		}
		select {
		case <-ctx.Done():
			return syncRun{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}

	applied := m.metric("kid_events_processed_total", `result="applied"`)
	changed := m.metric("kid_session_syncs_total", `result="changed"`)
	calls := len(fake.Requests())
	writes := m.writes()
	// Players consent in waves of c, each wave once the fake's deliveries
	// so far were answered: the fake delivers at once, and a thousand
	// deliveries in flight would pass the receiver's MaxInFlight (256),
	// whose 503s k-ID's three attempts over 15 s do not always get past.
	for done := 0; done < n; {
		wave := min(c, n-done)
		for range wave {
			if _, err := fake.ApproveChallenge(fake.StartChallenge(), kidsim.Approval{}); err != nil {
				return syncRun{}, err
			}
		}
		done += wave
		if err := waitAnswered(ctx, fake, 2*done); err != nil {
			return syncRun{}, err
		}
	}
	// Each player is two events (IN_PROGRESS, PASS) and one changed read.
	// The fake gives up on a delivery after k-ID's three attempts (on a
	// machine busy enough to time them out), and then the count is never
	// reached: bounded, so that the run fails instead of waiting out its
	// 40 minutes.
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := waitApplied(waitCtx, m, applied+float64(2*n)); err != nil {
		return syncRun{}, fmt.Errorf("session sync: %w (a delivery the fake gave up on is lost)", err)
	}
	for m.metric("kid_session_syncs_total", `result="changed"`) < changed+float64(n) {
		select {
		case <-waitCtx.Done():
			return syncRun{}, fmt.Errorf("waiting for %d session reads: %w", n, waitCtx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Let the stand-ins' merges settle before counting.
	time.Sleep(2 * time.Second)
	return syncRun{
		sessions:         n,
		writesPerSession: (m.writes() - writes) / float64(n),
		syncWrites:       (m.metric("kid_session_syncs_total", `result="changed"`) - changed) / float64(n),
		apiCalls:         len(fake.Requests()) - calls,
	}, nil
}

// waitAnswered waits until the fake has had want of its events answered 200.
func waitAnswered(ctx context.Context, fake *kidsim.Fake, want int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		answered := map[int]bool{}
		for _, d := range fake.Deliveries() {
			if d.Status == http.StatusOK {
				answered[d.Event] = true
			}
		}
		if len(answered) >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("session sync: %d of the fake's %d deliveries answered 200: %w", len(answered), want, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// serveBenchFake starts a fake k-ID on loopback that delivers to the
// manager's webhook for the product bench in ns; stop ends it.
func serveBenchFake(ctx context.Context, m *manager, ns string) (fake *kidsim.Fake, addr string, stop func(), err error) {
	fake = kidsim.NewFake(kidsim.FakeOptions{
		APIKey: "bench-api-key", ProductID: 11472,
		WebhookURL: "http://" + m.webhook + kidv1.WebhookPath(ns, "bench"), WebhookSecret: []byte(secret),
		Schedule:   kidsim.RetrySchedule,
		HTTPClient: &http.Client{Timeout: 10 * time.Second},
	})
	fakeCtx, cancel := context.WithCancel(ctx)
	stop = func() { cancel(); fake.Close() }
	if addr, err = fake.ListenAndServe(fakeCtx, "127.0.0.1:0"); err != nil {
		stop()
		return nil, "", nil, err
	}
	return fake, addr, stop, nil
}
