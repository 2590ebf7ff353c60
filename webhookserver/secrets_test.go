package webhookserver

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/secrets"
)

// newSecretTestServer is newTestServer with a secrets cache whose TTL is an
// hour (so that only a forced re-read can see a change) on a clock the test
// moves; gets counts the Secrets read from the fake API server.
func newSecretTestServer(t *testing.T) (*Server, client.Client, *testingclock.FakeClock, *atomic.Int64) {
	gets := &atomic.Int64{}
	s, c := newTestServer(t, &interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				gets.Add(1)
			}
			return c.Get(ctx, key, obj, opts...)
		},
	})
	clock := testingclock.NewFakeClock(time.Unix(1764000000, 0))
	s.secrets = secrets.New(c, secrets.Options{TTL: time.Hour, Clock: clock})
	return s, c, clock, gets
}

func TestReceiveAcceptsARotatedSecretBeforeItsCopyExpires(t *testing.T) {
	g := NewWithT(t)
	s, c, clock, gets := newSecretTestServer(t)
	g.Expect(request{body: kid.Examples["test"]}.do(s).Code).To(Equal(200))
	g.Expect(gets.Load()).To(BeEquivalentTo(1))

	secret := &corev1.Secret{}
	g.Expect(c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "demo-webhook"}, secret)).To(Succeed())
	secret.Data = map[string][]byte{"next": []byte("the-new-secret")}
	g.Expect(c.Update(context.Background(), secret)).To(Succeed())
	gets.Store(0)

	clock.Step(time.Second)
	ts := strconv.FormatInt(testNow.Unix(), 10)
	body := kid.Examples["session-delete"]
	rec := request{body: body, signature: kid.Sign([]byte("the-new-secret"), ts, []byte(body))}.do(s)
	g.Expect(rec.Code).To(Equal(200), "the first delivery under the new key re-reads the Secret and verifies: %s", rec.Body)
	g.Expect(gets.Load()).To(BeEquivalentTo(1))
	g.Expect(countEvents(t, c)).To(Equal(2))

	// The old key is gone from the Secret, and now from the receiver.
	clock.Step(time.Second)
	g.Expect(request{body: kid.Examples["challenge-pass"]}.do(s).Code).To(Equal(401))
}

func TestReceiveRereadsTheSecretAtMostOnceASecondForBadSignatures(t *testing.T) {
	g := NewWithT(t)
	s, c, clock, gets := newSecretTestServer(t)
	ts := strconv.FormatInt(testNow.Unix(), 10)
	body := kid.Examples["test"]
	forged := kid.Sign([]byte("a guess"), ts, []byte(body))
	for range 500 {
		g.Expect(request{body: body, signature: forged}.do(s).Code).To(Equal(401))
	}
	// The first read, and one forced re-read.
	g.Expect(gets.Load()).To(BeEquivalentTo(2))

	clock.Step(time.Second)
	for range 500 {
		g.Expect(request{body: body, signature: forged}.do(s).Code).To(Equal(401))
	}
	g.Expect(gets.Load()).To(BeEquivalentTo(3))
	g.Expect(countEvents(t, c)).To(BeZero())

	// Stale timestamps and malformed headers cannot be fixed by another
	// key, so they never re-read.
	clock.Step(time.Second)
	stale := strconv.FormatInt(testNow.Add(-time.Hour).Unix(), 10)
	g.Expect(request{body: body, timestamp: stale}.do(s).Code).To(Equal(401))
	g.Expect(request{body: body, signature: "zz"}.do(s).Code).To(Equal(401))
	g.Expect(gets.Load()).To(BeEquivalentTo(3))
}

func TestReceiveAcceptsOnceAMissingSecretIsCreated(t *testing.T) {
	g := NewWithT(t)
	s, c, clock, gets := newSecretTestServer(t)
	path := kidv1.WebhookPath("default", "nosecret")
	g.Expect(request{path: path, body: kid.Examples["test"]}.do(s).Code).To(Equal(503))
	// Within the second, the missing Secret is not read again.
	for range 100 {
		g.Expect(request{path: path, body: kid.Examples["test"]}.do(s).Code).To(Equal(503))
	}
	g.Expect(gets.Load()).To(BeEquivalentTo(2))

	g.Expect(c.Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "missing", Namespace: "default", Labels: kidv1.SecretLabels()},
		Data:       map[string][]byte{"current": []byte(testSecret)},
	})).To(Succeed())
	clock.Step(time.Second)
	g.Expect(request{path: path, body: kid.Examples["test"]}.do(s).Code).To(Equal(200))
}

func TestReceiveServesOnlyItsNamespaces(t *testing.T) {
	g := NewWithT(t)
	s, c := newTestServer(t, nil)
	s.namespaces = map[string]bool{"games": true}
	rec := request{body: kid.Examples["test"]}.do(s)
	g.Expect(rec.Code).To(Equal(404), "default is not served: %s", rec.Body)
	g.Expect(countEvents(t, c)).To(BeZero())
}
