package secrets

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

var key = types.NamespacedName{Namespace: "games", Name: "demo-webhook"}

// fixture is a cache over a fake API server that counts its gets of
// Secrets; gate, when set, holds every get until it is closed.
type fixture struct {
	api   client.Client
	cache *Cache
	clock *testingclock.FakeClock
	gets  atomic.Int64
	gate  chan struct{}
	fail  atomic.Bool
}

func newFixture(t *testing.T, opts Options, objs ...client.Object) *fixture {
	t.Helper()
	f := &fixture{clock: testingclock.NewFakeClock(time.Unix(1764000000, 0))}
	f.api = fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				f.gets.Add(1)
				if f.gate != nil {
					// Held as a hung API server holds it: until the
					// read's own deadline.
					select {
					case <-f.gate:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				if f.fail.Load() {
					return errors.New("connection refused")
				}
			}
			return c.Get(ctx, k, obj, opts...)
		},
	}).Build()
	opts.Clock = f.clock
	f.cache = New(f.api, opts)
	return f
}

func secret(name, value string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "games", Labels: kidv1.SecretLabels()},
		Data:       map[string][]byte{"current": []byte(value)},
	}
}

func (f *fixture) update(t *testing.T, value string) {
	t.Helper()
	s := &corev1.Secret{}
	if err := f.api.Get(context.Background(), key, s); err != nil {
		t.Fatal(err)
	}
	f.gets.Add(-1) // the test's own read
	s.Data["current"] = []byte(value)
	if err := f.api.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

func TestGetReadsOncePerTTL(t *testing.T) {
	g := NewWithT(t)
	f := newFixture(t, Options{TTL: 15 * time.Second}, secret("demo-webhook", "one"))
	ctx := context.Background()
	for range 100 {
		s, err := f.cache.Get(ctx, key)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(string(s.Data["current"])).To(Equal("one"))
	}
	g.Expect(f.gets.Load()).To(BeEquivalentTo(1))

	f.update(t, "two")
	f.clock.Step(14 * time.Second)
	s, _ := f.cache.Get(ctx, key)
	g.Expect(string(s.Data["current"])).To(Equal("one"), "within the TTL the copy is used")
	f.clock.Step(time.Second)
	s, _ = f.cache.Get(ctx, key)
	g.Expect(string(s.Data["current"])).To(Equal("two"), "after the TTL it is read again")
	g.Expect(f.gets.Load()).To(BeEquivalentTo(2))
}

func TestConcurrentMissesShareOneRead(t *testing.T) {
	g := NewWithT(t)
	f := newFixture(t, Options{}, secret("demo-webhook", "one"))
	f.gate = make(chan struct{})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			s, err := f.cache.Get(context.Background(), key)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(string(s.Data["current"])).To(Equal("one"))
		})
	}
	g.Eventually(f.gets.Load).Should(BeEquivalentTo(1))
	close(f.gate)
	wg.Wait()
	g.Expect(f.gets.Load()).To(BeEquivalentTo(1))
}

func TestAMissingSecretIsRememberedForTheTTL(t *testing.T) {
	g := NewWithT(t)
	f := newFixture(t, Options{TTL: 15 * time.Second})
	for range 10 {
		_, err := f.cache.Get(context.Background(), key)
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%v", err)
	}
	g.Expect(f.gets.Load()).To(BeEquivalentTo(1))
}

func TestAFailedReadIsNotRemembered(t *testing.T) {
	g := NewWithT(t)
	f := newFixture(t, Options{}, secret("demo-webhook", "one"))
	f.fail.Store(true)
	_, err := f.cache.Get(context.Background(), key)
	g.Expect(err).To(MatchError(ContainSubstring("connection refused")))
	f.fail.Store(false)
	s, err := f.cache.Get(context.Background(), key)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(s.Data["current"])).To(Equal("one"))
	g.Expect(f.gets.Load()).To(BeEquivalentTo(2))
}

func TestRefreshReadsAgainAtMostOncePerInterval(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	f := newFixture(t, Options{TTL: time.Hour, MinRefreshInterval: time.Second}, secret("demo-webhook", "one"))
	_, err := f.cache.Get(ctx, key)
	g.Expect(err).NotTo(HaveOccurred())
	f.update(t, "two")

	s, reread, err := f.cache.Refresh(ctx, key)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(reread).To(BeTrue())
	g.Expect(string(s.Data["current"])).To(Equal("two"))

	// An attacker's stream of bad signatures: within the interval every
	// refresh is answered from the cache.
	for range 1000 {
		_, reread, err = f.cache.Refresh(ctx, key)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(reread).To(BeFalse())
	}
	g.Expect(f.gets.Load()).To(BeEquivalentTo(2))

	f.clock.Step(time.Second)
	_, reread, _ = f.cache.Refresh(ctx, key)
	g.Expect(reread).To(BeTrue())
	g.Expect(f.gets.Load()).To(BeEquivalentTo(3))
}

func TestGetWithinAsksForAFresherCopy(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	f := newFixture(t, Options{TTL: time.Minute}, secret("demo-webhook", "one"))
	_, _ = f.cache.Get(ctx, key)
	f.clock.Step(3 * time.Second)
	_, _ = f.cache.GetWithin(ctx, key, 5*time.Second)
	g.Expect(f.gets.Load()).To(BeEquivalentTo(1))
	_, _ = f.cache.GetWithin(ctx, key, 2*time.Second)
	g.Expect(f.gets.Load()).To(BeEquivalentTo(2))
	// Never older than the TTL, whatever is asked.
	f.clock.Step(time.Minute)
	_, _ = f.cache.GetWithin(ctx, key, time.Hour)
	g.Expect(f.gets.Load()).To(BeEquivalentTo(3))
}

func TestTheCacheIsBounded(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	f := newFixture(t, Options{MaxEntries: 2}, secret("a", "1"), secret("b", "2"), secret("c", "3"))
	for _, name := range []string{"a", "b", "a", "c"} {
		_, err := f.cache.Get(ctx, types.NamespacedName{Namespace: "games", Name: name})
		g.Expect(err).NotTo(HaveOccurred())
	}
	g.Expect(f.cache.Len()).To(Equal(2))
	g.Expect(f.gets.Load()).To(BeEquivalentTo(3))
	// "b" was the least recently used: it went, "a" stayed.
	_, _ = f.cache.Get(ctx, types.NamespacedName{Namespace: "games", Name: "a"})
	g.Expect(f.gets.Load()).To(BeEquivalentTo(3))
	_, _ = f.cache.Get(ctx, types.NamespacedName{Namespace: "games", Name: "b"})
	g.Expect(f.gets.Load()).To(BeEquivalentTo(4))
}

func TestOnChangeReportsWhatAReadFoundChanged(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	f := newFixture(t, Options{TTL: time.Second}, secret("demo-webhook", "one"))
	var changed []types.NamespacedName
	f.cache.OnChange(func(k types.NamespacedName) { changed = append(changed, k) })

	_, _ = f.cache.Get(ctx, key)
	g.Expect(changed).To(BeEmpty(), "a first read reports nothing")
	f.clock.Step(time.Second)
	_, _ = f.cache.Get(ctx, key)
	g.Expect(changed).To(BeEmpty(), "an unchanged Secret reports nothing")

	f.update(t, "two")
	f.clock.Step(time.Second)
	_, _ = f.cache.Get(ctx, key)
	g.Expect(changed).To(Equal([]types.NamespacedName{key}))

	g.Expect(f.api.Delete(ctx, secret("demo-webhook", ""))).To(Succeed())
	f.clock.Step(time.Second)
	_, err := f.cache.Get(ctx, key)
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
	g.Expect(changed).To(HaveLen(2), "a deletion is a change")
}

func TestTheCacheKeepsOnlyTheData(t *testing.T) {
	g := NewWithT(t)
	s := secret("demo-webhook", "one")
	s.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"data":{"current":"b25l"}}`}
	f := newFixture(t, Options{}, s)
	got, err := f.cache.Get(context.Background(), key)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(*got).To(Equal(Secret{Data: map[string][]byte{"current": []byte("one")}, ResourceVersion: got.ResourceVersion}))
	g.Expect(got.ResourceVersion).NotTo(BeEmpty())
}

func TestLastGoodCopyServedWhileTheAPIServerFails(t *testing.T) {
	g := NewWithT(t)
	f := newFixture(t, Options{TTL: 15 * time.Second, LastGoodFor: time.Hour}, secret(key.Name, "v1"))
	ctx := context.Background()
	_, err := f.cache.Get(ctx, key)
	g.Expect(err).NotTo(HaveOccurred())

	f.fail.Store(true)
	f.clock.Step(30 * time.Minute)
	s, err := f.cache.Get(ctx, key)
	g.Expect(err).NotTo(HaveOccurred(), "the last good copy stands in")
	g.Expect(string(s.Data["current"])).To(Equal("v1"))
	s, reread, err := f.cache.Refresh(ctx, key)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(reread).To(BeFalse())
	g.Expect(string(s.Data["current"])).To(Equal("v1"))

	// Past TTL + LastGoodFor since the last read that answered: the
	// failure is the caller's.
	f.clock.Step(31 * time.Minute)
	_, err = f.cache.Get(ctx, key)
	g.Expect(err).To(MatchError(ContainSubstring("connection refused")))

	// Once the API server answers again, its copy is used.
	f.fail.Store(false)
	f.update(t, "v2")
	s, err = f.cache.Get(ctx, key)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(s.Data["current"])).To(Equal("v2"))
}

func TestLastGoodCopyServedWithinASecondWhileTheAPIServerHangs(t *testing.T) {
	g := NewWithT(t)
	f := newFixture(t, Options{TTL: 15 * time.Second, LastGoodFor: time.Hour}, secret(key.Name, "v1"))
	ctx := context.Background()
	_, err := f.cache.Get(ctx, key)
	g.Expect(err).NotTo(HaveOccurred())

	f.gate = make(chan struct{})
	defer close(f.gate)
	f.clock.Step(time.Minute)
	began := time.Now()
	s, err := f.cache.Get(ctx, key)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(s.Data["current"])).To(Equal("v1"))
	// Bounded by LastGoodWait, not by the read's own 10 s timeout.
	g.Expect(time.Since(began)).To(BeNumerically("<", readTimeout/2))
	// A caller arriving once the hung read is older than LastGoodWait
	// does not wait at all.
	began = time.Now()
	_, err = f.cache.Get(ctx, key)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(time.Since(began)).To(BeNumerically("<", LastGoodWait))
	g.Expect(f.gets.Load()).To(BeEquivalentTo(2), "one read hangs; no caller starts another")
}

func TestWithoutLastGoodAFailedReadIsTheCallersError(t *testing.T) {
	g := NewWithT(t)
	f := newFixture(t, Options{TTL: 15 * time.Second}, secret(key.Name, "v1"))
	ctx := context.Background()
	_, err := f.cache.Get(ctx, key)
	g.Expect(err).NotTo(HaveOccurred())
	f.fail.Store(true)
	f.clock.Step(time.Minute)
	_, err = f.cache.Get(ctx, key)
	g.Expect(err).To(HaveOccurred())
}

func TestUnlabelledSecretsAreNotUsedNorKept(t *testing.T) {
	g := NewWithT(t)
	unlabelled := secret("demo-webhook", "not-the-operators")
	unlabelled.Labels = map[string]string{kidv1.SecretLabel: "yes"} // only "true" consents
	f := newFixture(t, Options{TTL: 15 * time.Second}, unlabelled)
	var changed []types.NamespacedName
	f.cache.OnChange(func(k types.NamespacedName) { changed = append(changed, k) })
	ctx := context.Background()

	s, err := f.cache.Get(ctx, key)
	g.Expect(s).To(BeNil())
	g.Expect(IsNotLabelled(err)).To(BeTrue(), "%v", err)
	g.Expect(err.Error()).To(ContainSubstring("kubectl label secret demo-webhook kid.dev/secret=true"))
	f.cache.mu.Lock()
	kept := f.cache.entries[key].secret
	f.cache.mu.Unlock()
	g.Expect(kept.Data).To(BeNil(), "nothing of an unlabelled Secret is kept")

	// Labelled: a forced re-read uses it, and reports the change.
	obj := &corev1.Secret{}
	g.Expect(f.api.Get(ctx, key, obj)).To(Succeed())
	obj.Labels = kidv1.SecretLabels()
	g.Expect(f.api.Update(ctx, obj)).To(Succeed())
	s, _, err = f.cache.Refresh(ctx, key)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(s.Data["current"])).To(Equal("not-the-operators"))
	g.Expect(changed).To(Equal([]types.NamespacedName{key}))
}
