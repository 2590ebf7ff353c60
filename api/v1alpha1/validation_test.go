package v1alpha1_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/test/testenv"
)

func newNamespace() string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "api-"}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func validProduct(ns string) *kidv1.KidProduct {
	return &kidv1.KidProduct{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: ns},
		Spec: kidv1.KidProductSpec{
			ProductID:   11472,
			Environment: kidv1.EnvironmentTest,
			Webhook:     kidv1.WebhookSpec{SecretRef: kidv1.LocalObjectReference{Name: "demo-webhook"}},
		},
	}
}

func validAction(ns string) *kidv1.KidAction {
	return &kidv1.KidAction{
		ObjectMeta: metav1.ObjectMeta{Name: "notify", Namespace: ns},
		Spec: kidv1.KidActionSpec{
			EventTypes: []string{"Challenge.StateChange"},
			HTTP:       &kidv1.HTTPAction{URL: "http://backend/kid"},
		},
	}
}

// withCloudEvent turns a valid http action into a valid cloudEvent action
// to http://sink/, and returns its cloudEvent part.
func withCloudEvent(a *kidv1.KidAction) *kidv1.CloudEventAction {
	a.Spec.HTTP = nil
	a.Spec.CloudEvent = &kidv1.CloudEventAction{Sink: kidv1.Destination{URI: "http://sink/"}}
	return a.Spec.CloudEvent
}

// brokerRef is a valid sink.ref, to a Knative Broker.
func brokerRef() *kidv1.AddressableReference {
	return &kidv1.AddressableReference{APIVersion: "eventing.knative.dev/v1", Kind: "Broker", Name: "default"}
}

func validEvent(ns string) *kidv1.KidEvent {
	return &kidv1.KidEvent{
		ObjectMeta: metav1.ObjectMeta{Name: "demo-test-0123", Namespace: ns},
		Spec: kidv1.KidEventSpec{
			ProductRef: kidv1.LocalObjectReference{Name: "demo"},
			EventType:  "Test",
			Data:       &apiextensionsv1.JSON{Raw: []byte(`{"id":"x"}`)},
			ReceivedAt: metav1.Now(),
			Source:     kidv1.SourceWebhook,
		},
	}
}

func validUser(ns string) *kidv1.KidUser {
	return &kidv1.KidUser{
		ObjectMeta: metav1.ObjectMeta{Name: "demo-session-0123", Namespace: ns},
		Spec: kidv1.KidUserSpec{
			ProductRef: kidv1.LocalObjectReference{Name: "demo"},
			Identity:   kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: "s-1"},
		},
	}
}

var _ = Describe("The samples", func() {
	It("creates every object of config/samples", func() {
		ns := newNamespace()
		dir := filepath.Join(testenv.RepoRoot(), "config", "samples")
		files, err := filepath.Glob(filepath.Join(dir, "kid_v1alpha1_*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		kinds := map[string]bool{}
		for _, file := range files {
			raw, err := os.ReadFile(file)
			Expect(err).NotTo(HaveOccurred())
			obj := &unstructured.Unstructured{}
			Expect(utilyaml.Unmarshal(raw, &obj.Object)).To(Succeed())
			obj.SetNamespace(ns)
			Expect(k8s.Create(ctx, obj)).To(Succeed(), file)
			kinds[obj.GetKind()] = true
		}
		Expect(kinds).To(HaveKey("KidProduct"))
		Expect(kinds).To(HaveKey("KidEvent"))
		Expect(kinds).To(HaveKey("KidUser"))
		Expect(kinds).To(HaveKey("KidAction"))
	})
})

var _ = Describe("Validation", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	// expectInvalid creates obj and expects the API server to refuse it as
	// invalid, with a message naming the problem.
	expectInvalid := func(obj client.Object, message string) {
		err := k8s.Create(ctx, obj)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
		Expect(err.Error()).To(ContainSubstring(message))
	}

	DescribeTable("refuses an invalid KidProduct",
		func(mutate func(*kidv1.KidProduct), message string) {
			p := validProduct(ns)
			mutate(p)
			expectInvalid(p, message)
		},
		Entry("productId of 0", func(p *kidv1.KidProduct) { p.Spec.ProductID = 0 }, "spec.productId: Invalid value: 0: spec.productId in body should be greater than or equal to 1"),
		Entry("an environment other than test or live", func(p *kidv1.KidProduct) { p.Spec.Environment = "prod" }, `spec.environment: Unsupported value: "prod": supported values: "test", "live"`),
		Entry("no webhook secret", func(p *kidv1.KidProduct) { p.Spec.Webhook.SecretRef.Name = "" }, "spec.webhook.secretRef.name: Invalid value: \"\": spec.webhook.secretRef.name in body should be at least 1 chars long"),
		Entry("a name longer than 63", func(p *kidv1.KidProduct) { p.Name = strings.Repeat("p", 64) }, "a KidProduct name is at most 63 characters"),
		Entry("a timestamp tolerance over an hour", func(p *kidv1.KidProduct) {
			p.Spec.Webhook.TimestampTolerance = &metav1.Duration{Duration: time.Hour + time.Second}
		}, "timestampTolerance must be between 1s and 1h"),
		Entry("a timestamp tolerance under a second", func(p *kidv1.KidProduct) {
			p.Spec.Webhook.TimestampTolerance = &metav1.Duration{Duration: 500 * time.Millisecond}
		}, "timestampTolerance must be between 1s and 1h"),
		Entry("retention.maxEvents of 0", func(p *kidv1.KidProduct) { p.Spec.Retention.MaxEvents = ptr.To[int32](0) }, "spec.retention.maxEvents in body should be greater than or equal to 1"),
		Entry("an api baseURL that is not http(s)", func(p *kidv1.KidProduct) {
			p.Spec.API = &kidv1.APISpec{SecretRef: kidv1.SecretKeySelector{Name: "k", Key: "k"}, BaseURL: "ftp://x"}
		}, "spec.api.baseURL in body should match '^https?://'"),
		Entry("an api rate over k-ID's 500 per second", func(p *kidv1.KidProduct) { withAPI(p).RequestsPerSecond = ptr.To[int32](501) }, "spec.api.requestsPerSecond in body should be less than or equal to 500"),
		Entry("an api burst over 500", func(p *kidv1.KidProduct) { withAPI(p).Burst = ptr.To[int32](501) }, "spec.api.burst in body should be less than or equal to 500"),
		Entry("an api timeout over 30s", func(p *kidv1.KidProduct) { withAPI(p).Timeout = &metav1.Duration{Duration: 31 * time.Second} }, "timeout must be between 1s and 30s"),
		Entry("a session resync under a minute", func(p *kidv1.KidProduct) { withAPI(p).SessionResync = &metav1.Duration{Duration: 59 * time.Second} }, "sessionResync must be between 1m and 720h"),
		Entry("a session resync over 30 days", func(p *kidv1.KidProduct) { withAPI(p).SessionResync = &metav1.Duration{Duration: 721 * time.Hour} }, "sessionResync must be between 1m and 720h"),
		Entry("a first poll under a second", func(p *kidv1.KidProduct) {
			withAPI(p).Recovery.FirstPoll = &metav1.Duration{Duration: 500 * time.Millisecond}
		}, "firstPoll must be between 1s and 1h"),
		Entry("a poll interval over a day", func(p *kidv1.KidProduct) {
			withAPI(p).Recovery.MaxInterval = &metav1.Duration{Duration: 25 * time.Hour}
		}, "maxInterval must be between 1s and 24h"),
		Entry("a first poll after the interval cap", func(p *kidv1.KidProduct) {
			withAPI(p).Recovery = kidv1.RecoverySpec{FirstPoll: &metav1.Duration{Duration: time.Minute}, MaxInterval: &metav1.Duration{Duration: time.Second}}
		}, "firstPoll must not exceed maxInterval"),
		Entry("a recovery horizon over 90 days", func(p *kidv1.KidProduct) { withAPI(p).Recovery.Horizon = &metav1.Duration{Duration: 2161 * time.Hour} }, "horizon must be between 1m and 2160h"),
		Entry("events kept over 10 years", func(p *kidv1.KidProduct) {
			p.Spec.Retention.MaxAge = &metav1.Duration{Duration: 87601 * time.Hour}
		}, "maxAge must be between 0s and 87600h"),
		Entry("erased users kept under an hour", func(p *kidv1.KidProduct) {
			p.Spec.Retention.Users.AfterErasure = &metav1.Duration{Duration: 59 * time.Minute}
		}, "afterErasure must be between 1h and 87600h"),
		Entry("erased users kept over 10 years", func(p *kidv1.KidProduct) {
			p.Spec.Retention.Users.AfterErasure = &metav1.Duration{Duration: 87601 * time.Hour}
		}, "afterErasure must be between 1h and 87600h"),
		Entry("inactive users deleted under a day", func(p *kidv1.KidProduct) {
			p.Spec.Retention.Users.AfterInactivity = &metav1.Duration{Duration: 23 * time.Hour}
		}, "afterInactivity must be between 24h and 87600h"),
		Entry("inactive users kept over 10 years", func(p *kidv1.KidProduct) {
			p.Spec.Retention.Users.AfterInactivity = &metav1.Duration{Duration: 87601 * time.Hour}
		}, "afterInactivity must be between 24h and 87600h"),
		Entry("retention.maxEvents over 100,000", func(p *kidv1.KidProduct) { p.Spec.Retention.MaxEvents = ptr.To[int32](100001) }, "spec.retention.maxEvents in body should be less than or equal to 100000"),
		Entry("a webhook secret name longer than 253", func(p *kidv1.KidProduct) { p.Spec.Webhook.SecretRef.Name = strings.Repeat("s", 254) }, "spec.webhook.secretRef.name: Too long"),
		Entry("an api baseURL longer than 2048", func(p *kidv1.KidProduct) {
			withAPI(p).BaseURL = "https://game-api.k-id.com/" + strings.Repeat("a", 2048)
		}, "spec.api.baseURL: Too long"),
		Entry("an api key name longer than 253", func(p *kidv1.KidProduct) { withAPI(p).SecretRef.Key = strings.Repeat("k", 254) }, "spec.api.secretRef.key: Too long"),
		Entry("an api rate of 0", func(p *kidv1.KidProduct) { withAPI(p).RequestsPerSecond = ptr.To[int32](0) }, "spec.api.requestsPerSecond in body should be greater than or equal to 1"),
		Entry("an api timeout under a second", func(p *kidv1.KidProduct) { withAPI(p).Timeout = &metav1.Duration{Duration: 999 * time.Millisecond} }, "timeout must be between 1s and 30s"),
		Entry("a first poll over an hour", func(p *kidv1.KidProduct) {
			withAPI(p).Recovery.FirstPoll = &metav1.Duration{Duration: time.Hour + time.Second}
		}, "firstPoll must be between 1s and 1h"),
		Entry("a recovery horizon under a minute", func(p *kidv1.KidProduct) { withAPI(p).Recovery.Horizon = &metav1.Duration{Duration: 59 * time.Second} }, "horizon must be between 1m and 2160h"),
		Entry("a browser without allowed origins", func(p *kidv1.KidProduct) { withBrowser(p).AllowedOrigins = nil }, "spec.browser.allowedOrigins"),
		Entry("more than 16 allowed origins", func(p *kidv1.KidProduct) {
			b := withBrowser(p)
			for i := range 16 {
				b.AllowedOrigins = append(b.AllowedOrigins, fmt.Sprintf("https://g%d.example.com", i))
			}
		}, "spec.browser.allowedOrigins: Too many"),
		Entry("an allowed origin longer than 253", func(p *kidv1.KidProduct) {
			withBrowser(p).AllowedOrigins = []string{"https://" + strings.Repeat("o", 246) + ".com"}
		}, "spec.browser.allowedOrigins[0]: Too long"),
		Entry("an allowed origin with a path", func(p *kidv1.KidProduct) {
			withBrowser(p).AllowedOrigins = []string{"https://play.example.com/game"}
		}, "spec.browser.allowedOrigins[0] in body should match"),
		Entry("a relay rate over 100", func(p *kidv1.KidProduct) { withBrowser(p).RequestsPerSecond = ptr.To[int32](101) }, "spec.browser.requestsPerSecond in body should be less than or equal to 100"),
		Entry("a relay burst over 200", func(p *kidv1.KidProduct) { withBrowser(p).Burst = ptr.To[int32](201) }, "spec.browser.burst in body should be less than or equal to 200"),
		Entry("more than 1000 status streams", func(p *kidv1.KidProduct) { withBrowser(p).MaxStreams = ptr.To[int32](1001) }, "spec.browser.maxStreams in body should be less than or equal to 1000"),
		Entry("no status streams", func(p *kidv1.KidProduct) { withBrowser(p).MaxStreams = ptr.To[int32](0) }, "spec.browser.maxStreams in body should be greater than or equal to 1"),
	)

	It("accepts cloudEvent sinks as Knative's Destination has them, at their bounds", func() {
		long := brokerRef()
		long.APIVersion = strings.Repeat("g", 308) + "/v1alpha1"
		long.Kind = strings.Repeat("K", 63)
		long.Name = strings.Repeat("n", 253)
		for i, sink := range []kidv1.Destination{
			{URI: "https://sink.example/" + strings.Repeat("u", 2048-len("https://sink.example/"))},
			{Ref: brokerRef()},
			{Ref: brokerRef(), URI: "/kid/events"},
			{Ref: brokerRef(), URI: "kid"},
			{Ref: long},
		} {
			a := validAction(ns)
			a.Name = fmt.Sprintf("sink-%d", i)
			withCloudEvent(a).Sink = sink
			Expect(k8s.Create(ctx, a)).To(Succeed(), "%+v", sink)
			Expect(a.Spec.CloudEvent.ContentMode).To(Equal(kidv1.ContentModeBinary), "the default")
		}
	})

	It("accepts user retention at its bounds", func() {
		for i, users := range []kidv1.UserRetentionSpec{
			{AfterErasure: &metav1.Duration{Duration: time.Hour}, AfterInactivity: &metav1.Duration{Duration: 24 * time.Hour}},
			{AfterErasure: &metav1.Duration{Duration: 87600 * time.Hour}, AfterInactivity: &metav1.Duration{Duration: 87600 * time.Hour}},
		} {
			p := validProduct(ns)
			p.Name = fmt.Sprintf("users-%d", i)
			p.Spec.Retention.Users = users
			Expect(k8s.Create(ctx, p)).To(Succeed())
		}
	})

	DescribeTable("refuses an invalid KidAction",
		func(mutate func(*kidv1.KidAction), message string) {
			a := validAction(ns)
			mutate(a)
			expectInvalid(a, message)
		},
		Entry("both http and resource", func(a *kidv1.KidAction) {
			a.Spec.Resource = &kidv1.ResourceAction{Template: apiextensionsv1.JSON{Raw: []byte(`{"kind":"Job"}`)}}
		}, "exactly one of http, resource or cloudEvent must be set"),
		Entry("neither http nor resource", func(a *kidv1.KidAction) { a.Spec.HTTP = nil }, "exactly one of http, resource or cloudEvent must be set"),
		Entry("both http and cloudEvent", func(a *kidv1.KidAction) {
			a.Spec.CloudEvent = &kidv1.CloudEventAction{Sink: kidv1.Destination{URI: "http://sink/"}}
		}, "exactly one of http, resource or cloudEvent must be set"),
		Entry("a sink with neither uri nor ref", func(a *kidv1.KidAction) { withCloudEvent(a).Sink = kidv1.Destination{} }, "sink needs a uri, a ref, or both"),
		Entry("a sink uri that is not http(s)", func(a *kidv1.KidAction) { withCloudEvent(a).Sink.URI = "file:///etc/passwd" }, "sink.uri without a ref must be an absolute http(s) URL"),
		Entry("a sink uri longer than 2048", func(a *kidv1.KidAction) {
			withCloudEvent(a).Sink.URI = "https://sink/" + strings.Repeat("u", 2048)
		}, "spec.cloudEvent.sink.uri: Too long"),
		Entry("an absolute sink uri beside a ref", func(a *kidv1.KidAction) {
			ce := withCloudEvent(a)
			ce.Sink.Ref = brokerRef()
		}, "sink.uri with a ref must be relative"),
		Entry("a sink ref to another namespace", func(a *kidv1.KidAction) {
			ce := withCloudEvent(a)
			ce.Sink = kidv1.Destination{Ref: brokerRef()}
			ce.Sink.Ref.Namespace = "kid-system"
		}, "sink.ref resolves in the action's own namespace: leave namespace unset"),
		Entry("a sink ref apiVersion longer than 317", func(a *kidv1.KidAction) {
			ce := withCloudEvent(a)
			ce.Sink = kidv1.Destination{Ref: brokerRef()}
			ce.Sink.Ref.APIVersion = strings.Repeat("g", 310) + "/v1alpha1"
		}, "spec.cloudEvent.sink.ref.apiVersion: Too long"),
		Entry("a sink ref kind longer than 63", func(a *kidv1.KidAction) {
			ce := withCloudEvent(a)
			ce.Sink = kidv1.Destination{Ref: brokerRef()}
			ce.Sink.Ref.Kind = strings.Repeat("K", 64)
		}, "spec.cloudEvent.sink.ref.kind: Too long"),
		Entry("a sink ref name longer than 253", func(a *kidv1.KidAction) {
			ce := withCloudEvent(a)
			ce.Sink = kidv1.Destination{Ref: brokerRef()}
			ce.Sink.Ref.Name = strings.Repeat("n", 254)
		}, "spec.cloudEvent.sink.ref.name: Too long"),
		Entry("a content mode other than Binary or Structured", func(a *kidv1.KidAction) { withCloudEvent(a).ContentMode = "Batched" }, `spec.cloudEvent.contentMode: Unsupported value: "Batched"`),
		Entry("a dataTemplate longer than 16 KiB", func(a *kidv1.KidAction) { withCloudEvent(a).DataTemplate = strings.Repeat("d", 16385) }, "spec.cloudEvent.dataTemplate: Too long"),
		Entry("more than 32 cloudEvent headers", func(a *kidv1.KidAction) {
			ce := withCloudEvent(a)
			for i := range 33 {
				ce.Headers = append(ce.Headers, kidv1.HTTPHeader{Name: fmt.Sprintf("X-H%d", i), Value: "v"})
			}
		}, "spec.cloudEvent.headers: Too many"),
		Entry("a cloudEvent header value longer than 4096", func(a *kidv1.KidAction) {
			withCloudEvent(a).Headers = []kidv1.HTTPHeader{{Name: "X-Team", Value: strings.Repeat("v", 4097)}}
		}, "spec.cloudEvent.headers[0].value: Too long"),
		Entry("a cloudEvent timeout over 30s", func(a *kidv1.KidAction) { withCloudEvent(a).Timeout = &metav1.Duration{Duration: 31 * time.Second} }, "timeout must be between 1s and 30s"),
		Entry("a cloudEvent timeout under a second", func(a *kidv1.KidAction) {
			withCloudEvent(a).Timeout = &metav1.Duration{Duration: 999 * time.Millisecond}
		}, "timeout must be between 1s and 30s"),
		Entry("cloudEvent maxAttempts over 20", func(a *kidv1.KidAction) { withCloudEvent(a).MaxAttempts = 21 }, "spec.cloudEvent.maxAttempts in body should be less than or equal to 20"),
		Entry("cloudEvent maxAttempts under 1", func(a *kidv1.KidAction) { withCloudEvent(a).MaxAttempts = -1 }, "spec.cloudEvent.maxAttempts in body should be greater than or equal to 1"),
		Entry("a cloudEvent signing secret key longer than 253", func(a *kidv1.KidAction) {
			withCloudEvent(a).SigningSecretRef = &kidv1.SecretKeySelector{Name: "sign", Key: strings.Repeat("k", 254)}
		}, "spec.cloudEvent.signingSecretRef.key: Too long"),
		Entry("a cloudEvent serviceAccountName that is not a DNS-1123 name", func(a *kidv1.KidAction) { withCloudEvent(a).ServiceAccountName = "Kid_Actions" }, "spec.cloudEvent.serviceAccountName in body should match"),
		Entry("a cloudEvent serviceAccountName longer than 253", func(a *kidv1.KidAction) {
			withCloudEvent(a).ServiceAccountName = strings.Repeat("a", 254)
		}, "spec.cloudEvent.serviceAccountName: Too long"),
		Entry("maxAttempts over 20", func(a *kidv1.KidAction) { a.Spec.HTTP.MaxAttempts = 21 }, "spec.http.maxAttempts in body should be less than or equal to 20"),
		Entry("a URL that is not http(s)", func(a *kidv1.KidAction) { a.Spec.HTTP.URL = "file:///etc/passwd" }, "spec.http.url in body should match '^https?://'"),
		Entry("more than 32 event types", func(a *kidv1.KidAction) {
			for i := range 33 {
				a.Spec.EventTypes = append(a.Spec.EventTypes, strings.Repeat("x", i+1))
			}
		}, "spec.eventTypes: Too many"),
		Entry("a filter longer than 4096", func(a *kidv1.KidAction) { a.Spec.Filter = strings.Repeat("x", 4097) }, "spec.filter: Too long"),
		Entry("an http timeout over 30s", func(a *kidv1.KidAction) { a.Spec.HTTP.Timeout = &metav1.Duration{Duration: 31 * time.Second} }, "timeout must be between 1s and 30s"),
		Entry("an http timeout of an hour", func(a *kidv1.KidAction) { a.Spec.HTTP.Timeout = &metav1.Duration{Duration: time.Hour} }, "timeout must be between 1s and 30s"),
		Entry("a serviceAccountName that is not a DNS-1123 name", func(a *kidv1.KidAction) {
			a.Spec.HTTP = nil
			a.Spec.Resource = &kidv1.ResourceAction{Template: apiextensionsv1.JSON{Raw: []byte(`{"apiVersion":"v1","kind":"ConfigMap"}`)}, ServiceAccountName: "Kid_Actions"}
		}, "spec.resource.serviceAccountName in body should match"),
		Entry("a serviceAccountName longer than 253", func(a *kidv1.KidAction) {
			a.Spec.HTTP = nil
			a.Spec.Resource = &kidv1.ResourceAction{Template: apiextensionsv1.JSON{Raw: []byte(`{"apiVersion":"v1","kind":"ConfigMap"}`)}, ServiceAccountName: strings.Repeat("a", 254)}
		}, "spec.resource.serviceAccountName: Too long"),
		Entry("more than 64 products", func(a *kidv1.KidAction) {
			for i := range 65 {
				a.Spec.Products = append(a.Spec.Products, fmt.Sprintf("p%d", i))
			}
		}, "spec.products: Too many"),
		Entry("a product name longer than 63", func(a *kidv1.KidAction) { a.Spec.Products = []string{strings.Repeat("p", 64)} }, "spec.products[0]: Too long"),
		Entry("an event type longer than 128", func(a *kidv1.KidAction) { a.Spec.EventTypes = []string{strings.Repeat("t", 129)} }, "spec.eventTypes[0]: Too long"),
		Entry("a URL longer than 2048", func(a *kidv1.KidAction) { a.Spec.HTTP.URL = "https://backend/" + strings.Repeat("u", 2048) }, "spec.http.url: Too long"),
		Entry("more than 32 headers", func(a *kidv1.KidAction) {
			for i := range 33 {
				a.Spec.HTTP.Headers = append(a.Spec.HTTP.Headers, kidv1.HTTPHeader{Name: fmt.Sprintf("X-H%d", i), Value: "v"})
			}
		}, "spec.http.headers: Too many"),
		Entry("a header name longer than 256", func(a *kidv1.KidAction) {
			a.Spec.HTTP.Headers = []kidv1.HTTPHeader{{Name: strings.Repeat("h", 257), Value: "v"}}
		}, "spec.http.headers[0].name: Too long"),
		Entry("a header value longer than 4096", func(a *kidv1.KidAction) {
			a.Spec.HTTP.Headers = []kidv1.HTTPHeader{{Name: "X-Team", Value: strings.Repeat("v", 4097)}}
		}, "spec.http.headers[0].value: Too long"),
		Entry("a bodyTemplate longer than 16 KiB", func(a *kidv1.KidAction) { a.Spec.HTTP.BodyTemplate = strings.Repeat("b", 16385) }, "spec.http.bodyTemplate: Too long"),
		Entry("an http timeout under a second", func(a *kidv1.KidAction) { a.Spec.HTTP.Timeout = &metav1.Duration{Duration: 999 * time.Millisecond} }, "timeout must be between 1s and 30s"),
		Entry("maxAttempts under 1", func(a *kidv1.KidAction) { a.Spec.HTTP.MaxAttempts = -1 }, "spec.http.maxAttempts in body should be greater than or equal to 1"),
		Entry("a signing secret key longer than 253", func(a *kidv1.KidAction) {
			a.Spec.HTTP.SigningSecretRef = &kidv1.SecretKeySelector{Name: "sign", Key: strings.Repeat("k", 254)}
		}, "spec.http.signingSecretRef.key: Too long"),
	)

	DescribeTable("refuses an invalid KidEvent",
		func(mutate func(*kidv1.KidEvent), message string) {
			e := validEvent(ns)
			mutate(e)
			expectInvalid(e, message)
		},
		Entry("an unknown source", func(e *kidv1.KidEvent) { e.Spec.Source = "email" }, `spec.source: Unsupported value: "email"`),
		Entry("no event type", func(e *kidv1.KidEvent) { e.Spec.EventType = "" }, "spec.eventType in body should be at least 1 chars long"),
		Entry("a session id longer than 128", func(e *kidv1.KidEvent) { e.Spec.Subject.SessionID = strings.Repeat("s", 129) }, "spec.subject.sessionId: Too long"),
		Entry("a bodySHA256 that is not hex", func(e *kidv1.KidEvent) { e.Spec.BodySHA256 = "xyz" }, "spec.bodySHA256 in body should match"),
	)

	It("keeps a KidEvent's spec immutable", func() {
		e := validEvent(ns)
		Expect(k8s.Create(ctx, e)).To(Succeed())
		e.Spec.EventType = "Session.Delete"
		err := k8s.Update(ctx, e)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec is immutable"))
	})

	It("refuses a KidUser identity of an unknown kind", func() {
		u := validUser(ns)
		u.Spec.Identity.Kind = "Email"
		expectInvalid(u, `spec.identity.kind: Unsupported value: "Email"`)
	})
})

var _ = Describe("kubectl's view", func() {
	It("lists every kind under the category kid, with short names", func() {
		for _, plural := range []string{"kidproducts", "kidevents", "kidusers", "kidactions"} {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			Expect(k8s.Get(ctx, client.ObjectKey{Name: plural + ".kid.dev"}, crd)).To(Succeed())
			Expect(crd.Spec.Names.Categories).To(ContainElement("kid"), plural)
			Expect(crd.Spec.Names.ShortNames).NotTo(BeEmpty(), plural)
		}
	})

	DescribeTable("shows the printer columns in a kubectl get table",
		func(plural string, create func(ns string) client.Object, columns []string) {
			ns := newNamespace()
			Expect(k8s.Create(ctx, create(ns))).To(Succeed())
			cs, err := kubernetes.NewForConfig(cfg)
			Expect(err).NotTo(HaveOccurred())
			table := &metav1.Table{}
			// The request kubectl get makes.
			err = cs.RESTClient().Get().AbsPath("/apis/kid.dev/v1alpha1/namespaces", ns, plural).
				SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").Do(ctx).Into(table)
			Expect(err).NotTo(HaveOccurred())
			var names []string
			for _, c := range table.ColumnDefinitions {
				names = append(names, c.Name)
			}
			Expect(names).To(Equal(append([]string{"Name"}, columns...)))
			Expect(table.Rows).To(HaveLen(1))
		},
		Entry("KidProduct", "kidproducts", func(ns string) client.Object { return validProduct(ns) }, []string{"Product ID", "Env", "Ready", "API", "Path", "Last Event", "Last Test", "Last Resync", "Given Up", "Age"}),
		Entry("KidEvent", "kidevents", func(ns string) client.Object { return validEvent(ns) }, []string{"Product", "Type", "Subject", "Phase", "Age"}),
		Entry("KidUser", "kidusers", func(ns string) client.Object { return validUser(ns) }, []string{"Product", "Session", "Consent", "Verification", "Session State", "Permissions", "Age Status", "Synced", "Age"}),
		Entry("KidAction", "kidactions", func(ns string) client.Object { return validAction(ns) }, []string{"Ready", "Dry Run", "Succeeded", "Failed", "Age"}),
	)
})

// withBrowser gives a product a valid spec.browser and returns it.
func withBrowser(p *kidv1.KidProduct) *kidv1.BrowserSpec {
	p.Spec.Browser = &kidv1.BrowserSpec{AllowedOrigins: []string{"https://play.example.com"}, TokenSecretRef: kidv1.LocalObjectReference{Name: "relay"}}
	return p.Spec.Browser
}

// withAPI gives a product a valid spec.api and returns it.
func withAPI(p *kidv1.KidProduct) *kidv1.APISpec {
	p.Spec.API = &kidv1.APISpec{SecretRef: kidv1.SecretKeySelector{Name: "k", Key: "k"}}
	return p.Spec.API
}
