package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KidActionSpec is what to do when a matching event arrives.
// +kubebuilder:validation:XValidation:rule="has(self.http) != has(self.resource)",message="exactly one of http or resource must be set"
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
	// +optional
	// +kubebuilder:validation:MaxLength=16384
	BodyTemplate string `json:"bodyTemplate,omitempty"`

	// signingSecretRef selects a Secret key used to sign the request with
	// Standard Webhooks headers (webhook-id, webhook-timestamp,
	// webhook-signature).
	// +optional
	SigningSecretRef *SecretKeySelector `json:"signingSecretRef,omitempty"`

	// timeout of one attempt. Defaults to 10s.
	// +optional
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
	// deterministically, so a retry never makes a second object.
	// +required
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	Template apiextensionsv1.JSON `json:"template"`
}

// KidActionStatus is what the controller observed of a KidAction.
type KidActionStatus struct {
	// conditions: Ready (False with reason InvalidFilter when the filter
	// does not compile), Reconciling, Stalled.
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

	// status is what the controller observed.
	// +optional
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

func init() {
	SchemeBuilder.Register(&KidAction{}, &KidActionList{})
}
