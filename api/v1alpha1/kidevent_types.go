package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EventSource says how an event reached the cluster.
// +kubebuilder:validation:Enum=webhook;poll;browser;manual
type EventSource string

const (
	// SourceWebhook is a signed webhook delivery from k-ID.
	SourceWebhook EventSource = "webhook"
	// SourcePoll is read back from k-ID's REST API.
	SourcePoll EventSource = "poll"
	// SourceBrowser is relayed from a k-ID widget's DOM event.
	SourceBrowser EventSource = "browser"
	// SourceManual is written by a person for a request that reached the team
	// another way than k-ID (kubectl kid erase: a data-subject request made
	// by email, say). Whoever may create KidEvents could already write one
	// with any other source; this one says honestly that k-ID signed
	// nothing. It is folded and runs actions like a webhook.
	SourceManual EventSource = "manual"
)

// EventPhase is where a KidEvent is in its life.
// +kubebuilder:validation:Enum=Pending;Applied;Succeeded;Failed;Ignored
type EventPhase string

const (
	// EventPending is stored, not yet folded into a KidUser.
	EventPending EventPhase = "Pending"
	// EventApplied is folded into its KidUser; actions (if any) still running.
	EventApplied EventPhase = "Applied"
	// EventSucceeded is applied, and every matching action succeeded.
	EventSucceeded EventPhase = "Succeeded"
	// EventFailed is applied, and at least one action failed for good.
	EventFailed EventPhase = "Failed"
	// EventIgnored is a Test event, a type this version does not know, or a
	// browser (DOM) event, which is a hint that makes the controllers ask
	// k-ID and is never trusted itself; kept for the record, folded into no
	// user.
	EventIgnored EventPhase = "Ignored"
)

// Finished reports whether nothing more will happen to the event, so that
// retention may delete it: it was ignored, or folded and none of its action
// runs is still pending.
func (s *KidEventStatus) Finished() bool {
	switch s.Phase {
	case EventSucceeded, EventFailed, EventIgnored:
		return true
	case EventApplied:
		for _, run := range s.Actions {
			if run.Phase == RunPending {
				return false
			}
		}
		return true
	}
	return false
}

// EventSubject holds the k-ID identifiers an event names.
type EventSubject struct {
	// sessionId is the k-ID session (one per player per product).
	// +optional
	// +kubebuilder:validation:MaxLength=128
	SessionID string `json:"sessionId,omitempty"`

	// challengeId is the k-ID challenge (parental consent, age assurance).
	// +optional
	// +kubebuilder:validation:MaxLength=128
	ChallengeID string `json:"challengeId,omitempty"`

	// verificationIds are the k-ID verifications named (one for a result,
	// one or more for a revocation).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=128
	VerificationIDs []string `json:"verificationIds,omitempty"`

	// kuid is the k-ID user id.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	KUID string `json:"kuid,omitempty"`
}

// IDs returns every identifier of the subject, session first.
func (s EventSubject) IDs() []string {
	ids := make([]string, 0, 3+len(s.VerificationIDs))
	for _, id := range []string{s.SessionID, s.ChallengeID, s.KUID} {
		if id != "" {
			ids = append(ids, id)
		}
	}
	return append(ids, s.VerificationIDs...)
}

// KidEventSpec is one verified delivery from k-ID. It is immutable, but a
// later copy of the same event may add what it lacks (see KidEvent).
type KidEventSpec struct {
	// productRef names the KidProduct the event was delivered for.
	// +required
	ProductRef LocalObjectReference `json:"productRef"`

	// eventType is k-ID's eventType, for example Challenge.StateChange.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	EventType string `json:"eventType"`

	// subject holds the identifiers the event names.
	// +optional
	Subject EventSubject `json:"subject,omitempty"`

	// data is the event's payload, with personal data removed unless the
	// product's privacy settings keep it.
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	Data *apiextensionsv1.JSON `json:"data,omitempty"`

	// personalData is true when data still holds personal data (because the
	// product's privacy settings allowed it), so erasure knows to act.
	// +optional
	PersonalData bool `json:"personalData,omitempty"`

	// receivedAt is when the receiver accepted the delivery.
	// +required
	ReceivedAt metav1.Time `json:"receivedAt"`

	// signedAt is the delivery's X-Signature-Timestamp.
	// +optional
	SignedAt *metav1.Time `json:"signedAt,omitempty"`

	// bodySHA256 is the hex SHA-256 of the raw body as delivered: the
	// integrity record of what k-ID sent. When the product's privacy
	// settings removed something from the data, it is the SHA-256 of the
	// body as stored instead, {"data":<data>,"eventType":<eventType>} as
	// encoding/json writes it (keys sorted at every level, no spaces), so
	// that it never gives back what was removed (a date of birth is one of
	// 36,500 guesses). It is the first copy's, whatever a later copy adds.
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9a-f]{64}$`
	BodySHA256 string `json:"bodySHA256,omitempty"`

	// source says how the event arrived.
	// +required
	Source EventSource `json:"source"`
}

// ActionRunStatus is the record of one KidAction run for one event.
type ActionRunStatus struct {
	// name of the KidAction.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// phase of the run: Pending, Succeeded, Failed or Skipped.
	// +required
	// +kubebuilder:validation:Enum=Pending;Succeeded;Failed;Skipped
	Phase string `json:"phase"`

	// attempts made so far.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// lastError is the error of the last failed attempt.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	LastError string `json:"lastError,omitempty"`

	// message says what ran, or for a dry run what would have run.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// nextAttemptAt is when the next attempt is due.
	// +optional
	NextAttemptAt *metav1.Time `json:"nextAttemptAt,omitempty"`

	// completedAt is when the run succeeded or failed for good.
	// +optional
	CompletedAt *metav1.Time `json:"completedAt,omitempty"`
}

// KidEventStatus is what the controllers did with an event.
type KidEventStatus struct {
	// conditions of the event: Processed (why it is where it is: done, or
	// what it waits for) and, on a Session.ChangePermissions, SessionRead.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the spec generation the controllers last wrote
	// this status for (kstatus compares it with metadata.generation; a
	// later copy that enriches the spec makes it lag until the event is
	// folded again).
	// +optional
	// +kubebuilder:validation:Minimum=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase: Pending, Applied, Succeeded, Failed or Ignored. Empty means
	// Pending.
	// +optional
	Phase EventPhase `json:"phase,omitempty"`

	// userRef names the KidUser the event was folded into (the first, for
	// an event that touched several).
	// +optional
	UserRef *LocalObjectReference `json:"userRef,omitempty"`

	// appliedAt is when the event was folded.
	// +optional
	AppliedAt *metav1.Time `json:"appliedAt,omitempty"`

	// foldedGeneration is the spec generation last folded into the event's
	// users. The spec changes only when a later copy of the event adds what
	// the stored copy lacked; an event past Pending whose generation is
	// newer is folded again, uncounted (design.md §2, "The richer copy
	// wins").
	// +optional
	// +kubebuilder:validation:Minimum=0
	FoldedGeneration int64 `json:"foldedGeneration,omitempty"`

	// actions records each matching KidAction's run.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	Actions []ActionRunStatus `json:"actions,omitempty"`
}

// KidEvent is one verified delivery from k-ID, stored as the receiver got it
// (less any personal data the product may not keep).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ke;kidev,categories=kid
// +kubebuilder:printcolumn:name="Product",type=string,JSONPath=`.spec.productRef.name`
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.eventType`
// +kubebuilder:printcolumn:name="Subject",type=string,JSONPath=`.metadata.annotations.kid\.dev/subject`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:selectablefield:JSONPath=`.spec.subject.sessionId`
// +kubebuilder:selectablefield:JSONPath=`.spec.subject.challengeId`
// +kubebuilder:selectablefield:JSONPath=`.spec.subject.kuid`
// +kubebuilder:selectablefield:JSONPath=`.status.userRef.name`
// The spec records what k-ID sent. It is immutable but for one change: a
// later copy of the same event may add what the stored copy lacks (the
// inbox's enrichment, design.md §2 "The richer copy wins"): an id the
// subject did not name, a data key (schemaless, so the inbox alone keeps
// data's existing keys unchanged), and personalData from false to true.
// +kubebuilder:validation:XValidation:rule="self.spec.productRef == oldSelf.spec.productRef && self.spec.eventType == oldSelf.spec.eventType && self.spec.receivedAt == oldSelf.spec.receivedAt && self.spec.source == oldSelf.spec.source && has(self.spec.signedAt) == has(oldSelf.spec.signedAt) && (!has(self.spec.signedAt) || self.spec.signedAt == oldSelf.spec.signedAt) && has(self.spec.bodySHA256) == has(oldSelf.spec.bodySHA256) && (!has(self.spec.bodySHA256) || self.spec.bodySHA256 == oldSelf.spec.bodySHA256)",message="spec is immutable: a KidEvent records what k-ID sent"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.spec.subject) || (has(self.spec.subject) && (!has(oldSelf.spec.subject.sessionId) || (has(self.spec.subject.sessionId) && self.spec.subject.sessionId == oldSelf.spec.subject.sessionId)) && (!has(oldSelf.spec.subject.challengeId) || (has(self.spec.subject.challengeId) && self.spec.subject.challengeId == oldSelf.spec.subject.challengeId)) && (!has(oldSelf.spec.subject.kuid) || (has(self.spec.subject.kuid) && self.spec.subject.kuid == oldSelf.spec.subject.kuid)) && (!has(oldSelf.spec.subject.verificationIds) || (has(self.spec.subject.verificationIds) && self.spec.subject.verificationIds == oldSelf.spec.subject.verificationIds)))",message="spec.subject may only gain the ids it lacks: a KidEvent records what k-ID sent"
// +kubebuilder:validation:XValidation:rule="(!has(oldSelf.spec.personalData) || !oldSelf.spec.personalData || (has(self.spec.personalData) && self.spec.personalData)) && (!has(oldSelf.spec.data) || has(self.spec.data))",message="spec.personalData and spec.data may not be taken away"
type KidEvent struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec and status are atomic (+structType), as a KidUser's are: each
	// writer owns all of one, so the event's managedFields do not list every
	// key of what k-ID sent.

	// spec is the delivery as stored.
	// +required
	// +structType=atomic
	Spec KidEventSpec `json:"spec"`

	// status is what the controllers did with it. Until the controllers
	// first write it (the receiver creates the event without one), the API
	// server reads it as observedGeneration 0, so that kstatus sees a
	// stored, unfolded event as InProgress. The default applies only to an
	// event with no status at all: one written before observedGeneration
	// existed is not read as InProgress for ever.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	// +structType=atomic
	Status KidEventStatus `json:"status,omitempty"`
}

// KidEventList is a list of KidEvents.
//
// +kubebuilder:object:root=true
type KidEventList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KidEvent `json:"items"`
}

// Action run phases.
const (
	RunPending   = "Pending"
	RunSucceeded = "Succeeded"
	RunFailed    = "Failed"
	RunSkipped   = "Skipped"
)

// RedriveAnnotation is the annotation that, set on a KidEvent (to any
// value), runs its failed actions again from their first attempt; the
// controller removes it.
const RedriveAnnotation = "kid.dev/redrive"

// RequestedAtAnnotation is the annotation that, set on a KidUser (to any
// new value, such as the time), asks the KidUser controller to ask k-ID now:
// read the session and poll a pending challenge or verification, whatever
// their schedule (as Flux's reconcile.fluxcd.io/requestedAt). A browser event sets it to its own
// name; a person can set it with kubectl annotate.
const RequestedAtAnnotation = "kid.dev/requested-at"

// SpooledAtAnnotation is set by the receiver, to the time (RFC 3339) it
// spooled the event because the API server could not store it in time.
// Once the event is folded, every session of its product last read before
// that time is read again from k-ID, in the urgent lane: a delivery k-ID
// gave up on during the outage is found that way.
const SpooledAtAnnotation = "kid.dev/spooled-at"

// ResumeErasuresAnnotation is the annotation that, set on a KidProduct (to
// any new value, such as the time), closes the product's erasure breaker:
// the ErasuresHeld condition goes, and the players whose erasure it held
// are read from k-ID again and erased if k-ID still confirms it. The value
// handled last is kept in status.lastHandledResumeErasures, so setting it
// again to the same value does nothing, and a value set while nothing was
// held resumes nothing later.
//
//	kubectl annotate kidproduct demo kid.dev/resume-erasures="$(date -u +%FT%TZ)" --overwrite
const ResumeErasuresAnnotation = "kid.dev/resume-erasures"

// SubjectAnnotation holds a short, human-readable subject for the Subject
// printer column (a JSONPath cannot pick "whichever id is set").
const SubjectAnnotation = "kid.dev/subject"
