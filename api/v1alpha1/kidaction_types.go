package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KidActionSpec is what to do when a matching event arrives.
// +kubebuilder:validation:XValidation:rule="[has(self.http), has(self.resource), has(self.cloudEvent)].filter(x, x).size() == 1",message="exactly one of http, resource or cloudEvent must be set"
type KidActionSpec struct {
	// products names the KidProducts (in this namespace) whose events the
	// action applies to. Empty means all.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	Products []string `json:"products,omitempty"`

	// eventTypes the action applies to, for example Challenge.StateChange.
	// Empty means all.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=128
	EventTypes []string `json:"eventTypes,omitempty"`

	// filter is a CEL expression over `event` (type, subject, data) and
	// `user` (the KidUser status after the fold); the action runs only when
	// it is true.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Filter string `json:"filter,omitempty"`

	// http sends the event to an HTTP endpoint.
	// +optional
	HTTP *HTTPAction `json:"http,omitempty"`

	// resource creates a Kubernetes object from a template.
	// +optional
	Resource *ResourceAction `json:"resource,omitempty"`

	// cloudEvent sends the event as a CloudEvent over HTTP, to a URL or to
	// an Addressable (a Knative Broker, an Argo Events or Tekton Triggers
	// endpoint behind a Service, ...).
	// +optional
	CloudEvent *CloudEventAction `json:"cloudEvent,omitempty"`

	// dryRun records what would have run, and runs nothing.
	// +optional
	DryRun bool `json:"dryRun,omitempty"`
}

// HTTPAction POSTs the event to a URL.
type HTTPAction struct {
	// url to POST to.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://`
	URL string `json:"url"`

	// headers added to the request.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	Headers []HTTPHeader `json:"headers,omitempty"`

	// bodyTemplate reshapes the JSON body (a Go text/template over the
	// event and user). By default the body is the event and the user status.
	// range, define, template and block are not allowed, nor functions other
	// than and, or, not, eq, ne, lt, le, gt, ge, len, index, slice, json and
	// printf; the rendered body is at most 64 KiB, and a render produces at
	// most 256 KiB in all (what it writes and what json and printf return,
	// kept in variables or not). A template outside these makes the action
	// Ready=False with reason InvalidTemplate; a render past them fails.
	// +optional
	// +kubebuilder:validation:MaxLength=16384
	BodyTemplate string `json:"bodyTemplate,omitempty"`

	// signingSecretRef selects a Secret key used to sign the request with
	// Standard Webhooks headers (webhook-id, webhook-timestamp,
	// webhook-signature).
	// +optional
	SigningSecretRef *SecretKeySelector `json:"signingSecretRef,omitempty"`

	// timeout of one attempt, from rendering the body to the answer.
	// Defaults to 10s; between 1s and 30s, since an attempt holds a worker
	// that every namespace's events share.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('30s')",message="timeout must be between 1s and 30s"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// maxAttempts before the run fails for good. Defaults to 5.
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=20
	MaxAttempts int32 `json:"maxAttempts,omitempty"`
}

// HTTPHeader is one request header.
type HTTPHeader struct {
	// name of the header.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Name string `json:"name"`

	// value of the header.
	// +required
	// +kubebuilder:validation:MaxLength=4096
	Value string `json:"value"`
}

// ResourceAction creates a Kubernetes object, such as a Job, once per event.
type ResourceAction struct {
	// template of the object to create; its name is set by the controller,
	// deterministically, so a retry never makes a second object, and its
	// namespace is the action's. Its kind must be namespaced. String fields
	// may hold Go templates, with the limits of http.bodyTemplate (64 KiB
	// rendered and 256 KiB produced, for all the fields together). The
	// template is at most 32 KiB as JSON: the API server cannot check a
	// schemaless field's size, so a larger one makes the action Ready=False
	// with reason InvalidTemplate, and its runs fail.
	// +required
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	Template apiextensionsv1.JSON `json:"template"`

	// serviceAccountName is the ServiceAccount, in the action's namespace,
	// that kid-operator acts as when it creates the object: the object is
	// created only if that ServiceAccount may create it. Required unless the
	// administrator set a default (--default-action-service-account);
	// without one the action is Ready=False with reason
	// ServiceAccountRequired and creates nothing.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
}

// CloudEventAction sends each matching event as a CloudEvent (specversion
// 1.0) over HTTP. Its attributes: type "dev.kid." and k-ID's eventType,
// source /apis/kid.dev/v1alpha1/namespaces/<namespace>/kidproducts/<product>,
// id the run's webhook-id (the same on every retry, so a sink deduplicates),
// subject the KidUser's name, time when k-ID signed the event,
// datacontenttype application/json, and the extensions kidproduct,
// kidnamespace and kidconsent (the user's consent state after the fold).
// Its data is what an http action sends by default: the id, the event and
// the user.
type CloudEventAction struct {
	// sink is where the CloudEvent goes: a URL, an Addressable, or both.
	// +required
	Sink Destination `json:"sink"`

	// contentMode is how the event is carried: Binary (attributes in ce-
	// headers, the data as the body) or Structured (the whole event as an
	// application/cloudevents+json body). Defaults to Binary.
	// +optional
	// +kubebuilder:default=Binary
	ContentMode CloudEventContentMode `json:"contentMode,omitempty"`

	// dataTemplate reshapes the data, as http.bodyTemplate the body, with
	// the same limits; its output must be JSON.
	// +optional
	// +kubebuilder:validation:MaxLength=16384
	DataTemplate string `json:"dataTemplate,omitempty"`

	// headers added to the request; the CloudEvent's own headers win.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	Headers []HTTPHeader `json:"headers,omitempty"`

	// signingSecretRef selects a Secret key used to sign the request with
	// Standard Webhooks headers (webhook-id, webhook-timestamp,
	// webhook-signature), over the body as sent: the data in Binary mode,
	// the whole event in Structured mode.
	// +optional
	SigningSecretRef *SecretKeySelector `json:"signingSecretRef,omitempty"`

	// timeout of one attempt, from resolving the sink to the answer.
	// Defaults to 10s; between 1s and 30s.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('30s')",message="timeout must be between 1s and 30s"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// maxAttempts before the run fails for good. Defaults to 5.
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=20
	MaxAttempts int32 `json:"maxAttempts,omitempty"`

	// serviceAccountName is the ServiceAccount, in the action's namespace,
	// that kid-operator acts as when it reads sink.ref: the sink resolves
	// only if that ServiceAccount may get the referenced object. Needed
	// with sink.ref unless the administrator set a default
	// (--default-action-service-account).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
}

// CloudEventContentMode is a CloudEvents HTTP content mode.
// +kubebuilder:validation:Enum=Binary;Structured
type CloudEventContentMode string

// The content modes of the CloudEvents HTTP binding.
const (
	// ContentModeBinary carries the attributes in ce- headers and the data
	// as the body.
	ContentModeBinary CloudEventContentMode = "Binary"
	// ContentModeStructured carries the whole event as an
	// application/cloudevents+json body.
	ContentModeStructured CloudEventContentMode = "Structured"
)

// Destination is where a CloudEvent goes, shaped like Knative's
// duckv1.Destination: uri alone is an absolute URL; ref alone is the URL the
// referenced Addressable publishes in status.address.url; with both, uri is
// a relative reference resolved against the ref's URL.
// +kubebuilder:validation:XValidation:rule="has(self.ref) || has(self.uri)",message="sink needs a uri, a ref, or both"
// +kubebuilder:validation:XValidation:rule="has(self.ref) || self.uri.matches('^https?://')",message="sink.uri without a ref must be an absolute http(s) URL"
// +kubebuilder:validation:XValidation:rule="!has(self.ref) || !has(self.uri) || !self.uri.matches('^[a-zA-Z][a-zA-Z0-9+.-]*:')",message="sink.uri with a ref must be relative (for example a path): it is resolved against the ref's URL"
type Destination struct {
	// ref names an Addressable in the action's namespace: an object whose
	// status.address.url is where to send (a Knative Broker, Service or
	// Channel publishes one).
	// +optional
	Ref *AddressableReference `json:"ref,omitempty"`

	// uri is an absolute http(s) URL, or, with ref, a reference relative
	// to the ref's URL.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	URI string `json:"uri,omitempty"`
}

// AddressableReference names an Addressable in the action's namespace, as
// Knative's KReference does.
// +kubebuilder:validation:XValidation:rule="!has(self.__namespace__)",message="sink.ref resolves in the action's own namespace: leave namespace unset"
type AddressableReference struct {
	// apiVersion of the object, for example eventing.knative.dev/v1.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	APIVersion string `json:"apiVersion"`

	// kind of the object, for example Broker.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind"`

	// name of the object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// namespace must be unset: a reference resolves in the action's own
	// namespace, so an action reaches no object of another. (Knative's
	// references have the field; it is refused here rather than dropped.)
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`
}

// Reasons of a KidAction's Ready condition, beside those in conditions.go
// (InvalidFilter, InvalidTemplate, MissingPermission).
const (
	// ServiceAccountRequiredReason: a resource action names no
	// ServiceAccount to create its object as, and no default is configured.
	ServiceAccountRequiredReason = "ServiceAccountRequired"
	// SinkNotResolvedReason: a cloudEvent action's sink.ref does not name
	// an object its ServiceAccount may read with a status.address.url, or
	// the resolved URL is not an http(s) URL. Its runs are retried on their
	// backoff, so a sink that becomes ready in time loses nothing.
	SinkNotResolvedReason = "SinkNotResolved"
)

// KidActionStatus is what the controller observed of a KidAction.
type KidActionStatus struct {
	// conditions: Ready (False with reason InvalidFilter when the filter
	// does not compile or may cost too much, InvalidTemplate,
	// ServiceAccountRequired, MissingPermission or SinkNotResolved),
	// Reconciling, Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation last fully reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// succeeded counts runs that succeeded.
	// +optional
	Succeeded int64 `json:"succeeded,omitempty"`

	// failed counts runs that failed for good.
	// +optional
	Failed int64 `json:"failed,omitempty"`

	// lastRunTime is when the action last ran.
	// +optional
	LastRunTime *metav1.Time `json:"lastRunTime,omitempty"`
}

// KidAction is what to do when a matching k-ID event arrives.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ka;kida,categories=kid
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Dry Run",type=boolean,JSONPath=`.spec.dryRun`
// +kubebuilder:printcolumn:name="Succeeded",type=integer,JSONPath=`.status.succeeded`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.failed`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type KidAction struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired configuration.
	// +required
	Spec KidActionSpec `json:"spec"`

	// status is what the controller observed. Until the controller first
	// writes it, the API server reads it as observedGeneration 0, so that
	// kstatus (Flux's and Argo CD's health checks) sees the object as
	// InProgress, not Current, before it is reconciled.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status KidActionStatus `json:"status,omitempty"`
}

// KidActionList is a list of KidActions.
//
// +kubebuilder:object:root=true
type KidActionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KidAction `json:"items"`
}
