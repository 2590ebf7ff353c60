package controllers_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/controllers"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// target is a local HTTP endpoint that answers from a script and records
// every delivery.
type target struct {
	*httptest.Server
	mu      sync.Mutex
	answers []int // answered in order; 200 once they run out
	retry   string
	got     []delivery
}

type delivery struct {
	id, signature string
	status        int
	at            time.Time
	body          string
}

func newTarget(answers ...int) *target { return newTargetAt("127.0.0.1:0", answers...) }

// newTargetAt is newTarget listening on addr.
func newTargetAt(addr string, answers ...int) *target {
	GinkgoHelper()
	t := &target{answers: answers}
	t.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.mu.Lock()
		defer t.mu.Unlock()
		status := http.StatusOK
		if len(t.answers) > 0 {
			status, t.answers = t.answers[0], t.answers[1:]
		}
		if t.retry != "" && status != http.StatusOK {
			w.Header().Set("Retry-After", t.retry)
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		t.got = append(t.got, delivery{id: r.Header.Get("webhook-id"), signature: r.Header.Get("webhook-signature"), status: status, at: time.Now(), body: string(body)})
		w.WriteHeader(status)
	}))
	l, err := net.Listen("tcp", addr)
	Expect(err).NotTo(HaveOccurred())
	Expect(t.Listener.Close()).To(Succeed())
	t.Listener = l
	t.Start()
	DeferCleanup(t.Close)
	return t
}

func (t *target) deliveries() []delivery {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]delivery(nil), t.got...)
}

// succeededPerID counts the deliveries answered 2xx, per webhook-id.
func (t *target) succeededPerID() map[string]int {
	out := map[string]int{}
	for _, d := range t.deliveries() {
		if d.status == http.StatusOK {
			out[d.id]++
		}
	}
	return out
}

func httpAction(p *testenv.Product, name, url string, mutate func(*kidv1.KidAction)) *kidv1.KidAction {
	GinkgoHelper()
	return createAction(&kidv1.KidAction{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.Namespace},
		Spec: kidv1.KidActionSpec{
			EventTypes: []string{kid.ChallengeStateChange},
			HTTP:       &kidv1.HTTPAction{URL: url, MaxAttempts: 3},
		},
	}, mutate)
}

// createAction applies mutate (if any) to a, creates it, and waits until its
// generation is reconciled.
func createAction(a *kidv1.KidAction, mutate func(*kidv1.KidAction)) *kidv1.KidAction {
	GinkgoHelper()
	if mutate != nil {
		mutate(a)
	}
	Expect(h.Client.Create(ctx, a)).To(Succeed())
	Eventually(func(g Gomega) {
		got := &kidv1.KidAction{}
		g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(a), got)).To(Succeed())
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
	}).Should(Succeed())
	return a
}

// runOf waits until the event about challenge c has a run of action that
// satisfies check.
func runOf(p *testenv.Product, c, action string, check func(Gomega, kidv1.EventPhase, kidv1.ActionRunStatus), timeout time.Duration) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		var found bool
		for _, e := range events(p.Namespace) {
			if e.Spec.Subject.ChallengeID != c {
				continue
			}
			for _, run := range e.Status.Actions {
				if run.Name == action {
					found = true
					check(g, e.Status.Phase, run)
				}
			}
		}
		g.Expect(found).To(BeTrue(), "no run of %s for %s yet", action, c)
	}, timeout, "100ms").Should(Succeed())
}

var _ = Describe("KidAction", func() {
	var p *testenv.Product
	BeforeEach(func() { p = newProduct(nil) })

	It("runs only for matching products, types and filters, and signs with Standard Webhooks headers", func() {
		t := newTarget()
		Expect(h.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: p.Namespace, Labels: kidv1.SecretLabels()}, StringData: map[string]string{"secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZg=="}})).To(Succeed())
		httpAction(p, "granted", t.URL, func(a *kidv1.KidAction) {
			a.Spec.Products = []string{"demo"}
			a.Spec.Filter = `event.data.status == "PASS" && user.consent.state == "Granted"`
			a.Spec.HTTP.SigningSecretRef = &kidv1.SecretKeySelector{Name: "hook", Key: "secret"}
		})
		httpAction(p, "other-product", t.URL, func(a *kidv1.KidAction) { a.Spec.Products = []string{"not-demo"} })
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-in", Status: kid.StatusInProgress})
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-ok", Status: kid.StatusPass, SessionID: "s-ok"})
		send(p, kid.SessionDelete, kidsim.Fields{SessionID: "s-x"})

		runOf(p, "c-ok", "granted", func(g Gomega, phase kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
			g.Expect(run.Attempts).To(BeEquivalentTo(1))
			g.Expect(run.CompletedAt).NotTo(BeNil())
			g.Expect(phase).To(Equal(kidv1.EventSucceeded))
		}, 10*time.Second)
		allEventsFinished(p.Namespace)
		Consistently(t.deliveries, "500ms").Should(HaveLen(1))
		d := t.deliveries()[0]
		Expect(d.signature).To(HavePrefix("v1,"))
		Expect(d.id).To(HavePrefix("kid_"))
		for _, e := range events(p.Namespace) {
			if e.Spec.Subject.ChallengeID != "c-ok" {
				Expect(e.Status.Actions).To(BeEmpty(), e.Name)
				Expect(e.Status.Phase).To(Equal(kidv1.EventApplied))
			}
		}
	})

	It("reports a filter that does not compile as InvalidFilter, and records skipped runs", func() {
		a := httpAction(p, "broken", "http://127.0.0.1:1/", func(a *kidv1.KidAction) { a.Spec.Filter = `event.data.status ==` })
		got := &kidv1.KidAction{}
		Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(a), got)).To(Succeed())
		ready := meta.FindStatusCondition(got.Status.Conditions, kidv1.ReadyCondition)
		Expect(ready).NotTo(BeNil())
		Expect(ready.Status).To(Equal(metav1.ConditionFalse))
		Expect(ready.Reason).To(Equal(kidv1.InvalidFilterReason))
		Expect(ready.Message).To(ContainSubstring("Syntax error"))

		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		runOf(p, "c-1", "broken", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSkipped))
			g.Expect(run.LastError).To(ContainSubstring("Syntax error"))
		}, 5*time.Second)
	})

	It("retries a failure with backoff, then succeeds", func() {
		t := newTarget(http.StatusInternalServerError, http.StatusBadGateway)
		httpAction(p, "flaky", t.URL, nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		runOf(p, "c-1", "flaky", func(g Gomega, phase kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
			g.Expect(run.Attempts).To(BeEquivalentTo(3))
			g.Expect(phase).To(Equal(kidv1.EventSucceeded))
		}, 15*time.Second)
		d := t.deliveries()
		Expect(d).To(HaveLen(3))
		Expect(d[0].id).To(Equal(d[2].id), "every attempt carries the same webhook-id")
		// Backoff: about 1 s, then about 2 s (±20 %).
		Expect(d[1].at.Sub(d[0].at)).To(BeNumerically(">=", 800*time.Millisecond))
		Expect(d[2].at.Sub(d[1].at)).To(BeNumerically(">=", 1600*time.Millisecond))
	})

	It("fails for good after maxAttempts, and at once on a permanent 4xx", func() {
		t := newTarget(http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusServiceUnavailable)
		httpAction(p, "down", t.URL, func(a *kidv1.KidAction) { a.Spec.HTTP.MaxAttempts = 2 })
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		runOf(p, "c-1", "down", func(g Gomega, phase kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunFailed))
			g.Expect(run.Attempts).To(BeEquivalentTo(2))
			g.Expect(run.LastError).To(ContainSubstring("503"))
			g.Expect(phase).To(Equal(kidv1.EventFailed))
		}, 10*time.Second)

		gone := newTarget(http.StatusGone)
		httpAction(p, "gone", gone.URL, nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-2", Status: kid.StatusPass})
		runOf(p, "c-2", "gone", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunFailed))
			g.Expect(run.Attempts).To(BeEquivalentTo(1))
		}, 10*time.Second)
	})

	It("honours Retry-After", func() {
		t := newTarget(http.StatusTooManyRequests)
		t.retry = "3"
		httpAction(p, "limited", t.URL, nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		runOf(p, "c-1", "limited", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
		}, 15*time.Second)
		d := t.deliveries()
		Expect(d).To(HaveLen(2))
		Expect(d[1].at.Sub(d[0].at)).To(BeNumerically(">=", 3*time.Second))
	})

	It("has its effect once per event and action when k-ID delivers three times", func() {
		t := newTarget()
		httpAction(p, "once", t.URL, nil)
		body, err := kidsim.Build(kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"})
		Expect(err).NotTo(HaveOccurred())
		for i := range 3 {
			ts := strconv.FormatInt(h.Clock.Now().Add(time.Duration(i)*5*time.Second).Unix(), 10)
			Expect(p.Sender().Deliver(ctx, body, ts, kid.Sign).Status).To(Equal(200))
		}
		allEventsFinished(p.Namespace)
		Expect(events(p.Namespace)).To(HaveLen(1))
		Eventually(t.succeededPerID).Should(HaveLen(1))
		Consistently(t.succeededPerID, "1s").Should(Equal(map[string]int{t.deliveries()[0].id: 1}))
	})

	It("creates a resource once, with a deterministic name, as its ServiceAccount", func() {
		serviceAccountMay(p.Namespace, "kid-actions", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}})
		tmpl := `{"apiVersion":"v1","kind":"ConfigMap","data":{"session":"{{.user.sessionId}}","event":"{{.event.type}}"}}`
		a := &kidv1.KidAction{
			ObjectMeta: metav1.ObjectMeta{Name: "erase-job", Namespace: p.Namespace},
			Spec: kidv1.KidActionSpec{
				EventTypes: []string{kid.SessionDelete},
				Resource:   &kidv1.ResourceAction{Template: apiextensionsv1.JSON{Raw: []byte(tmpl)}, ServiceAccountName: "kid-actions"},
			},
		}
		Expect(h.Client.Create(ctx, a)).To(Succeed())
		body, err := kidsim.Build(kid.SessionDelete, kidsim.Fields{SessionID: "s-9"})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() int { return p.Sender().Deliver(ctx, body, nowTS(), kid.Sign).Status }).Should(Equal(200))
		Expect(p.Sender().Deliver(ctx, body, nowTS(), kid.Sign).Status).To(Equal(200))
		allEventsFinished(p.Namespace)

		Eventually(func(g Gomega) {
			var cms corev1.ConfigMapList
			g.Expect(h.Client.List(ctx, &cms, client.InNamespace(p.Namespace), client.MatchingLabels{actions.ActionLabel: "erase-job"})).To(Succeed())
			g.Expect(cms.Items).To(HaveLen(1))
			g.Expect(cms.Items[0].Data).To(Equal(map[string]string{"session": "s-9", "event": kid.SessionDelete}))
		}).Should(Succeed())
	})

	It("fails clearly when the resource's kind is not served", func() {
		serviceAccountMay(p.Namespace, "kid-actions", rbacv1.PolicyRule{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"create"}})
		a := &kidv1.KidAction{
			ObjectMeta: metav1.ObjectMeta{Name: "no-such-kind", Namespace: p.Namespace},
			Spec: kidv1.KidActionSpec{
				EventTypes: []string{kid.SessionDelete},
				Resource:   &kidv1.ResourceAction{Template: apiextensionsv1.JSON{Raw: []byte(`{"apiVersion":"example.com/v1","kind":"Nope"}`)}, ServiceAccountName: "kid-actions"},
			},
		}
		Expect(h.Client.Create(ctx, a)).To(Succeed())
		Eventually(func() int {
			body, _ := kidsim.Build(kid.SessionDelete, kidsim.Fields{SessionID: "s-8"})
			return p.Sender().Deliver(ctx, body, nowTS(), kid.Sign).Status
		}).Should(Equal(200))
		Eventually(func(g Gomega) {
			for _, e := range events(p.Namespace) {
				g.Expect(e.Status.Actions).To(ConsistOf(And(HaveField("Name", "no-such-kind"), HaveField("Phase", kidv1.RunFailed), HaveField("LastError", ContainSubstring("Nope")))))
			}
		}, 10*time.Second).Should(Succeed())
	})

	It("records a dry run and does nothing", func() {
		t := newTarget()
		httpAction(p, "dry", t.URL, func(a *kidv1.KidAction) { a.Spec.DryRun = true })
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		runOf(p, "c-1", "dry", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
			g.Expect(run.Message).To(ContainSubstring("dry run: would POST to " + t.URL))
		}, 5*time.Second)
		Consistently(t.deliveries, "500ms").Should(BeEmpty())
	})

	It("runs no actions for a suspended product", func() {
		suspended, err := h.NewProduct(ctx, p.Namespace, "paused", func(kp *kidv1.KidProduct) { kp.Spec.Suspend = true })
		Expect(err).NotTo(HaveOccurred())
		Expect(h.WaitReady(ctx, suspended)).To(Succeed())
		t := newTarget()
		httpAction(p, "all", t.URL, nil)
		send(suspended, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		allEventsFinished(p.Namespace)
		Consistently(t.deliveries, "500ms").Should(BeEmpty())
	})

	It("re-runs the failed actions of an event when asked to redrive", func() {
		t := newTarget(http.StatusBadRequest)
		httpAction(p, "fixme", t.URL, nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		runOf(p, "c-1", "fixme", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunFailed))
		}, 5*time.Second)
		e := events(p.Namespace)[0]
		patch := client.MergeFrom(e.DeepCopy())
		e.Annotations[kidv1.RedriveAnnotation] = "please"
		Expect(h.Client.Patch(ctx, &e, patch)).To(Succeed())
		runOf(p, "c-1", "fixme", func(g Gomega, phase kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
			g.Expect(phase).To(Equal(kidv1.EventSucceeded))
		}, 5*time.Second)
		Eventually(func(g Gomega) {
			got := &kidv1.KidEvent{}
			g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(&e), got)).To(Succeed())
			g.Expect(got.Annotations).NotTo(HaveKey(kidv1.RedriveAnnotation))
		}).Should(Succeed())
		Expect(t.deliveries()).To(HaveLen(2))
	})
})

var _ = Describe("KidAction across a restart of the operator", Ordered, func() {
	It("delivers each pair once in effect when the manager restarts between attempts", func() {
		p := newProduct(nil)
		t := newTarget(http.StatusInternalServerError)
		httpAction(p, "survives", t.URL, nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		runOf(p, "c-1", "survives", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Attempts).To(BeEquivalentTo(1))
			g.Expect(run.NextAttemptAt).NotTo(BeNil())
		}, 5*time.Second)

		Expect(h.RestartOperator()).To(Succeed())

		runOf(p, "c-1", "survives", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
			g.Expect(run.Attempts).To(BeEquivalentTo(2))
		}, 15*time.Second)
		Consistently(t.succeededPerID, "1s").Should(HaveLen(1))
		Expect(t.succeededPerID()).To(ContainElement(1))
		Expect(t.deliveries()).To(HaveLen(2))
	})
})

var _ = Describe("KidAction permissions", func() {
	It("asks as the action's ServiceAccount, with kid-operator's own role only, and is Ready once the ServiceAccount is granted", func() {
		p := newProduct(nil)
		// A manager identity with kid-operator's own permissions only.
		user, err := h.Env.AddUser(envtest.User{Name: "kid-operator-restricted"}, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(h.Client.Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "kid-restricted-"},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: operatorRole()},
			Subjects:   []rbacv1.Subject{{Kind: "User", Name: "kid-operator-restricted"}},
		})).To(Succeed())
		restricted, err := client.New(user.Config(), client.Options{Scheme: h.Client.Scheme(), Mapper: h.Client.RESTMapper()})
		Expect(err).NotTo(HaveOccurred())
		Expect(allowed(restricted, p.Namespace, "", "configmaps")).To(BeFalse(), "kid-operator itself needs no create rights on what actions create")

		Expect(h.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kid-actions", Namespace: p.Namespace}})).To(Succeed())
		a := &kidv1.KidAction{
			ObjectMeta: metav1.ObjectMeta{Name: "make-cm", Namespace: p.Namespace},
			Spec: kidv1.KidActionSpec{Resource: &kidv1.ResourceAction{
				Template: apiextensionsv1.JSON{Raw: []byte(`{"apiVersion":"v1","kind":"ConfigMap"}`)}, ServiceAccountName: "kid-actions",
			}},
		}
		Expect(h.Client.Create(ctx, a)).To(Succeed())
		r := &controllers.KidActionReconciler{
			Client: restricted, Filters: actions.NewFilters(),
			Impersonator: actions.NewImpersonator(user.Config(), client.Options{Scheme: h.Client.Scheme(), Mapper: h.Client.RESTMapper()}, ""),
		}
		reason := func() string {
			GinkgoHelper()
			_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(a)})
			Expect(err).NotTo(HaveOccurred())
			got := &kidv1.KidAction{}
			Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(a), got)).To(Succeed())
			c := meta.FindStatusCondition(got.Status.Conditions, kidv1.ReadyCondition)
			Expect(c).NotTo(BeNil())
			if c.Status == metav1.ConditionFalse {
				Expect(c.Message).To(ContainSubstring("ServiceAccount kid-actions may not create configmaps"))
			}
			return c.Reason
		}
		Expect(reason()).To(Equal(kidv1.MissingPermissionReason))

		serviceAccountMay(p.Namespace, "kid-actions", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}})
		Eventually(reason).Should(Equal(kidv1.SucceededReason))
	})
})

var _ = Describe("KidAction authors reach no further than their namespace's ServiceAccounts", func() {
	var p *testenv.Product
	BeforeEach(func() { p = newProduct(nil) })

	configMap := `{"apiVersion":"v1","kind":"ConfigMap","data":{"session":"{{.user.sessionId}}"}}`
	job := `{"apiVersion":"batch/v1","kind":"Job","spec":{"template":{"spec":{"restartPolicy":"Never","containers":[{"name":"erase","image":"busybox:1.36"}]}}}}`

	It("creates nothing for a resource action without a ServiceAccount", func() {
		// The operator runs as an admin here: without impersonation it
		// would create anything.
		a := resourceAction(p, "no-sa", configMap, "")
		ready := readyCondition(a)
		Expect(ready.Status).To(Equal(metav1.ConditionFalse))
		Expect(ready.Reason).To(Equal(kidv1.ServiceAccountRequiredReason))
		Expect(ready.Message).To(ContainSubstring("serviceAccountName is required"))
		Expect(isStalled(a)).To(BeTrue())

		send(p, kid.SessionDelete, kidsim.Fields{SessionID: "s-1"})
		runsOf(p.Namespace, "no-sa", func(g Gomega, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunFailed))
			g.Expect(run.Attempts).To(BeEquivalentTo(1), "no retry: the user must fix it")
			g.Expect(run.LastError).To(ContainSubstring("serviceAccountName is required"))
		})
		Expect(objectsOf(p.Namespace, "no-sa", &corev1.ConfigMapList{})).To(BeZero())
	})

	It("creates what its ServiceAccount may create, and is MissingPermission for what it may not", func() {
		serviceAccountMay(p.Namespace, "cm-only", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}})
		cm := resourceAction(p, "make-cm", configMap, "cm-only")
		Expect(readyCondition(cm).Reason).To(Equal(kidv1.SucceededReason))
		j := resourceAction(p, "make-job", job, "cm-only")
		ready := readyCondition(j)
		Expect(ready.Status).To(Equal(metav1.ConditionFalse))
		Expect(ready.Reason).To(Equal(kidv1.MissingPermissionReason))
		Expect(ready.Message).To(ContainSubstring("ServiceAccount cm-only may not create jobs.batch in namespace " + p.Namespace))
		Expect(isStalled(j)).To(BeTrue())

		send(p, kid.SessionDelete, kidsim.Fields{SessionID: "s-2"})
		runsOf(p.Namespace, "make-cm", func(g Gomega, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
			g.Expect(run.Message).To(ContainSubstring("as ServiceAccount cm-only"))
		})
		runsOf(p.Namespace, "make-job", func(g Gomega, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunFailed))
			g.Expect(run.LastError).To(ContainSubstring("ServiceAccount cm-only may not create Job in " + p.Namespace))
		})
		Expect(objectsOf(p.Namespace, "make-cm", &corev1.ConfigMapList{})).To(Equal(1))
		Expect(objectsOf(p.Namespace, "make-job", &batchv1.JobList{})).To(BeZero())
	})

	It("refuses a cluster-scoped template, whatever its ServiceAccount may do", func() {
		// Even a ServiceAccount that may create Namespaces and
		// ClusterRoles cluster-wide: an action stays in its namespace.
		serviceAccountMay(p.Namespace, "powerful")
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "kid-powerful-"},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "powerful", Namespace: p.Namespace}},
		}
		Expect(h.Client.Create(ctx, crb)).To(Succeed())
		DeferCleanup(func() { Expect(h.Client.Delete(ctx, crb)).To(Succeed()) })

		ns := resourceAction(p, "make-ns", `{"apiVersion":"v1","kind":"Namespace"}`, "powerful")
		role := resourceAction(p, "make-role", `{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","rules":[{"apiGroups":["*"],"resources":["*"],"verbs":["*"]}]}`, "powerful")
		for _, a := range []*kidv1.KidAction{ns, role} {
			ready := readyCondition(a)
			Expect(ready.Reason).To(Equal(kidv1.InvalidTemplateReason), a.Name)
			Expect(ready.Message).To(ContainSubstring("is cluster-scoped"))
			Expect(isStalled(a)).To(BeTrue())
		}

		send(p, kid.SessionDelete, kidsim.Fields{SessionID: "s-3"})
		for _, name := range []string{"make-ns", "make-role"} {
			runsOf(p.Namespace, name, func(g Gomega, run kidv1.ActionRunStatus) {
				g.Expect(run.Phase).To(Equal(kidv1.RunFailed))
				g.Expect(run.LastError).To(ContainSubstring("is cluster-scoped"))
			})
		}
		Expect(objectsOf("", "make-ns", &corev1.NamespaceList{})).To(BeZero())
		Expect(objectsOf("", "make-role", &rbacv1.ClusterRoleList{})).To(BeZero())
	})

	It("reports a template that could run away as InvalidTemplate, and its runs fail at once", func() {
		t := newTarget()
		a := httpAction(p, "loops", t.URL, func(a *kidv1.KidAction) { a.Spec.HTTP.BodyTemplate = `{{range 1000000000}}x{{end}}` })
		ready := readyCondition(a)
		Expect(ready.Reason).To(Equal(kidv1.InvalidTemplateReason))
		Expect(ready.Message).To(ContainSubstring("range is not allowed"))
		Expect(isStalled(a)).To(BeTrue())

		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		runOf(p, "c-1", "loops", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunFailed))
			g.Expect(run.LastError).To(ContainSubstring("range is not allowed"))
		}, 5*time.Second)
		Expect(t.deliveries()).To(BeEmpty())
	})

	It("holds templates that would keep a gigabyte in variables to their size and render budget, dry or not", func() {
		// {{$a:=json .}} writes nothing and keeps what json returned
		// until the render ends: 1 GiB of them in a resource template,
		// 16 KiB of them in a body.
		declarations := func(n int) string { return strings.Repeat(`{{$a:=json .}}`, n) }
		serviceAccountMay(p.Namespace, "cm-maker", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}})
		huge := `{"apiVersion":"v1","kind":"ConfigMap","data":{"k":"` + declarations((1<<30)/(1<<16)) + `"}}`
		for _, dry := range []bool{false, true} {
			name := map[bool]string{false: "hoard", true: "hoard-dry"}[dry]
			a := &kidv1.KidAction{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.Namespace},
				Spec: kidv1.KidActionSpec{
					EventTypes: []string{kid.SessionDelete},
					DryRun:     dry,
					Resource:   &kidv1.ResourceAction{Template: apiextensionsv1.JSON{Raw: []byte(huge)}, ServiceAccountName: "cm-maker"},
				},
			}
			Expect(h.Client.Create(ctx, a)).To(Succeed())
			ready := readyCondition(a)
			Expect(ready.Reason).To(Equal(kidv1.InvalidTemplateReason), name)
			Expect(ready.Message).To(ContainSubstring("more than the 32768 allowed"))
		}
		t := newTarget()
		body := httpAction(p, "hoard-body", t.URL, func(a *kidv1.KidAction) {
			a.Spec.EventTypes = []string{kid.SessionDelete}
			a.Spec.HTTP.BodyTemplate = declarations(actions.MaxBodyTemplateBytes / 14)
		})
		Expect(readyCondition(body).Reason).To(Equal(kidv1.SucceededReason), "allowed: only its render is too large")

		// Every run ends, none with anything rendered.
		send(p, kid.SessionDelete, kidsim.Fields{SessionID: "s-hoard", ProductID: 1})
		runsOf(p.Namespace, "hoard", func(g Gomega, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunFailed))
			g.Expect(run.LastError).To(ContainSubstring("more than the 32768 allowed"))
		})
		runsOf(p.Namespace, "hoard-dry", func(g Gomega, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
			g.Expect(run.Message).To(ContainSubstring("dry run: would create nothing: template is"))
		})
		runsOf(p.Namespace, "hoard-body", func(g Gomega, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunFailed))
			g.Expect(run.LastError).To(ContainSubstring("the render is too large"))
		})
		Expect(objectsOf(p.Namespace, "hoard", &corev1.ConfigMapList{})).To(BeZero())
		Expect(t.deliveries()).To(BeEmpty())
	})

	It("refuses a filter that would cost too much as InvalidFilter", func() {
		t := newTarget()
		nested := "true"
		for i := range 8 {
			nested = fmt.Sprintf("[0,1,2,3,4,5,6,7,8,9].all(v%d, %s)", i, nested)
		}
		a := httpAction(p, "costly", t.URL, func(a *kidv1.KidAction) { a.Spec.Filter = nested })
		ready := readyCondition(a)
		Expect(ready.Reason).To(Equal(kidv1.InvalidFilterReason))
		Expect(ready.Message).To(ContainSubstring("filter is too expensive"))
	})

	It("forgets the compiled filter of a deleted action", func() {
		filters := actions.NewFilters()
		r := &controllers.KidActionReconciler{Client: h.Client, Filters: filters}
		a := httpAction(p, "short-lived", "http://127.0.0.1:1/", func(a *kidv1.KidAction) { a.Spec.Filter = `event.type == "Test"` })
		req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(a)}
		_, err := r.Reconcile(ctx, req)
		Expect(err).NotTo(HaveOccurred())
		Expect(filters.Len()).To(Equal(1))

		Expect(h.Client.Delete(ctx, a)).To(Succeed())
		Eventually(func() bool { return apierrors.IsNotFound(h.Client.Get(ctx, req.NamespacedName, &kidv1.KidAction{})) }).Should(BeTrue())
		_, err = r.Reconcile(ctx, req)
		Expect(err).NotTo(HaveOccurred())
		Expect(filters.Len()).To(BeZero())
	})
})

// resourceAction creates a resource action for Session.Delete events, run as
// the ServiceAccount sa ("" for none), and waits until it is reconciled.
func resourceAction(p *testenv.Product, name, tmpl, sa string) *kidv1.KidAction {
	GinkgoHelper()
	a := &kidv1.KidAction{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.Namespace},
		Spec: kidv1.KidActionSpec{
			EventTypes: []string{kid.SessionDelete},
			Resource:   &kidv1.ResourceAction{Template: apiextensionsv1.JSON{Raw: []byte(tmpl)}, ServiceAccountName: sa},
		},
	}
	Expect(h.Client.Create(ctx, a)).To(Succeed())
	return a
}

// readyCondition waits until the action's generation is reconciled and
// returns its Ready condition.
func readyCondition(a *kidv1.KidAction) metav1.Condition {
	GinkgoHelper()
	var ready metav1.Condition
	Eventually(func(g Gomega) {
		got := &kidv1.KidAction{}
		g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(a), got)).To(Succeed())
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		c := meta.FindStatusCondition(got.Status.Conditions, kidv1.ReadyCondition)
		g.Expect(c).NotTo(BeNil())
		ready = *c
	}).Should(Succeed())
	return ready
}

func isStalled(a *kidv1.KidAction) bool {
	GinkgoHelper()
	got := &kidv1.KidAction{}
	Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(a), got)).To(Succeed())
	return meta.IsStatusConditionTrue(got.Status.Conditions, kidv1.StalledCondition)
}

// runsOf waits until every event of the namespace has a run of action and
// each satisfies check.
func runsOf(ns, action string, check func(Gomega, kidv1.ActionRunStatus)) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		list := events(ns)
		g.Expect(list).NotTo(BeEmpty())
		for _, e := range list {
			var found bool
			for _, run := range e.Status.Actions {
				if run.Name == action {
					found = true
					check(g, run)
				}
			}
			g.Expect(found).To(BeTrue(), "no run of %s on %s yet", action, e.Name)
		}
	}).Should(Succeed())
}

// objectsOf counts the objects a resource action made (in ns, or cluster
// wide for ""), by its label.
func objectsOf(ns, action string, list client.ObjectList) int {
	GinkgoHelper()
	Expect(h.Client.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{actions.ActionLabel: action})).To(Succeed())
	return meta.LenList(list)
}

// serviceAccountMay creates the ServiceAccount sa in ns, as a user would
// (impersonation does not need it), grants it rules with a Role and a
// RoleBinding, and waits until the API server's authorizer agrees.
func serviceAccountMay(ns, sa string, rules ...rbacv1.PolicyRule) {
	GinkgoHelper()
	err := h.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}})
	Expect(client.IgnoreAlreadyExists(err)).To(Succeed())
	if len(rules) == 0 {
		return
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{GenerateName: sa + "-", Namespace: ns}, Rules: rules}
	Expect(h.Client.Create(ctx, role)).To(Succeed())
	Expect(h.Client.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{GenerateName: sa + "-", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}},
	})).To(Succeed())
	as, err := actions.NewImpersonator(h.Config, client.Options{Scheme: h.Client.Scheme(), Mapper: h.Client.RESTMapper()}, "").Client(ns, sa)
	Expect(err).NotTo(HaveOccurred())
	r := rules[0]
	Eventually(func() bool { return allowedTo(as, ns, r.Verbs[0], r.APIGroups[0], r.Resources[0]) }).Should(BeTrue())
}

// allowed asks, as c's identity, whether it may create group/resource in ns.
func allowed(c client.Client, ns, group, resource string) bool {
	GinkgoHelper()
	return allowedTo(c, ns, "create", group, resource)
}

// allowedTo asks, as c's identity, whether it may verb group/resource in ns.
func allowedTo(c client.Client, ns, verb, group, resource string) bool {
	GinkgoHelper()
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: group, Resource: resource},
	}}
	Expect(c.Create(ctx, review)).To(Succeed())
	return review.Status.Allowed
}

// operatorRole installs the ClusterRole generated from the RBAC markers
// (config/rbac/role.yaml) under a unique name, and returns the name.
func operatorRole() string {
	GinkgoHelper()
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "role.yaml"))
	Expect(err).NotTo(HaveOccurred())
	role := &rbacv1.ClusterRole{}
	Expect(yaml.Unmarshal(raw, role)).To(Succeed())
	role.ObjectMeta = metav1.ObjectMeta{GenerateName: "kid-operator-manager-"}
	Expect(h.Client.Create(ctx, role)).To(Succeed())
	return role.Name
}
