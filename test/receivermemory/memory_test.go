package receivermemory

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/scheme"
	"github.com/kid-operator/kid-operator/test/testenv"
	"github.com/kid-operator/kid-operator/webhookserver/relaytoken"
)

// The receiving tier's memory must not grow with the players of the
// cluster: its status streams watch the users their pages follow, and
// nothing else (design.md "Live status").
const (
	// memPlayers is how many KidUsers the spec creates.
	memPlayers = 20000
	// memStreams is how many status streams stay open meanwhile.
	memStreams = 50
	// memBound is the heap growth allowed with memPlayers players (about
	// 3 KB each in an informer: 60 MiB for as many real players).
	memBound = 16 << 20
)

var _ = Describe("The receiving tier's memory", func() {
	It("does not grow with 20,000 KidUsers in the cluster while 50 status streams follow theirs", func() {
		cfg := identity("kid-receiver", installClusterRole("config/rbac/receiver_role.yaml"))
		opts := h.OperatorOptions()
		opts.ReceiverOnly = true
		op, stop, err := testenv.StartOperator(cfg, opts)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(stop()).To(Succeed()) })

		const origin, key = "https://play.example.com", "relay-key"
		ns := newNamespace()
		Expect(h.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "demo-relay", Namespace: ns, Labels: kidv1.SecretLabels()}, StringData: map[string]string{"current": key}})).To(Succeed())
		_, err = h.NewProduct(ctx, ns, "demo", func(p *kidv1.KidProduct) {
			p.Spec.Browser = &kidv1.BrowserSpec{
				AllowedOrigins: []string{origin}, TokenSecretRef: kidv1.LocalObjectReference{Name: "demo-relay"},
				MaxStreams: ptr.To[int32](memStreams + 1),
			}
		})
		Expect(err).NotTo(HaveOccurred())
		base := "http://" + op.Receiver.Addr() + "/browser/" + ns + "/demo/status"

		// Half the streams follow a challenge (two watches each), half a
		// session (one watch), each of a player of its own.
		subject := func(i int) relaytoken.Subject {
			if i%2 == 0 {
				return relaytoken.Subject{Kind: relaytoken.KindChallenge, ID: fmt.Sprintf("c-%d", i)}
			}
			return relaytoken.Subject{Kind: relaytoken.KindSession, ID: fmt.Sprintf("s-%d", i)}
		}
		// The first stream registers the product's relay state and warms
		// the client; the streams' own cost is measured from there.
		warm, err := relaytoken.Mint([]byte(key), ns+"/demo", relaytoken.Subject{Kind: relaytoken.KindSession, ID: "warm"}, time.Now().Add(time.Hour))
		Expect(err).NotTo(HaveOccurred())
		Eventually(openStatusStream(base, origin, warm), "30s").Should(Receive())
		idle := liveHeap()
		streams := make([]<-chan string, memStreams)
		for i := range memStreams {
			tok, err := relaytoken.Mint([]byte(key), ns+"/demo", subject(i), time.Now().Add(time.Hour))
			Expect(err).NotTo(HaveOccurred())
			streams[i] = openStatusStream(base, origin, tok)
		}
		for i, data := range streams {
			Eventually(data, "30s").Should(Receive(ContainSubstring(`"consent":"None"`)), "stream %d", i)
		}
		before := liveHeap()
		perStream := (before - idle) / memStreams
		GinkgoWriter.Printf("heap per open status stream: %.1f KiB\n", float64(perStream)/(1<<10))

		// The cluster's players: status-less users of this product.
		fast := rest.CopyConfig(h.Config)
		fast.QPS, fast.Burst = -1, 0 // no client-side limit: the API server's pace
		admin, err := client.New(fast, client.Options{Scheme: scheme.Scheme, Mapper: h.Client.RESTMapper()})
		Expect(err).NotTo(HaveOccurred())
		began := time.Now()
		createPlayers(admin, ns, memPlayers)
		GinkgoWriter.Printf("created %d KidUsers in %s\n", memPlayers, time.Since(began).Round(time.Second))

		// The streams still follow their players: each challenge's user
		// appears, pending, and each session's user is deleted by k-ID.
		for i := range memStreams {
			s := subject(i)
			u := &kidv1.KidUser{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("followed-%d", i), Namespace: ns},
				Spec:       kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "demo"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: s.ID}},
			}
			if s.Kind == relaytoken.KindChallenge {
				u.Spec.Identity.Kind = kidv1.IdentityChallenge
			}
			Expect(admin.Create(ctx, u)).To(Succeed())
			if s.Kind == relaytoken.KindChallenge {
				u.Status.Consent = kidv1.ConsentStatus{State: kidv1.ConsentPending, ChallengeID: s.ID}
			} else {
				u.Status.Session = kidv1.SessionStatus{State: kidv1.SessionDeleted}
			}
			Expect(admin.Status().Update(ctx, u)).To(Succeed())
		}
		for i, data := range streams {
			want := `"consent":"Pending"`
			if subject(i).Kind == relaytoken.KindSession {
				want = `"session":"Deleted"`
			}
			Eventually(data, "30s").Should(Receive(And(ContainSubstring(`"user":"followed-`+fmt.Sprint(i)+`"`), ContainSubstring(want))), "stream %d", i)
		}

		grown := liveHeap() - before
		GinkgoWriter.Printf("receiver heap: %.1f MiB with 0 players and %d streams; growth with %d players: %.1f MiB (bound %d MiB)\n",
			float64(before)/(1<<20), memStreams, memPlayers, float64(grown)/(1<<20), memBound>>20)
		Expect(grown).To(BeNumerically("<", memBound), "the receiver's heap grew with the players")

		// The control: an informer on the namespace's KidUsers, as a
		// receiver had before, in this same process, grows the heap by
		// their size, which the measurement above would have seen.
		c, err := cache.New(h.Config, cache.Options{Scheme: scheme.Scheme, DefaultNamespaces: map[string]cache.Config{ns: {}}})
		Expect(err).NotTo(HaveOccurred())
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { _ = c.Start(cctx) }()
		_, err = c.GetInformer(cctx, &kidv1.KidUser{})
		Expect(err).NotTo(HaveOccurred())
		Expect(c.WaitForCacheSync(cctx)).To(BeTrue())
		cached := liveHeap() - before
		GinkgoWriter.Printf("heap growth with an informer on them: %.1f MiB\n", float64(cached)/(1<<20))
		Expect(cached).To(BeNumerically(">=", memBound))
		runtime.KeepAlive(c)
	})
})

// createPlayers creates n small KidUsers (a session each, no status) of the
// product "demo" in ns, from 16 goroutines.
func createPlayers(c client.Client, ns string, n int) {
	GinkgoHelper()
	notes := strings.Repeat("a note of the game's ", 32)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			defer GinkgoRecover()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				id := fmt.Sprintf("player-%05d", i)
				Expect(c.Create(ctx, &kidv1.KidUser{
					ObjectMeta: metav1.ObjectMeta{
						Name: kidv1.UserName("demo", kidv1.IdentitySession, id), Namespace: ns,
						// What a game may keep beside a player: it makes the
						// object about the size of a player with some history.
						Annotations: map[string]string{"games.example.com/notes": notes},
					},
					Spec: kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "demo"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: id}},
				})).To(Succeed())
			}
		})
	}
	wg.Wait()
}

// openStatusStream opens a status stream as a page of origin does and
// returns the data of its events (closed at the stream's end).
func openStatusStream(base, origin, tok string) <-chan string {
	GinkgoHelper()
	var resp *http.Response
	// 404 until the receiver's informer has seen the product.
	Eventually(func(g Gomega) {
		req, err := http.NewRequest(http.MethodGet, base, nil)
		g.Expect(err).NotTo(HaveOccurred())
		req.Header.Set("Origin", origin)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err = http.DefaultClient.Do(req)
		g.Expect(err).NotTo(HaveOccurred())
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
		}
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	}).Should(Succeed())
	DeferCleanup(resp.Body.Close)
	return testenv.StreamData(resp.Body)
}
