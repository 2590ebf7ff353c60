package webhookserver

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/internal/secrets"
)

// hungAPI is an API server that, while down, answers no create (and, with
// secrets, no Secret get) until the caller's deadline: a hung control
// plane, as SIGSTOP makes one.
type hungAPI struct {
	down, secrets atomic.Bool
	creates       atomic.Int64
}

func (a *hungAPI) funcs() *interceptor.Funcs {
	return &interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if a.down.Load() {
				<-ctx.Done()
				return ctx.Err()
			}
			a.creates.Add(1)
			return c.Create(ctx, obj, opts...)
		},
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Secret); ok && a.secrets.Load() {
				<-ctx.Done()
				return ctx.Err()
			}
			return c.Get(ctx, key, obj, opts...)
		},
	}
}

// newSpoolingServer is newTestServer with a spool in a temporary directory
// and a short store timeout.
func newSpoolingServer(t *testing.T, api *hungAPI, o SpoolOptions) (*Server, client.Client, *testingclock.FakePassiveClock) {
	t.Helper()
	s, c := newTestServer(t, api.funcs())
	clk := testingclock.NewFakePassiveClock(testNow)
	s.opts.Clock = clk
	s.opts.StoreTimeout = 100 * time.Millisecond
	if o.Dir == "" {
		o.Dir = filepath.Join(t.TempDir(), "spool")
	}
	s.opts.Spool = o
	s.opts.Spool.setDefaults()
	if err := s.openSpool(); err != nil {
		t.Fatal(err)
	}
	return s, c, clk
}

func delivery(t *testing.T, i int) string {
	t.Helper()
	body, err := kidsim.Build(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-" + strings.Repeat("x", i), Status: kid.StatusPass, ProductID: 11472})
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// drainOnce replays the spool as the drainer does.
func drainOnce(s *Server) error {
	return s.spool.Drain(func(data []byte, _ time.Time) error { return s.replay(context.Background(), data) })
}

func TestADeliveryTheAPIServerCannotStoreIsSpooledAnswered200AndStoredOnceAfter(t *testing.T) {
	g := NewWithT(t)
	api := &hungAPI{}
	s, c, _ := newSpoolingServer(t, api, SpoolOptions{})
	api.down.Store(true)

	var bodies []string
	for i := range 3 {
		bodies = append(bodies, delivery(t, i+1))
		rec := request{body: bodies[i]}.do(s)
		g.Expect(rec.Code).To(Equal(200), rec.Body.String())
		g.Expect(rec.Body.String()).To(Equal("spooled\n"))
	}
	g.Expect(s.SpoolStats().Entries).To(Equal(3))
	g.Expect(testutil.ToFloat64(spoolEntries)).To(Equal(3.0))
	files, _ := filepath.Glob(filepath.Join(s.spool.Dir(), "*"))
	g.Expect(files).NotTo(BeEmpty())
	for _, f := range files {
		fi, err := os.Stat(f)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(fi.Mode().Perm()).To(Equal(os.FileMode(0o600)), f)
	}
	// The spool holds the event as it would have been created (redacted
	// by the product's privacy settings), not the delivery as sent.
	raw, err := os.ReadFile(files[0])
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(raw)).To(ContainSubstring(`"bodySHA256":`))
	g.Expect(string(raw)).NotTo(ContainSubstring(bodies[0]))

	// Still down: the drain stops at the first record and keeps them all.
	g.Expect(drainOnce(s)).To(HaveOccurred())
	g.Expect(s.SpoolStats().Entries).To(Equal(3))

	api.down.Store(false)
	// k-ID's retry of the first reached the API server before the drain.
	g.Expect(request{body: bodies[0]}.do(s).Code).To(Equal(200))
	stored := testutil.ToFloat64(spoolReplaysTotal.WithLabelValues("stored"))
	dup := testutil.ToFloat64(spoolReplaysTotal.WithLabelValues("duplicate"))
	g.Expect(drainOnce(s)).To(Succeed())
	g.Expect(testutil.ToFloat64(spoolReplaysTotal.WithLabelValues("stored")) - stored).To(Equal(2.0))
	g.Expect(testutil.ToFloat64(spoolReplaysTotal.WithLabelValues("duplicate")) - dup).To(Equal(1.0))
	g.Expect(countEvents(t, c)).To(Equal(3))
	g.Expect(s.SpoolStats().Entries).To(BeZero())
	files, _ = filepath.Glob(filepath.Join(s.spool.Dir(), "*"))
	g.Expect(files).To(BeEmpty(), "drained files are removed")
	g.Expect(api.creates.Load()).To(BeEquivalentTo(4), "3 spooled + k-ID's retry")
}

func TestAFullSpoolAnswers503(t *testing.T) {
	t.Run("by bytes", func(t *testing.T) {
		g := NewWithT(t)
		api := &hungAPI{}
		s, c, _ := newSpoolingServer(t, api, SpoolOptions{MaxBytes: 1000})
		api.down.Store(true)
		g.Expect(request{body: delivery(t, 1)}.do(s).Code).To(Equal(200))
		full := testutil.ToFloat64(spoolAppendsTotal.WithLabelValues("full_bytes"))
		rec := request{body: delivery(t, 2)}.do(s)
		g.Expect(rec.Code).To(Equal(503))
		g.Expect(rec.Header().Get("Retry-After")).To(Equal(RetryAfterSeconds))
		g.Expect(testutil.ToFloat64(spoolAppendsTotal.WithLabelValues("full_bytes")) - full).To(Equal(1.0))
		g.Expect(s.SpoolStats().Entries).To(Equal(1))
		g.Expect(countEvents(t, c)).To(BeZero())
	})
	t.Run("by age", func(t *testing.T) {
		g := NewWithT(t)
		api := &hungAPI{}
		s, _, clk := newSpoolingServer(t, api, SpoolOptions{MaxAge: time.Minute})
		api.down.Store(true)
		g.Expect(request{body: delivery(t, 1)}.do(s).Code).To(Equal(200))
		clk.SetTime(testNow.Add(time.Minute + time.Second))
		full := testutil.ToFloat64(spoolAppendsTotal.WithLabelValues("full_age"))
		ts := clk.Now().Unix()
		rec := request{body: delivery(t, 2), timestamp: itoa(ts)}.do(s)
		g.Expect(rec.Code).To(Equal(503), rec.Body.String())
		g.Expect(testutil.ToFloat64(spoolAppendsTotal.WithLabelValues("full_age")) - full).To(Equal(1.0))
		g.Expect(s.SpoolStats().Entries).To(Equal(1))
	})
}

func TestWithoutASpoolTheAnswerIs503(t *testing.T) {
	g := NewWithT(t)
	api := &hungAPI{}
	s, c := newTestServer(t, api.funcs())
	s.opts.StoreTimeout = 100 * time.Millisecond
	api.down.Store(true)
	g.Expect(request{body: delivery(t, 1)}.do(s).Code).To(Equal(503))
	g.Expect(countEvents(t, c)).To(BeZero())
}

func TestASecretReadThatHangsIsBoundedAndServedFromTheLastGoodCopy(t *testing.T) {
	g := NewWithT(t)
	api := &hungAPI{}
	s, _, clk := newSpoolingServer(t, api, SpoolOptions{})
	s.opts.StoreTimeout = 3 * time.Second
	secClock := testingclock.NewFakeClock(testNow)
	s.secrets = secrets.New(s.reader, secrets.Options{Clock: secClock, LastGoodFor: time.Hour})
	g.Expect(request{body: delivery(t, 1)}.do(s).Code).To(Equal(200))

	// The API server hangs, and the Secret's copy is past its TTL.
	api.down.Store(true)
	api.secrets.Store(true)
	secClock.Step(time.Minute)
	began := time.Now()
	rec := request{body: delivery(t, 2), timestamp: itoa(clk.Now().Unix())}.do(s)
	g.Expect(rec.Code).To(Equal(200), rec.Body.String())
	g.Expect(rec.Body.String()).To(Equal("spooled\n"))
	// The Secret's read waited LastGoodWait, the create StoreTimeout:
	// well within k-ID's 10 s.
	g.Expect(time.Since(began)).To(BeNumerically("<", secrets.LastGoodWait+s.opts.StoreTimeout+2*time.Second))

	// Without a last good copy, the read is bounded by StoreTimeout and
	// answered 503, never left hanging.
	s.secrets = secrets.New(s.reader, secrets.Options{Clock: secClock})
	began = time.Now()
	g.Expect(request{body: delivery(t, 3)}.do(s).Code).To(Equal(503))
	g.Expect(time.Since(began)).To(BeNumerically("<", s.opts.StoreTimeout+2*time.Second))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestTheSpoolHoldsNothingTheEventWouldNot(t *testing.T) {
	g := NewWithT(t)
	api := &hungAPI{}
	s, _, _ := newSpoolingServer(t, api, SpoolOptions{})
	api.down.Store(true)
	// k-ID's example carries a date of birth and an approver's email,
	// which the product (privacy defaults) does not keep.
	body := kid.Examples["challenge-pass"]
	g.Expect(strings.Contains(body, "2011-07-12") && strings.Contains(body, "parent@example.com")).To(BeTrue())
	g.Expect(request{body: body}.do(s).Code).To(Equal(200))
	files, _ := filepath.Glob(filepath.Join(s.spool.Dir(), "*"))
	g.Expect(files).To(HaveLen(1))
	raw, err := os.ReadFile(files[0])
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(raw)).NotTo(ContainSubstring("2011-07-12"))
	g.Expect(string(raw)).NotTo(ContainSubstring("parent@example.com"))
	g.Expect(string(raw)).To(ContainSubstring("9d6b056e-7d62-4a9e-907a-3d0f6f1d1b9a"))
}
