package operator_test

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/cmd/manager/operator"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/internal/scheme"
	"github.com/kid-operator/kid-operator/test/testenv"
)

var _ = Describe("The operator's identity", func() {
	It("runs under a user bound only to the generated ClusterRole, and folds a delivery end to end", func() {
		cfg := identity("kid-manager", installClusterRole("config/rbac/role.yaml"))
		op := start(cfg, nil)

		ns := newNamespace()
		p := newProduct(op, ns)
		Expect(h.WaitReady(ctx, p)).To(Succeed())
		a := deliver(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"})
		Expect(a.Status).To(Equal(http.StatusOK), a.String())
		consentGranted(p, "s-1")
		Eventually(func(g Gomega) {
			var list kidv1.KidEventList
			g.Expect(h.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			g.Expect(list.Items).To(HaveLen(1))
			g.Expect(list.Items[0].Status.Finished()).To(BeTrue(), "phase %q", list.Items[0].Status.Phase)
		}).Should(Succeed())

		// The role gets the Secrets products name, and lists none.
		as := clientFor(cfg)
		Expect(as.Get(ctx, client.ObjectKey{Namespace: ns, Name: "demo-webhook"}, &corev1.Secret{})).To(Succeed())
		Expect(apierrors.IsForbidden(as.List(ctx, &corev1.SecretList{}, client.InNamespace(ns)))).To(BeTrue())
	})

	It("holds none of 2,000 unrelated 10 KiB Secrets in memory", func() {
		// An administrator's identity: nothing but the operator's code
		// keeps it from caching every Secret.
		op := start(h.Config, nil)
		ns := newNamespace()
		p := newProduct(op, ns)
		Expect(h.WaitReady(ctx, p)).To(Succeed())
		Expect(deliver(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"}).Status).To(Equal(http.StatusOK))
		consentGranted(p, "s-1")

		before := liveHeap()
		other := newNamespace()
		createSecrets(other, 2000, 10<<10)
		// The operator keeps working after them (and an informer on
		// Secrets would have received them by now: see the control below).
		Expect(deliver(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-2", Status: kid.StatusPass, SessionID: "s-2"}).Status).To(Equal(http.StatusOK))
		consentGranted(p, "s-2")
		Consistently(func() int64 { return liveHeap() - before }, "3s", "500ms").Should(BeNumerically("<", 8<<20),
			"the heap grew as if it held the Secrets")
		GinkgoWriter.Printf("heap growth with 2,000 unrelated Secrets: %.1f MiB\n", float64(liveHeap()-before)/(1<<20))

		// The control: an informer on that namespace's Secrets, in this
		// same process, grows the heap by about their size (19.5 MiB of
		// data), which the measurement above would have seen.
		c, err := cache.New(h.Config, cache.Options{Scheme: scheme.Scheme, DefaultNamespaces: map[string]cache.Config{other: {}}})
		Expect(err).NotTo(HaveOccurred())
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { _ = c.Start(cctx) }()
		_, err = c.GetInformer(cctx, &corev1.Secret{})
		Expect(err).NotTo(HaveOccurred())
		Expect(c.WaitForCacheSync(cctx)).To(BeTrue())
		cached := liveHeap() - before
		GinkgoWriter.Printf("heap growth with an informer on them: %.1f MiB\n", float64(cached)/(1<<20))
		Expect(cached).To(BeNumerically(">=", 20<<20))
		runtime.KeepAlive(c)
	})

	It("serves only --watch-namespaces, under Roles there alone: a product elsewhere gets 404 and no reconcile", func() {
		watched, elsewhere := newNamespace(), newNamespace()
		name := "kid-namespaced-" + rand.String(5)
		user, err := h.Env.AddUser(envtest.User{Name: name}, nil)
		Expect(err).NotTo(HaveOccurred())
		role := &rbacv1.Role{}
		readConfig("config/rbac/namespaced/role.yaml", role)
		role.ObjectMeta = metav1.ObjectMeta{Name: "kid-operator-manager", Namespace: watched}
		Expect(h.Client.Create(ctx, role)).To(Succeed())
		Expect(h.Client.Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "kid-operator-manager", Namespace: watched},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: name}},
		})).To(Succeed())
		op := start(user.Config(), func(o *operator.Options) { o.WatchNamespaces = []string{watched} })

		served := newProduct(op, watched)
		Expect(h.WaitReady(ctx, served)).To(Succeed())
		Expect(deliver(served, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"}).Status).To(Equal(http.StatusOK))
		consentGranted(served, "s-1")

		unserved := newProduct(op, elsewhere)
		a := deliver(unserved, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"})
		Expect(a.Status).To(Equal(http.StatusNotFound), a.String())
		// A served product is reconciled within milliseconds, and its
		// Secrets re-read every SecretRecheck; this one, never.
		Consistently(func(g Gomega) {
			got := &kidv1.KidProduct{}
			g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(unserved.KidProduct), got)).To(Succeed())
			g.Expect(got.Status).To(Equal(kidv1.KidProductStatus{}))
		}, 2*testenv.SecretRecheck, "200ms").Should(Succeed())
		var list kidv1.KidEventList
		Expect(h.Client.List(ctx, &list, client.InNamespace(elsewhere))).To(Succeed())
		Expect(list.Items).To(BeEmpty())
	})

	It("runs the receiving tier under receiver_role.yaml alone: a signed delivery is stored, a rotated secret verifies, and it may do nothing else", func() {
		cfg := identity("kid-receiver", installClusterRole("config/rbac/receiver_role.yaml"))
		op := start(cfg, func(o *operator.Options) { o.ReceiverOnly = true })

		// No controller runs: the product is never Ready, and the receiver
		// needs only the product and its Secret.
		ns := newNamespace()
		p := newProduct(op, ns)
		Eventually(func() int {
			return deliver(p, kid.TestEvent, kidsim.Fields{ID: "t-1"}).Status
		}).Should(Equal(http.StatusOK), "once its informer has seen the product")
		var list kidv1.KidEventList
		Expect(h.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		Expect(list.Items).To(HaveLen(1))
		Expect(list.Items[0].Spec.Source).To(Equal(kidv1.SourceWebhook))

		// A rotation is seen without a watch: the first delivery under the
		// new key re-reads the Secret (a get).
		secret := &corev1.Secret{}
		Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "demo-webhook"}, secret)).To(Succeed())
		secret.Data = map[string][]byte{"next": []byte("the-new-secret")}
		Expect(h.Client.Update(ctx, secret)).To(Succeed())
		rotated := *p
		rotated.Secret = "the-new-secret"
		Eventually(func() int {
			return deliver(&rotated, kid.TestEvent, kidsim.Fields{ID: "t-2"}).Status
		}).Should(Equal(http.StatusOK))

		as := clientFor(cfg)
		Expect(as.Get(ctx, client.ObjectKeyFromObject(secret), &corev1.Secret{})).To(Succeed())
		forbidden := map[string]error{
			"list secrets":     as.List(ctx, &corev1.SecretList{}, client.InNamespace(ns)),
			"watch secrets":    watchErr(cfg, &corev1.SecretList{}, ns),
			"update a product": as.Update(ctx, p.KidProduct),
			"delete an event":  as.Delete(ctx, &list.Items[0]),
			"list events":      as.List(ctx, &kidv1.KidEventList{}, client.InNamespace(ns)),
			"create a user":    as.Create(ctx, &kidv1.KidUser{ObjectMeta: metav1.ObjectMeta{Name: "u", Namespace: ns}, Spec: kidv1.KidUserSpec{ProductRef: kidv1.LocalObjectReference{Name: "demo"}, Identity: kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: "s"}}}),
			"create a config":  as.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: ns}}),
		}
		for what, err := range forbidden {
			Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%s: %v", what, err)
		}
	})

	It("serves metrics over HTTPS off loopback, to a token allowed to read them and to nobody else", func() {
		cfg := identity("kid-manager", installClusterRole("config/rbac/role.yaml"), installClusterRole("config/rbac/metrics_auth_role.yaml"))
		port := freePort()
		start(cfg, func(o *operator.Options) {
			o.MetricsAddr = "0.0.0.0:" + port
			o.Webhook.Addr = "0" // controllers only, as config/manager runs them
		})

		ns := newNamespace()
		scraper := token(ns, "scraper", installClusterRole("config/rbac/metrics_reader_role.yaml"))
		stranger := token(ns, "stranger")
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			// A self-signed certificate, made at start.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the test checks who may read, not the certificate
		}}
		scrape := func(scheme, token string) (int, string) {
			req, err := http.NewRequest(http.MethodGet, scheme+"://127.0.0.1:"+port+"/metrics", nil)
			Expect(err).NotTo(HaveOccurred())
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := hc.Do(req)
			if err != nil {
				return 0, err.Error()
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(body)
		}
		Eventually(func() int { code, _ := scrape("https", scraper); return code }).Should(Equal(http.StatusOK))
		_, body := scrape("https", scraper)
		Expect(body).To(ContainSubstring("controller_runtime_reconcile_total"))
		code, _ := scrape("https", "")
		Expect(code).To(Equal(http.StatusUnauthorized))
		code, _ = scrape("https", stranger)
		Expect(code).To(Equal(http.StatusForbidden))
		code, body = scrape("http", scraper)
		Expect(body).NotTo(ContainSubstring("controller_runtime"), "no plain HTTP (answered %d)", code)
	})
})

// start starts an operator as cfg with the harness's options, adjusted by
// mutate, and stops it when the spec ends.
func start(cfg *rest.Config, mutate func(*operator.Options)) *operator.Operator {
	GinkgoHelper()
	opts := h.OperatorOptions()
	if mutate != nil {
		mutate(&opts)
	}
	op, stop, err := testenv.StartOperator(cfg, opts)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(stop()).To(Succeed()) })
	return op
}

func newNamespace() string {
	GinkgoHelper()
	ns, err := h.NewNamespace(ctx)
	Expect(err).NotTo(HaveOccurred())
	return ns
}

// newProduct makes the product "demo" and its Secret in ns, delivered to
// through op's receiver.
func newProduct(op *operator.Operator, ns string) *testenv.Product {
	GinkgoHelper()
	p, err := h.NewProduct(ctx, ns, "demo", nil)
	Expect(err).NotTo(HaveOccurred())
	p.URL = "http://" + op.Receiver.Addr() + kidv1.WebhookPath(ns, "demo")
	return p
}

// deliver builds an event with the simulator and delivers it, signed.
func deliver(p *testenv.Product, eventType string, f kidsim.Fields) kidsim.Attempt {
	GinkgoHelper()
	body, err := kidsim.Build(eventType, f)
	Expect(err).NotTo(HaveOccurred())
	return p.Sender().Deliver(ctx, body, strconv.FormatInt(h.Clock.Now().Unix(), 10), kid.Sign)
}

// consentGranted waits until the session's KidUser shows the consent.
func consentGranted(p *testenv.Product, session string) {
	GinkgoHelper()
	key := client.ObjectKey{Namespace: p.Namespace, Name: kidv1.UserName(p.Name, kidv1.IdentitySession, session)}
	Eventually(func(g Gomega) {
		u := &kidv1.KidUser{}
		g.Expect(h.Client.Get(ctx, key, u)).To(Succeed())
		g.Expect(u.Status.Consent.State).To(Equal(kidv1.ConsentGranted))
	}).Should(Succeed())
}

// readConfig reads one object from a file of the repository.
func readConfig(path string, into any) {
	GinkgoHelper()
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), path))
	Expect(err).NotTo(HaveOccurred())
	Expect(yaml.Unmarshal(raw, into)).To(Succeed())
}

// installClusterRole creates the ClusterRole of a file under a unique name,
// and returns the name.
func installClusterRole(path string) string {
	GinkgoHelper()
	role := &rbacv1.ClusterRole{}
	readConfig(path, role)
	Expect(role.Kind).To(Equal("ClusterRole"), path)
	role.ObjectMeta = metav1.ObjectMeta{GenerateName: "kid-" + role.Name + "-"}
	Expect(h.Client.Create(ctx, role)).To(Succeed())
	return role.Name
}

// identity makes a user (its name prefixed, made unique) bound to the
// cluster roles and to nothing else, and returns its config.
func identity(prefix string, clusterRoles ...string) *rest.Config {
	GinkgoHelper()
	name := prefix + "-" + rand.String(5)
	user, err := h.Env.AddUser(envtest.User{Name: name}, nil)
	Expect(err).NotTo(HaveOccurred())
	for _, role := range clusterRoles {
		Expect(h.Client.Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: name}},
		})).To(Succeed())
	}
	return user.Config()
}

func clientFor(cfg *rest.Config) client.Client {
	GinkgoHelper()
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme, Mapper: h.Client.RESTMapper()})
	Expect(err).NotTo(HaveOccurred())
	return c
}

// watchErr is the error of a watch on list's kind in ns, as cfg.
func watchErr(cfg *rest.Config, list client.ObjectList, ns string) error {
	w, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme.Scheme, Mapper: h.Client.RESTMapper()})
	if err != nil {
		return err
	}
	watch, err := w.Watch(ctx, list, client.InNamespace(ns))
	if err == nil {
		watch.Stop()
	}
	return err
}

// token makes a ServiceAccount in ns bound to the cluster roles and
// returns a token of it.
func token(ns, name string, clusterRoles ...string) string {
	GinkgoHelper()
	Expect(h.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}})).To(Succeed())
	for _, role := range clusterRoles {
		Expect(h.Client.Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "kid-" + name + "-"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
		})).To(Succeed())
	}
	cs, err := kubernetes.NewForConfig(h.Config)
	Expect(err).NotTo(HaveOccurred())
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)},
	}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	return tr.Status.Token
}

// createSecrets creates n Secrets of size bytes of random data in ns.
func createSecrets(ns string, n, size int) {
	GinkgoHelper()
	names := make(chan int, n)
	for i := range n {
		names <- i
	}
	close(names)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			defer GinkgoRecover()
			for i := range names {
				data := make([]byte, size)
				_, _ = crand.Read(data)
				Expect(h.Client.Create(ctx, &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("unrelated-%04d", i), Namespace: ns},
					Data:       map[string][]byte{"blob": data},
				})).To(Succeed())
			}
		})
	}
	wg.Wait()
}

// liveHeap is the heap in use after a full collection.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func freePort() string {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	Expect(err).NotTo(HaveOccurred())
	return port
}
