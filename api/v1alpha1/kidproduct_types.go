package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Environment is the k-ID environment a product's webhooks and API calls
// belong to.
// +kubebuilder:validation:Enum=test;live
type Environment string

const (
	// EnvironmentTest is k-ID's test environment (Test Mode).
	EnvironmentTest Environment = "test"
	// EnvironmentLive is k-ID's live environment.
	EnvironmentLive Environment = "live"
)

// DefaultTimestampTolerance is how far X-Signature-Timestamp may lie from the
// receiver's clock, in either direction, when the product sets none.
const DefaultTimestampTolerance = 5 * time.Minute

// KidProductSpec is one k-ID product in one environment.
type KidProductSpec struct {
	// productId is k-ID's numeric product id, as shown in Compliance Studio.
	// +required
	// +kubebuilder:validation:Minimum=1
	ProductID int64 `json:"productId"`

	// environment is the k-ID environment: test or live.
	// +required
	Environment Environment `json:"environment"`

	// webhook configures how deliveries from k-ID are verified.
	// +required
	Webhook WebhookSpec `json:"webhook"`

	// api configures calls to k-ID's REST API (session sync, recovery).
	// +optional
	API *APISpec `json:"api,omitempty"`

	// browser configures the relay of k-ID's widget (DOM) events from the
	// game's pages, and the live status stream those pages read.
	// +optional
	Browser *BrowserSpec `json:"browser,omitempty"`

	// retention bounds how many finished KidEvents are kept, and for how
	// long, and when a KidUser is deleted.
	// +optional
	Retention RetentionSpec `json:"retention,omitempty"`

	// privacy says which personal data may be stored. By default none is:
	// approverEmail and dob are removed before an event is stored.
	// +optional
	Privacy PrivacySpec `json:"privacy,omitempty"`

	// suspend keeps receiving and storing events but runs no actions.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// WebhookSpec configures the verification of k-ID's webhook deliveries.
type WebhookSpec struct {
	// secretRef names a Secret in the product's namespace. Every non-empty key
	// of it is a valid webhook secret, so a secret can be rotated without
	// downtime: add the new key (say "next"), switch k-ID over, then remove
	// the old one.
	// +required
	SecretRef LocalObjectReference `json:"secretRef"`

	// timestampTolerance is how far X-Signature-Timestamp may lie from now,
	// in either direction. Defaults to 5m; between 1s and 1h. It is also how
	// long a captured delivery can be replayed, and it lengthens the
	// deduplication horizon that retention keeps every event for.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="timestampTolerance must be between 1s and 1h"
	TimestampTolerance *metav1.Duration `json:"timestampTolerance,omitempty"`
}

// APISpec configures calls to k-ID's REST API: session sync and the recovery
// of events a webhook missed (design.md §3). Every duration and rate has a
// bound, so that no product can make the operator hammer k-ID or hold its
// workers.
type APISpec struct {
	// secretRef selects the key of a Secret that holds the product's API key.
	// The same Secret may hold a second key under that key's name plus
	// "-next" ("key-next" for "key"): the key a rotation moves to. A call
	// k-ID refuses (401) is tried once with the other key, and the key
	// k-ID accepts is used from then on (APIReady names it).
	// +required
	SecretRef SecretKeySelector `json:"secretRef"`

	// baseURL overrides the API base URL that environment implies: the URL up
	// to and including /api/v1, for example to point at the k-ID simulator.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://`
	BaseURL string `json:"baseURL,omitempty"`

	// requestsPerSecond bounds the calls this product makes to k-ID: they
	// are paced at this rate, and no more than this many start in any one
	// second. Defaults to 5 in test and 100 in live, well under k-ID's
	// limits of 10 and 500.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=500
	RequestsPerSecond *int32 `json:"requestsPerSecond,omitempty"`

	// burst is how many calls may go at once before the pace applies; it
	// never lets more than requestsPerSecond calls into one second.
	// Defaults to a tenth of requestsPerSecond, at least 1.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=500
	Burst *int32 `json:"burst,omitempty"`

	// timeout bounds one call. Defaults to 10s; at most 30s.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('30s')",message="timeout must be between 1s and 30s"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// sessionResync is how often each active session (and each passed
	// verification, recovery.recheckVerifications) is read again from k-ID
	// (with its etag, so an unchanged session costs no write), with 10%
	// jitter; between 1m and 720h. By default it is computed from the
	// product's rate and its number of players, so that the resync uses at
	// most a tenth of the rate: between 1h and 24h (design.md §3,
	// "Session sync").
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('720h')",message="sessionResync must be between 1m and 720h"
	SessionResync *metav1.Duration `json:"sessionResync,omitempty"`

	// recovery configures the polling of pending challenges and
	// verifications, which recovers a decision whose webhook was lost.
	// +optional
	Recovery RecoverySpec `json:"recovery,omitempty"`
}

// RecoverySpec is the backoff on which pending challenges and verifications
// are polled: first after firstPoll, then at doubling intervals up to
// maxInterval, until horizon has passed since the challenge or verification
// was first seen.
// +kubebuilder:validation:XValidation:rule="!has(self.firstPoll) || !has(self.maxInterval) || duration(self.firstPoll) <= duration(self.maxInterval)",message="firstPoll must not exceed maxInterval"
type RecoverySpec struct {
	// firstPoll is the wait before the first poll. Defaults to 30s; between
	// 1s and 1h.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="firstPoll must be between 1s and 1h"
	FirstPoll *metav1.Duration `json:"firstPoll,omitempty"`

	// maxInterval caps the doubling interval. Defaults to 1h; between 1s
	// and 24h.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('24h')",message="maxInterval must be between 1s and 24h"
	MaxInterval *metav1.Duration `json:"maxInterval,omitempty"`

	// horizon is how long a pending challenge or verification is polled.
	// Defaults to 336h (14 days: k-ID deletes verifications pending longer);
	// at most 2160h (90 days).
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('2160h')",message="horizon must be between 1m and 2160h"
	Horizon *metav1.Duration `json:"horizon,omitempty"`

	// recheckVerifications re-reads each passed verification from
	// /age-verification/get-status once per session resync interval, so
	// that a revocation whose Verification.Revoke webhook was lost is
	// recovered where get-status reports it (a status REVOKED, or a
	// revoked flag; k-ID documents neither). Defaults to true; false saves
	// the calls where get-status never says so.
	// +optional
	RecheckVerifications *bool `json:"recheckVerifications,omitempty"`
}

// BrowserSpec configures the browser relay (design.md §3, "Three
// channels"). A relayed DOM event is a hint: it is stored with source
// browser, never folded into a KidUser and never runs an action; with
// spec.api set, it makes the controllers ask k-ID at once.
type BrowserSpec struct {
	// allowedOrigins are the origins of the game's pages that may relay
	// events and read the status stream (CORS), matched exactly, scheme
	// included: https://play.example.com.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^https?://[^/?#\s]+$`
	AllowedOrigins []string `json:"allowedOrigins"`

	// tokenSecretRef names a Secret whose every non-empty key may sign relay
	// tokens (so a key can be rotated like the webhook secret). The game's
	// backend mints a token per player page (webhookserver/relaytoken).
	// +required
	TokenSecretRef LocalObjectReference `json:"tokenSecretRef"`

	// requestsPerSecond bounds the relayed events of this product; past it
	// the relay answers 429 and stores nothing. Defaults to 10.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	RequestsPerSecond *int32 `json:"requestsPerSecond,omitempty"`

	// burst of relayed events above the rate. Defaults to 20.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=200
	Burst *int32 `json:"burst,omitempty"`

	// maxStreams bounds the status streams open at once for this product.
	// Defaults to 100.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxStreams *int32 `json:"maxStreams,omitempty"`
}

// RetentionSpec bounds the finished KidEvents kept for a product, and says
// when its KidUsers are deleted.
type RetentionSpec struct {
	// maxAge is how long a finished event is kept. Defaults to 168h (7 days);
	// at most 87600h (10 years). It is never shorter than the deduplication
	// horizon (the timestamp tolerance plus k-ID's retry window), whatever is
	// set here.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('87600h')",message="maxAge must be between 0s and 87600h"
	MaxAge *metav1.Duration `json:"maxAge,omitempty"`

	// maxEvents is how many finished events are kept at most. Defaults to
	// 5000, so that a product receiving 10 events per second stays well under
	// the 10,000 objects Kubernetes advises for one custom kind.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	MaxEvents *int32 `json:"maxEvents,omitempty"`

	// users says when a KidUser is deleted. By default an erased user is
	// deleted 720h after its erasure and no other user is.
	// +optional
	Users UserRetentionSpec `json:"users,omitempty"`
}

// UserRetentionSpec says when a KidUser is deleted (design.md §2, "KidUser
// lifecycle"). A later event about a deleted player makes a new KidUser, as
// for a player never seen.
type UserRetentionSpec struct {
	// afterErasure is how long a KidUser is kept after k-ID deleted its
	// session or account and its personal data was erased (status.erasedAt),
	// so that the erasure stays visible for audit. Defaults to 720h (30
	// days); between 1h and 87600h (10 years). It is never shorter than the
	// deduplication horizon (the timestamp tolerance plus k-ID's retry
	// window), whatever is set here: until then a late delivery of an event
	// signed before the erasure may still arrive, and the erased user is what
	// keeps its personal data out.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h') && duration(self) <= duration('87600h')",message="afterErasure must be between 1h and 87600h"
	AfterErasure *metav1.Duration `json:"afterErasure,omitempty"`

	// afterInactivity deletes a KidUser that has been inactive this long:
	// no event signed, and no change read from k-ID's API (session.syncedAt),
	// since the latest of those and its creation. Unset (the default) keeps
	// such users: k-ID stays the source of truth, and the next event about
	// a returning player makes its KidUser again. Between 24h and 87600h
	// (10 years).
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('24h') && duration(self) <= duration('87600h')",message="afterInactivity must be between 24h and 87600h"
	AfterInactivity *metav1.Duration `json:"afterInactivity,omitempty"`
}

// PrivacySpec lists the personal data that may be stored.
type PrivacySpec struct {
	// storeApproverEmail keeps the trusted adult's email in stored events and
	// the KidUser. Off by default.
	// +optional
	StoreApproverEmail bool `json:"storeApproverEmail,omitempty"`

	// storeDateOfBirth keeps the player's date of birth in stored events and
	// the KidUser. Off by default.
	// +optional
	StoreDateOfBirth bool `json:"storeDateOfBirth,omitempty"`
}

// LocalObjectReference names an object in the same namespace.
type LocalObjectReference struct {
	// name of the object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// SecretKeySelector selects one key of a Secret in the same namespace.
type SecretKeySelector struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// key in the Secret's data.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key"`
}

// KidProductStatus is what the controller observed of a KidProduct.
type KidProductStatus struct {
	// conditions: Ready, APIReady, ErasuresHeld, Reconciling, Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation last fully reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// webhookPath is the URL path to paste into k-ID's Compliance Studio,
	// after the receiver's external address.
	// +optional
	WebhookPath string `json:"webhookPath,omitempty"`

	// lastEventTime is when the newest stored event was received.
	// +optional
	LastEventTime *metav1.Time `json:"lastEventTime,omitempty"`

	// lastTestEventTime is when the newest Test event was received (the
	// "Test Webhook" button in Compliance Studio).
	// +optional
	LastTestEventTime *metav1.Time `json:"lastTestEventTime,omitempty"`

	// lastHandledResumeErasures is the value of the kid.dev/resume-erasures
	// annotation last acted on (its first 256 characters).
	// +optional
	// +kubebuilder:validation:MaxLength=256
	LastHandledResumeErasures string `json:"lastHandledResumeErasures,omitempty"`

	// api is what the product's calls to k-ID's REST API show: its session
	// resync and what recovery gave up on. Unset without spec.api, and
	// until a player of the product has something to show.
	// +optional
	API *APIStatus `json:"api,omitempty"`
}

// APIStatus summarises a product's session sync and recovery. The manager
// keeps it from what its players' reconciles did since it started (it lists
// no players to compute it), so after a restart it fills in as the players
// are reconciled again.
type APIStatus struct {
	// lastResyncTime is when a session of the product was last read from
	// k-ID (an answer: changed or not), to the minute.
	// +optional
	LastResyncTime *metav1.Time `json:"lastResyncTime,omitempty"`

	// nextResyncTime is when the soonest of the product's sessions is due
	// its read (every spec.api.sessionResync, or at once for a session
	// never read), to the minute, rounded up. In the past, reads are
	// behind: waiting for the product's rate, or paused (see APIReady).
	// +optional
	NextResyncTime *metav1.Time `json:"nextResyncTime,omitempty"`

	// recoveriesGivenUp counts the product's pending challenges and
	// verifications whose spec.api.recovery.horizon passed without a
	// decision: nothing polls them any more. A webhook may still decide
	// them; kid.dev/requested-at on the KidUser asks k-ID once more.
	// +optional
	// +kubebuilder:validation:Minimum=0
	RecoveriesGivenUp int32 `json:"recoveriesGivenUp,omitempty"`
}

// KidProduct is one k-ID product in one environment: where its webhooks are
// received and how they are verified.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=kp;kidp,categories=kid
// +kubebuilder:printcolumn:name="Product ID",type=integer,JSONPath=`.spec.productId`
// +kubebuilder:printcolumn:name="Env",type=string,JSONPath=`.spec.environment`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="API",type=string,JSONPath=`.status.conditions[?(@.type=="APIReady")].reason`
// +kubebuilder:printcolumn:name="Path",type=string,JSONPath=`.status.webhookPath`
// +kubebuilder:printcolumn:name="Last Event",type=date,JSONPath=`.status.lastEventTime`
// +kubebuilder:printcolumn:name="Last Test",type=date,JSONPath=`.status.lastTestEventTime`,priority=1
// +kubebuilder:printcolumn:name="Last Resync",type=date,JSONPath=`.status.api.lastResyncTime`,priority=1
// +kubebuilder:printcolumn:name="Given Up",type=integer,JSONPath=`.status.api.recoveriesGivenUp`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="a KidProduct name is at most 63 characters: it becomes part of every KidEvent name and label"
type KidProduct struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired configuration.
	// +required
	Spec KidProductSpec `json:"spec"`

	// status is what the controller observed. Until the controller first
	// writes it, the API server reads it as observedGeneration 0, so that
	// kstatus (Flux's and Argo CD's health checks) sees the object as
	// InProgress, not Current, before it is reconciled.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status KidProductStatus `json:"status,omitempty"`
}

// KidProductList is a list of KidProducts.
//
// +kubebuilder:object:root=true
type KidProductList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KidProduct `json:"items"`
}

// GetConditions returns the status conditions.
func (p *KidProduct) GetConditions() []metav1.Condition { return p.Status.Conditions }

// Bounds of webhook.timestampTolerance, as the CRD validates them.
const (
	MinTimestampTolerance = time.Second
	MaxTimestampTolerance = time.Hour
)

// TimestampTolerance returns the window the signature timestamp must lie in:
// the spec's, clamped to [MinTimestampTolerance, MaxTimestampTolerance] (the
// API server refuses values outside, but an object stored before the bound
// existed may hold one), or the default when unset.
func (p *KidProduct) TimestampTolerance() metav1.Duration {
	t := p.Spec.Webhook.TimestampTolerance
	if t == nil || t.Duration <= 0 {
		return metav1.Duration{Duration: DefaultTimestampTolerance}
	}
	return metav1.Duration{Duration: min(max(t.Duration, MinTimestampTolerance), MaxTimestampTolerance)}
}

// Bounds and default of retention.users, as the CRD validates them.
const (
	DefaultUserRetentionAfterErasure = 30 * 24 * time.Hour
	MinUserRetentionAfterErasure     = time.Hour
	MinUserRetentionAfterInactivity  = 24 * time.Hour
	MaxUserRetention                 = 10 * 365 * 24 * time.Hour
	// MaxRetentionMaxAge bounds retention.maxAge (the CRD's 87600h).
	MaxRetentionMaxAge = 87600 * time.Hour
)

// Defaults of APISpec.
const (
	DefaultTestRequestsPerSecond = 5
	DefaultLiveRequestsPerSecond = 100
	DefaultAPITimeout            = 10 * time.Second
	// DefaultSessionResync caps the computed resync interval
	// (ResyncInterval).
	DefaultSessionResync   = 24 * time.Hour
	DefaultFirstPoll       = 30 * time.Second
	DefaultMaxPollInterval = time.Hour
	DefaultRecoveryHorizon = 14 * 24 * time.Hour
)

// RateLimit is the product's rate of calls to k-ID and its burst.
func (a *APISpec) RateLimit(env Environment) (rps, burst int) {
	rps = DefaultTestRequestsPerSecond
	if env == EnvironmentLive {
		rps = DefaultLiveRequestsPerSecond
	}
	if a.RequestsPerSecond != nil {
		rps = int(*a.RequestsPerSecond)
	}
	// A tenth of the rate, as kidapi.DefaultBurst (this package does not
	// import the client): a backlog's calls spread over the second.
	burst = max(1, rps/10)
	if a.Burst != nil {
		burst = int(*a.Burst)
	}
	return rps, burst
}

// NextAPIKeySuffix names the Secret key that holds the next API key of a
// rotation: spec.api.secretRef.key plus this.
const NextAPIKeySuffix = "-next"

// NextKeyName is the Secret key that holds the next API key of a rotation.
func (a *APISpec) NextKeyName() string { return a.SecretRef.Key + NextAPIKeySuffix }

// CallTimeout bounds one call to k-ID.
func (a *APISpec) CallTimeout() time.Duration { return durationOr(a.Timeout, DefaultAPITimeout) }

// Bounds of the computed resync interval, and the share of the product's
// rate it may use.
const (
	// MinDefaultSessionResync is the shortest computed interval: however
	// few the players, a session is not read more often than this without
	// a reason (a notice, a consent, a request).
	MinDefaultSessionResync = time.Hour
	// ResyncRateShare is the share of the product's requestsPerSecond the
	// computed resync may use; the rest is for the reads a notice asks
	// for, recovery and confirmations.
	ResyncRateShare = 0.1
)

// ResyncInterval is how often an active session (and a passed
// verification) is read again: spec.sessionResync when set, else the time
// in which reads, the product's resync reads of one round (its sessions
// and verifications), fit in ResyncRateShare of its rate, between
// MinDefaultSessionResync and DefaultSessionResync (design.md §3,
// "Session sync").
func (a *APISpec) ResyncInterval(env Environment, reads int) time.Duration {
	if a.SessionResync != nil && a.SessionResync.Duration > 0 {
		return a.SessionResync.Duration
	}
	rps, _ := a.RateLimit(env)
	if rps <= 0 {
		return DefaultSessionResync
	}
	fit := time.Duration(float64(reads) / (float64(rps) * ResyncRateShare) * float64(time.Second))
	return min(max(fit, MinDefaultSessionResync), DefaultSessionResync)
}

// RechecksVerifications reports whether passed verifications are read
// again at each resync (recheckVerifications, default true).
func (r *RecoverySpec) RechecksVerifications() bool {
	return r.RecheckVerifications == nil || *r.RecheckVerifications
}

// Backoff returns the recovery schedule: the first wait, the cap on the
// doubling interval, and the horizon.
func (r *RecoverySpec) Backoff() (first, maxInterval, horizon time.Duration) {
	return durationOr(r.FirstPoll, DefaultFirstPoll), durationOr(r.MaxInterval, DefaultMaxPollInterval), durationOr(r.Horizon, DefaultRecoveryHorizon)
}

func durationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d != nil && d.Duration > 0 {
		return d.Duration
	}
	return def
}

// Defaults of BrowserSpec.
const (
	DefaultBrowserRequestsPerSecond = 10
	DefaultBrowserBurst             = 20
	DefaultBrowserMaxStreams        = 100
)

// Limits returns the relay's rate, burst and stream cap.
func (b *BrowserSpec) Limits() (rps, burst, streams int) {
	rps, burst, streams = DefaultBrowserRequestsPerSecond, DefaultBrowserBurst, DefaultBrowserMaxStreams
	if b.RequestsPerSecond != nil {
		rps = int(*b.RequestsPerSecond)
	}
	if b.Burst != nil {
		burst = int(*b.Burst)
	}
	if b.MaxStreams != nil {
		streams = int(*b.MaxStreams)
	}
	return rps, burst, streams
}

// OwnerReference makes an object owned by the product: deleting the product
// deletes its KidEvents and KidUsers (through the garbage collector), so no
// personal data outlives the product.
func (p *KidProduct) OwnerReference() metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: GroupVersion.String(), Kind: "KidProduct", Name: p.Name, UID: p.UID}
}
