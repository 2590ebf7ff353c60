package controllers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	ceclient "github.com/cloudevents/sdk-go/v2/client"
	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/actions"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// ceSink is a CloudEvents receiver built from the SDK, as a Knative Broker,
// Argo Events or any CloudEvents consumer reads what it is sent. It records
// every POST it got (before the SDK reads it) and every event the SDK read
// from them, and answers from a script.
type ceSink struct {
	*httptest.Server
	mu      sync.Mutex
	answers []int // answered in order; 200 once they run out
	posts   []cePost
}

// cePost is one POST the sink got: its path and headers, its body, what it
// was answered, and the event the SDK read from it (nil if none).
type cePost struct {
	path   string
	header http.Header
	body   []byte
	status int
	event  *cloudevents.Event
}

func newCESink(answers ...int) *ceSink {
	GinkgoHelper()
	s := &ceSink{answers: answers}
	p, err := cehttp.New()
	Expect(err).NotTo(HaveOccurred())
	receiver, err := ceclient.NewHTTPReceiveHandler(ctx, p, func(_ context.Context, ev cloudevents.Event) protocol.Result {
		s.mu.Lock()
		defer s.mu.Unlock()
		post := &s.posts[len(s.posts)-1]
		post.event = &ev
		return cehttp.NewResult(post.status, "answered %d", post.status)
	})
	Expect(err).NotTo(HaveOccurred())
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		s.mu.Lock()
		status := http.StatusOK
		if len(s.answers) > 0 {
			status, s.answers = s.answers[0], s.answers[1:]
		}
		s.posts = append(s.posts, cePost{path: r.URL.Path, header: r.Header.Clone(), body: body, status: status})
		s.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		receiver.ServeHTTP(w, r)
	}))
	DeferCleanup(s.Close)
	return s
}

func (s *ceSink) got() []cePost {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]cePost(nil), s.posts...)
}

// cloudEventAction creates a cloudEvent action for Challenge.StateChange
// events and waits until it is reconciled.
func cloudEventAction(p *testenv.Product, name string, sink kidv1.Destination, mutate func(*kidv1.KidAction)) *kidv1.KidAction {
	GinkgoHelper()
	return createAction(&kidv1.KidAction{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.Namespace},
		Spec: kidv1.KidActionSpec{
			EventTypes: []string{kid.ChallengeStateChange},
			CloudEvent: &kidv1.CloudEventAction{Sink: sink, MaxAttempts: 3},
		},
	}, mutate)
}

// broker creates a stand-in Broker (test/testenv/testdata/crds) in ns whose
// status.address.url is url ("" for none: not ready).
func broker(ns, name, url string) {
	GinkgoHelper()
	b := &unstructured.Unstructured{}
	b.SetAPIVersion("test.kid.dev/v1")
	b.SetKind("Broker")
	b.SetNamespace(ns)
	b.SetName(name)
	Expect(h.Client.Create(ctx, b)).To(Succeed())
	if url == "" {
		return
	}
	Expect(unstructured.SetNestedField(b.Object, url, "status", "address", "url")).To(Succeed())
	Expect(h.Client.Status().Update(ctx, b)).To(Succeed())
}

var brokerRef = func(name string) *kidv1.AddressableReference {
	return &kidv1.AddressableReference{APIVersion: "test.kid.dev/v1", Kind: "Broker", Name: name}
}

// mayGetBrokers lets the ServiceAccount sa of ns read the stand-in Brokers.
func mayGetBrokers(ns, sa string) {
	GinkgoHelper()
	serviceAccountMay(ns, sa, rbacv1.PolicyRule{APIGroups: []string{"test.kid.dev"}, Resources: []string{"brokers"}, Verbs: []string{"get"}})
}

// expectConformant checks, with the SDK as the receiving side, that a
// cloudEvent action in mode delivers every attribute the issue lists, and
// the same id across a 503 and the 200 that follows.
func expectConformant(mode kidv1.CloudEventContentMode) {
	GinkgoHelper()
	p := newProduct(nil)
	const secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZg=="
	Expect(h.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: p.Namespace, Labels: kidv1.SecretLabels()}, StringData: map[string]string{"secret": secret}})).To(Succeed())
	sink := newCESink(http.StatusServiceUnavailable)
	cloudEventAction(p, "to-sink", kidv1.Destination{URI: sink.URL + "/events"}, func(a *kidv1.KidAction) {
		a.Spec.Filter = `user.consent.state == "Granted"`
		a.Spec.CloudEvent.ContentMode = mode
		a.Spec.CloudEvent.SigningSecretRef = &kidv1.SecretKeySelector{Name: "hook", Key: "secret"}
		// The CloudEvent's own headers win over the action's.
		a.Spec.CloudEvent.Headers = []kidv1.HTTPHeader{{Name: "X-Team", Value: "games"}, {Name: "Ce-Type", Value: "spoofed"}}
	})
	send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-in", Status: kid.StatusInProgress, SessionID: "s-ce"})
	// Folded before the PASS, so its filter sees a user without consent.
	allEventsFinished(p.Namespace)
	send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-ok", Status: kid.StatusPass, SessionID: "s-ce"})

	runOf(p, "c-ok", "to-sink", func(g Gomega, phase kidv1.EventPhase, run kidv1.ActionRunStatus) {
		g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
		g.Expect(run.Attempts).To(BeEquivalentTo(2))
		g.Expect(run.Message).To(ContainSubstring("send CloudEvent dev.kid.Challenge.StateChange (" + string(mode) + ")"))
		g.Expect(phase).To(Equal(kidv1.EventSucceeded))
	}, 30*time.Second)
	allEventsFinished(p.Namespace)

	var e kidv1.KidEvent
	for _, ev := range events(p.Namespace) {
		if ev.Spec.Subject.ChallengeID == "c-ok" {
			e = ev
		}
	}
	Expect(e.Status.UserRef).NotTo(BeNil())
	Expect(e.Spec.SignedAt).NotTo(BeNil())

	// Every POST the sink got: the 503 and the 200, nothing else (the
	// in-progress challenge's user had no consent yet).
	Consistently(func() int { return len(sink.got()) }, "500ms").Should(Equal(2))
	posts := sink.got()
	Expect(posts[0].status).To(Equal(http.StatusServiceUnavailable))
	Expect(posts[1].status).To(Equal(http.StatusOK))
	for _, post := range posts {
		Expect(post.event).NotTo(BeNil(), "the SDK read a CloudEvent from every POST")
		Expect(post.path).To(Equal("/events"))
		ev := post.event
		Expect(ev.Validate()).To(Succeed())
		Expect(ev.SpecVersion()).To(Equal("1.0"))
		Expect(ev.Type()).To(Equal("dev.kid.Challenge.StateChange"))
		Expect(ev.Source()).To(Equal("/apis/kid.dev/v1alpha1/namespaces/" + p.Namespace + "/kidproducts/demo"))
		Expect(ev.ID()).To(HavePrefix("kid_"))
		Expect(ev.ID()).To(Equal(posts[0].event.ID()), "the same id on every retry")
		Expect(ev.ID()).To(Equal(post.header.Get("webhook-id")))
		Expect(ev.Subject()).To(Equal(e.Status.UserRef.Name))
		Expect(ev.Time().Equal(e.Spec.SignedAt.Time)).To(BeTrue(), "time %s is when k-ID signed it, %s", ev.Time(), e.Spec.SignedAt)
		Expect(ev.DataContentType()).To(Equal("application/json"))
		Expect(ev.Extensions()).To(Equal(map[string]any{
			actions.ExtensionProduct: "demo", actions.ExtensionNamespace: p.Namespace, actions.ExtensionConsent: "Granted",
		}))
		var data struct {
			ID    string         `json:"id"`
			Event map[string]any `json:"event"`
			User  map[string]any `json:"user"`
		}
		Expect(json.Unmarshal(ev.Data(), &data)).To(Succeed())
		Expect(data.ID).To(Equal(ev.ID()))
		Expect(data.Event).To(HaveKeyWithValue("name", e.Name))
		Expect(data.Event).To(HaveKeyWithValue("type", kid.ChallengeStateChange))
		Expect(data.User).To(HaveKeyWithValue("sessionId", "s-ce"))
		Expect(data.User).To(HaveKeyWithValue("consent", HaveKeyWithValue("state", "Granted")))

		Expect(post.header.Get("X-Team")).To(Equal("games"))
		Expect(post.header.Get("webhook-signature")).To(Equal(actions.SignStandardWebhook([]byte(secret), ev.ID(), post.header.Get("webhook-timestamp"), post.body)),
			"signed over the body as sent")
		switch mode {
		case kidv1.ContentModeStructured:
			Expect(post.header.Get("Content-Type")).To(HavePrefix("application/cloudevents+json"))
			Expect(post.header.Get("Ce-Id")).To(BeEmpty())
			var envelope map[string]json.RawMessage
			Expect(json.Unmarshal(post.body, &envelope)).To(Succeed())
			Expect(envelope).NotTo(HaveKey("data_base64"))
			Expect(envelope["data"]).To(MatchJSON(ev.Data()), "the data is JSON in the envelope, where consumers' filters reach it")
		default:
			Expect(post.header.Get("Content-Type")).To(Equal("application/json"))
			Expect(post.header.Get("Ce-Specversion")).To(Equal("1.0"))
			Expect(post.body).To(MatchJSON(ev.Data()), "the data is the body")
		}
	}
}

var _ = Describe("A cloudEvent KidAction", func() {
	It("delivers in binary mode a CloudEvent the SDK reads, with every attribute, the same id across a 503 and a 200", func() {
		expectConformant(kidv1.ContentModeBinary)
	})

	It("delivers in structured mode a CloudEvent the SDK reads, with every attribute, the same id across a 503 and a 200", func() {
		expectConformant(kidv1.ContentModeStructured)
	})

	It("resolves a sink.ref to the Addressable's status.address.url, a relative uri against it, as its ServiceAccount", func() {
		p := newProduct(nil)
		sink := newCESink()
		mayGetBrokers(p.Namespace, "ce-reader")
		broker(p.Namespace, "default", sink.URL+"/"+p.Namespace+"/default/")
		a := cloudEventAction(p, "to-broker", kidv1.Destination{Ref: brokerRef("default"), URI: "kid"}, func(a *kidv1.KidAction) {
			a.Spec.CloudEvent.ServiceAccountName = "ce-reader"
		})
		Expect(readyCondition(a).Status).To(Equal(metav1.ConditionTrue))

		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"})
		runOf(p, "c-1", "to-broker", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
			g.Expect(run.Attempts).To(BeEquivalentTo(1))
			g.Expect(run.Message).To(ContainSubstring("to Broker default (uri kid)"))
			g.Expect(run.Message).NotTo(ContainSubstring(sink.URL), "the run names the ref, not the address it resolved to")
		}, 30*time.Second)
		Consistently(func() int { return len(sink.got()) }, "500ms").Should(Equal(1))
		post := sink.got()[0]
		Expect(post.path).To(Equal("/" + p.Namespace + "/default/kid"))
		Expect(post.event).NotTo(BeNil())
		Expect(post.event.Type()).To(Equal("dev.kid.Challenge.StateChange"))
	})

	It("sets SinkNotResolved for a ref that does not resolve, retries its runs, and delivers once it resolves", func() {
		p := newProduct(nil)
		sink := newCESink()
		mayGetBrokers(p.Namespace, "ce-reader")
		a := cloudEventAction(p, "to-missing", kidv1.Destination{Ref: brokerRef("later")}, func(a *kidv1.KidAction) {
			a.Spec.CloudEvent.ServiceAccountName = "ce-reader"
			a.Spec.CloudEvent.MaxAttempts = 10
		})
		ready := readyCondition(a)
		Expect(ready.Status).To(Equal(metav1.ConditionFalse))
		Expect(ready.Reason).To(Equal(kidv1.SinkNotResolvedReason))
		Expect(ready.Message).To(ContainSubstring("sink.ref Broker later not found in namespace " + p.Namespace))

		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"})
		runOf(p, "c-1", "to-missing", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunPending), "retried, not failed")
			g.Expect(run.Attempts).To(BeNumerically(">=", 1))
			g.Expect(run.LastError).To(ContainSubstring("SinkNotResolved: sink.ref Broker later not found"))
			g.Expect(run.NextAttemptAt).NotTo(BeNil())
		}, 30*time.Second)

		// Not ready yet: no address.
		broker(p.Namespace, "later", "")
		runOf(p, "c-1", "to-missing", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.LastError).To(ContainSubstring("has no status.address.url"))
		}, 30*time.Second)
		Expect(sink.got()).To(BeEmpty())

		// Ready: the pending run delivers, once.
		b := &unstructured.Unstructured{}
		b.SetAPIVersion("test.kid.dev/v1")
		b.SetKind("Broker")
		Expect(h.Client.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: "later"}, b)).To(Succeed())
		Expect(unstructured.SetNestedField(b.Object, sink.URL+"/later", "status", "address", "url")).To(Succeed())
		Expect(h.Client.Status().Update(ctx, b)).To(Succeed())
		runOf(p, "c-1", "to-missing", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
		}, 60*time.Second)
		Consistently(func() int { return len(sink.got()) }, "500ms").Should(Equal(1))
		Expect(sink.got()[0].path).To(Equal("/later"))
		// The action is Ready on its next check (every 30 s).
		Eventually(func(g Gomega) {
			got := &kidv1.KidAction{}
			g.Expect(h.Client.Get(ctx, client.ObjectKeyFromObject(a), got)).To(Succeed())
			g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, kidv1.ReadyCondition)).To(BeTrue())
		}, 60*time.Second, time.Second).Should(Succeed())
	})

	It("reads the ref as its ServiceAccount only: never with kid-operator's rights, nor a cluster-scoped kind, nor another namespace", func() {
		p := newProduct(nil)
		sink := newCESink()
		broker(p.Namespace, "default", sink.URL+"/default")
		// kid-operator (an admin here) could read the Broker; the
		// ServiceAccount may not.
		serviceAccountMay(p.Namespace, "no-reader")
		denied := cloudEventAction(p, "denied", kidv1.Destination{Ref: brokerRef("default")}, func(a *kidv1.KidAction) {
			a.Spec.CloudEvent.ServiceAccountName = "no-reader"
		})
		ready := readyCondition(denied)
		Expect(ready.Reason).To(Equal(kidv1.SinkNotResolvedReason))
		Expect(ready.Message).To(ContainSubstring("ServiceAccount no-reader may not get Broker.test.kid.dev in " + p.Namespace))

		none := cloudEventAction(p, "no-sa", kidv1.Destination{Ref: brokerRef("default")}, nil)
		ready = readyCondition(none)
		Expect(ready.Reason).To(Equal(kidv1.SinkNotResolvedReason))
		Expect(ready.Message).To(ContainSubstring("serviceAccountName is required with sink.ref"))

		mayGetBrokers(p.Namespace, "ce-reader")
		cluster := cloudEventAction(p, "cluster", kidv1.Destination{Ref: &kidv1.AddressableReference{APIVersion: "test.kid.dev/v1", Kind: "ClusterBroker", Name: "x"}}, func(a *kidv1.KidAction) {
			a.Spec.CloudEvent.ServiceAccountName = "ce-reader"
		})
		ready = readyCondition(cluster)
		Expect(ready.Reason).To(Equal(kidv1.SinkNotResolvedReason))
		Expect(ready.Message).To(ContainSubstring("is cluster-scoped"))

		other := &kidv1.KidAction{
			ObjectMeta: metav1.ObjectMeta{Name: "other-ns", Namespace: p.Namespace},
			Spec: kidv1.KidActionSpec{CloudEvent: &kidv1.CloudEventAction{ServiceAccountName: "ce-reader", Sink: kidv1.Destination{
				Ref: &kidv1.AddressableReference{APIVersion: "test.kid.dev/v1", Kind: "Broker", Name: "default", Namespace: "kid-system"},
			}}},
		}
		err := h.Client.Create(ctx, other)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
		Expect(err.Error()).To(ContainSubstring("sink.ref resolves in the action's own namespace"))

		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass, SessionID: "s-1"})
		for _, name := range []string{"denied", "no-sa", "cluster"} {
			runOf(p, "c-1", name, func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
				g.Expect(run.LastError).To(ContainSubstring(kidv1.SinkNotResolvedReason))
			}, 30*time.Second)
		}
		Expect(sink.got()).To(BeEmpty())
	})

	It("checks the URL a ref resolves to with the outbound guard, as any URL", func() {
		p := newProduct(nil)
		mayGetBrokers(p.Namespace, "ce-reader")
		// The harness's operator refuses 127.0.0.2 to every namespace
		// but testenv.ScopedOutboundNamespace, and link-local always.
		backend := newTargetAt("127.0.0.2:0")
		broker(p.Namespace, "internal", backend.URL)
		cloudEventAction(p, "to-internal", kidv1.Destination{Ref: brokerRef("internal")}, func(a *kidv1.KidAction) {
			a.Spec.CloudEvent.ServiceAccountName = "ce-reader"
		})
		cloudEventAction(p, "to-metadata", kidv1.Destination{URI: "http://169.254.169.254/latest"}, nil)
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		for _, name := range []string{"to-internal", "to-metadata"} {
			runOf(p, "c-1", name, func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
				g.Expect(run.Phase).To(Equal(kidv1.RunFailed))
				g.Expect(run.Attempts).To(BeEquivalentTo(1))
				g.Expect(run.LastError).To(ContainSubstring("refused by the outbound guard"))
				g.Expect(run.LastError).NotTo(ContainSubstring("127.0.0.2"))
			}, 30*time.Second)
		}
		Expect(backend.deliveries()).To(BeEmpty())
	})

	It("filters and templates its data as an http action does, within the same bounds", func() {
		p := newProduct(nil)
		sink := newCESink()
		cloudEventAction(p, "reshaped", kidv1.Destination{URI: sink.URL}, func(a *kidv1.KidAction) {
			a.Spec.Filter = `event.data.status == "PASS"`
			a.Spec.CloudEvent.DataTemplate = `{"player":"{{.user.sessionId}}","status":{{json .event.data.status}}}`
		})
		loops := cloudEventAction(p, "loops", kidv1.Destination{URI: sink.URL}, func(a *kidv1.KidAction) {
			a.Spec.CloudEvent.DataTemplate = `{{range 1000000000}}x{{end}}`
		})
		Expect(readyCondition(loops).Reason).To(Equal(kidv1.InvalidTemplateReason))
		Expect(readyCondition(loops).Message).To(ContainSubstring("dataTemplate: range is not allowed"))
		hoard := cloudEventAction(p, "hoard", kidv1.Destination{URI: sink.URL}, func(a *kidv1.KidAction) {
			a.Spec.CloudEvent.DataTemplate = strings.Repeat(`{{$a:=json .}}`, actions.MaxBodyTemplateBytes/14)
		})
		Expect(readyCondition(hoard).Reason).To(Equal(kidv1.SucceededReason), "allowed: only its render is too large")
		notJSON := cloudEventAction(p, "not-json", kidv1.Destination{URI: sink.URL}, func(a *kidv1.KidAction) {
			a.Spec.CloudEvent.DataTemplate = `player {{.user.sessionId}}`
		})
		Expect(readyCondition(notJSON).Reason).To(Equal(kidv1.SucceededReason))
		broken := cloudEventAction(p, "broken", kidv1.Destination{URI: sink.URL}, func(a *kidv1.KidAction) { a.Spec.Filter = `event.data.status ==` })
		Expect(readyCondition(broken).Reason).To(Equal(kidv1.InvalidFilterReason))

		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-in", Status: kid.StatusInProgress, SessionID: "s-t"})
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-ok", Status: kid.StatusPass, SessionID: "s-t"})
		runOf(p, "c-ok", "reshaped", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
		}, 30*time.Second)
		for name, want := range map[string]string{"loops": "range is not allowed", "hoard": "the render is too large", "not-json": "dataTemplate did not render JSON"} {
			runOf(p, "c-ok", name, func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
				g.Expect(run.Phase).To(Equal(kidv1.RunFailed))
				g.Expect(run.Attempts).To(BeEquivalentTo(1), "permanent: the same input renders the same")
				g.Expect(run.LastError).To(ContainSubstring(want))
			}, 30*time.Second)
		}
		runOf(p, "c-ok", "broken", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSkipped))
		}, 30*time.Second)
		allEventsFinished(p.Namespace)
		Consistently(func() int { return len(sink.got()) }, "500ms").Should(Equal(1), "only the PASS event, only the reshaped action")
		ev := sink.got()[0].event
		Expect(ev).NotTo(BeNil())
		Expect(ev.Data()).To(MatchJSON(`{"player":"s-t","status":"PASS"}`))
	})

	It("records a dry run and sends nothing", func() {
		p := newProduct(nil)
		sink := newCESink()
		cloudEventAction(p, "dry", kidv1.Destination{Ref: brokerRef("default"), URI: "/kid"}, func(a *kidv1.KidAction) { a.Spec.DryRun = true })
		send(p, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: "c-1", Status: kid.StatusPass})
		runOf(p, "c-1", "dry", func(g Gomega, _ kidv1.EventPhase, run kidv1.ActionRunStatus) {
			g.Expect(run.Phase).To(Equal(kidv1.RunSucceeded))
			g.Expect(run.Message).To(MatchRegexp(`^dry run: would send CloudEvent dev.kid.Challenge.StateChange \(Binary\) with id kid_[0-9a-f]+ to Broker default \(uri /kid\)$`))
		}, 30*time.Second)
		Expect(sink.got()).To(BeEmpty())
	})
})
