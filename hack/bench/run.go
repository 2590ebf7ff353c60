package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/fold"
	"github.com/kid-operator/kid-operator/internal/inbox"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

const (
	benchNS = "bench"
	rawNS   = "raw"
	secret  = "bench-secret"
)

// delivery builds the i-th distinct event of a run: a consent PASS for a new
// player, the event that costs the most (a new KidUser and its status).
func delivery(run string, i int) []byte {
	id := run + "-" + strconv.Itoa(i)
	body, err := kidsim.Build(kid.ChallengeStateChange, kidsim.Fields{
		ChallengeID: "c-" + id, Status: kid.StatusPass, SessionID: "s-" + id, KUID: "k-" + id, ProductID: 11472,
	})
	if err != nil {
		panic(err)
	}
	return body
}

// parallel runs f(i) for i in [0, n) on c workers and returns the elapsed
// time.
func parallel(n, c int, f func(i int)) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// every calls f with the time since it was called, every period, until
// the function it returns is called: a long phase's progress.
func every(period time.Duration, f func(time.Duration)) func() {
	start, done, stopped := time.Now(), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				f(time.Since(start))
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// rawCeiling creates n KidEvents of the receiver's shape at concurrency c,
// and returns the rate, each create's latency and the objects created.
func rawCeiling(ctx context.Context, p *plane, n, c int, tag string) (float64, []time.Duration, []*kidv1.KidEvent, error) {
	product := &kidv1.KidProduct{ObjectMeta: metav1.ObjectMeta{Name: "raw", Namespace: rawNS, UID: "raw-uid"}}
	var errs atomic.Int64
	lat := make([]time.Duration, n)
	events := make([]*kidv1.KidEvent, n)
	elapsed := parallel(n, c, func(i int) {
		body := delivery("raw"+tag, i)
		env, err := kid.ParseEnvelope(body)
		if err != nil {
			panic(err)
		}
		now := time.Now()
		e, err := inbox.Build(product, env, body, now, now, kidv1.SourceWebhook)
		if err != nil {
			panic(err)
		}
		start := time.Now()
		if err := p.client.Create(ctx, e); err != nil {
			errs.Add(1)
		}
		lat[i] = time.Since(start)
		events[i] = e
	})
	if errs.Load() > 0 {
		return 0, nil, nil, fmt.Errorf("raw ceiling: %d creates failed", errs.Load())
	}
	return float64(n) / elapsed.Seconds(), lat, events, nil
}

// The kinds of API write a k-ID event can cost, as the results name them.
const (
	eventCreateWrite = "KidEvent create (the raw ceiling)"
	eventStatusWrite = "KidEvent status (Applied)"
	userCreateWrite  = "KidUser create"
	userStatusWrite  = "KidUser status (the fold)"
	userDeleteWrite  = "KidUser delete (a merged stand-in)"
)

// writeCost is the API server's ceiling for one kind of write, at the
// benchmark's concurrency.
type writeCost struct {
	name string
	rate float64
}

// writeCosts measures, on the raw ceiling's events, the rate of each other
// write that design.md's API asks of k-ID's events: the event's status
// (phase Applied, userRef), the KidUser's create and its status (the fold),
// and the delete of a stand-in merged into its player's session user. The
// writes are those the KidEvent and KidUser controllers make.
func writeCosts(ctx context.Context, p *plane, events []*kidv1.KidEvent, c int) ([]writeCost, error) {
	n := len(events)
	var errs atomic.Int64
	check := func(err error) {
		if err != nil {
			errs.Add(1)
		}
	}
	users := make([]*kidv1.KidUser, n)
	eventStatus := parallel(n, c, func(i int) {
		e := events[i]
		before := e.DeepCopy()
		now := metav1.Now()
		e.Status.Phase, e.Status.AppliedAt = kidv1.EventApplied, &now
		e.Status.UserRef = &kidv1.LocalObjectReference{Name: "user-" + e.Name}
		check(p.client.Status().Patch(ctx, e, client.MergeFrom(before)))
	})
	userCreate := parallel(n, c, func(i int) {
		e := events[i]
		users[i] = &kidv1.KidUser{
			ObjectMeta: metav1.ObjectMeta{Name: "user-" + e.Name, Namespace: rawNS, Labels: kidv1.WithIDLabels(map[string]string{kidv1.ProductLabel: "raw"}, e.Spec.Subject.IDs())},
			Spec: kidv1.KidUserSpec{
				ProductRef: kidv1.LocalObjectReference{Name: "raw"},
				Identity:   kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: e.Spec.Subject.SessionID},
			},
		}
		check(p.client.Create(ctx, users[i]))
	})
	userStatus := parallel(n, c, func(i int) {
		e, u := events[i], users[i]
		fe := &fold.Event{Name: e.Name, Type: e.Spec.EventType, Subject: e.Spec.Subject, SignedAt: e.Spec.ReceivedAt.Time}
		check(json.Unmarshal(e.Spec.Data.Raw, &fe.Payload))
		before := u.DeepCopy()
		u.Status = *fold.Apply(&u.Status, fe, kid.Privacy{}, string(u.UID))
		check(p.client.Status().Patch(ctx, u, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})))
	})
	// As the KidUser controller deletes a merged stand-in: only the
	// version it merged.
	userDelete := parallel(n, c, func(i int) {
		u := users[i]
		check(p.client.Delete(ctx, u, client.Preconditions{UID: &u.UID, ResourceVersion: &u.ResourceVersion}))
	})
	if errs.Load() > 0 {
		return nil, fmt.Errorf("write costs: %d writes failed", errs.Load())
	}
	rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	return []writeCost{
		{eventStatusWrite, rate(eventStatus)},
		{userCreateWrite, rate(userCreate)},
		{userStatusWrite, rate(userStatus)},
		{userDeleteWrite, rate(userDelete)},
	}, nil
}

func createProduct(ctx context.Context, p *plane) error {
	if err := p.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: rawNS}}); err != nil {
		return err
	}
	return createBenchProduct(ctx, p, benchNS)
}

// createBenchProduct creates a namespace with the product "bench" and its
// webhook Secret, which the deliveries are signed with.
func createBenchProduct(ctx context.Context, p *plane, ns string) error {
	if err := p.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}
	if err := p.client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-webhook", Namespace: ns, Labels: kidv1.SecretLabels()},
		StringData: map[string]string{"current": secret},
	}); err != nil {
		return err
	}
	return p.client.Create(ctx, &kidv1.KidProduct{
		ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: ns},
		Spec: kidv1.KidProductSpec{
			ProductID: 11472, Environment: kidv1.EnvironmentTest,
			Webhook: kidv1.WebhookSpec{SecretRef: kidv1.LocalObjectReference{Name: "bench-webhook"}},
			// Keep every event for the scale measurements.
			Retention: kidv1.RetentionSpec{MaxEvents: ptr.To[int32](100000)},
		},
	})
}

// receiverRun is one run of n distinct deliveries at concurrency c.
type receiverRun struct {
	elapsed   time.Duration
	latencies []time.Duration
	non200    int
}

func sendAll(ctx context.Context, m *manager, run string, n, c int) receiverRun {
	url := "http://" + m.webhook + kidv1.WebhookPath(benchNS, "bench")
	transport := &http.Transport{MaxIdleConns: c, MaxIdleConnsPerHost: c}
	s := kidsim.NewSender(url, []byte(secret))
	s.Client = &http.Client{Transport: transport, Timeout: 30 * time.Second}
	lat := make([]time.Duration, n)
	var non200 atomic.Int64
	elapsed := parallel(n, c, func(i int) {
		a := s.Deliver(ctx, delivery(run, i), strconv.FormatInt(time.Now().Unix(), 10), kid.Sign)
		lat[i] = a.Duration
		if a.Status != http.StatusOK {
			non200.Add(1)
		}
	})
	transport.CloseIdleConnections()
	return receiverRun{elapsed: elapsed, latencies: lat, non200: int(non200.Load())}
}

// waitApplied waits until the manager has applied want events in all.
func waitApplied(ctx context.Context, m *manager, want float64) error {
	for m.metric("kid_events_processed_total", `result="applied"`) < want {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %v applied events: %w", want, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// checkUsers verifies that every delivered player's KidUser reflects its
// event (consent Granted, session linked).
func checkUsers(ctx context.Context, p *plane, want int) error {
	var users kidv1.KidUserList
	if err := p.client.List(ctx, &users, client.InNamespace(benchNS)); err != nil {
		return err
	}
	granted := 0
	for _, u := range users.Items {
		if u.Status.Consent.State == kidv1.ConsentGranted && u.Status.SessionID != "" {
			granted++
		}
	}
	if granted != want {
		return fmt.Errorf("%d of %d users reflect their event", granted, want)
	}
	return nil
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}
