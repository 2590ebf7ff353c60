package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IdentityKind is the identifier a KidUser is known by. A player is known by
// the strongest identifier seen so far: a session, else a challenge, else a
// verification, else a k-ID user id.
// +kubebuilder:validation:Enum=Session;Challenge;Verification;Account
type IdentityKind string

// The kinds of identifier, strongest first.
const (
	IdentitySession      IdentityKind = "Session"
	IdentityChallenge    IdentityKind = "Challenge"
	IdentityVerification IdentityKind = "Verification"
	IdentityAccount      IdentityKind = "Account"
)

// KidUserSpec says which player a KidUser is about. It is written once, by
// the KidEvent controller, and is immutable.
type KidUserSpec struct {
	// productRef names the KidProduct.
	// +required
	ProductRef LocalObjectReference `json:"productRef"`

	// identity is the identifier this object is known by; the object's name
	// is derived from it.
	// +required
	Identity UserIdentity `json:"identity"`
}

// UserIdentity is a typed k-ID identifier.
type UserIdentity struct {
	// kind of identifier.
	// +required
	Kind IdentityKind `json:"kind"`

	// id is k-ID's identifier.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	ID string `json:"id"`
}

// ConsentState is the state of parental consent.
// +kubebuilder:validation:Enum=None;Pending;Granted;Denied
type ConsentState string

// The consent states.
const (
	ConsentNone    ConsentState = "None"
	ConsentPending ConsentState = "Pending"
	ConsentGranted ConsentState = "Granted"
	ConsentDenied  ConsentState = "Denied"
)

// VerificationState is the state of age verification.
// +kubebuilder:validation:Enum=Unverified;Verified;Failed;Revoked
type VerificationState string

// The verification states.
const (
	VerificationUnverified VerificationState = "Unverified"
	VerificationVerified   VerificationState = "Verified"
	VerificationFailed     VerificationState = "Failed"
	VerificationRevoked    VerificationState = "Revoked"
)

// SessionState is the state of the player's k-ID session.
// +kubebuilder:validation:Enum=Active;Deleted
type SessionState string

// The session states.
const (
	SessionActive  SessionState = "Active"
	SessionDeleted SessionState = "Deleted"
)

// ConsentStatus is the player's parental consent.
type ConsentStatus struct {
	// state: None, Pending, Granted or Denied.
	// +optional
	State ConsentState `json:"state,omitempty"`

	// challengeId is the challenge that decided the state.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	ChallengeID string `json:"challengeId,omitempty"`

	// time is when k-ID signed the event that set the state.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
}

// AgeRange is an age range reported by a verification.
type AgeRange struct {
	// low is the lower bound (the exact age for hard methods).
	// +optional
	Low *int32 `json:"low,omitempty"`
	// high is the upper bound (the exact age for hard methods).
	// +optional
	High *int32 `json:"high,omitempty"`
}

// VerificationRecord is the state of one k-ID verification.
type VerificationRecord struct {
	// id is k-ID's verification id.
	// +required
	// +kubebuilder:validation:MaxLength=128
	ID string `json:"id"`

	// state: Verified, Failed or Revoked (Unverified never appears here).
	// +required
	State VerificationState `json:"state"`

	// method, as k-ID names it (an open set: id-document,
	// age-estimation-scan, ...).
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Method string `json:"method,omitempty"`

	// ageCategory: adult, digital-youth or digital-minor (an open set).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	AgeCategory string `json:"ageCategory,omitempty"`

	// age is the age range reported.
	// +optional
	Age *AgeRange `json:"age,omitempty"`

	// failureReason of a Failed verification, or the reason of a Revoked one.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Reason string `json:"reason,omitempty"`

	// time is when k-ID signed the event that set the state.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
}

// VerificationStatus summarises the player's verifications.
type VerificationStatus struct {
	// state: Verified if any verification passed and was not revoked, else
	// Revoked, Failed or Unverified, in that order.
	// +optional
	State VerificationState `json:"state,omitempty"`

	// records holds each verification seen, by id.
	// +optional
	// +listType=map
	// +listMapKey=id
	// +kubebuilder:validation:MaxItems=32
	Records []VerificationRecord `json:"records,omitempty"`
}

// SessionStatus is the player's k-ID session.
type SessionStatus struct {
	// state: Active or Deleted.
	// +optional
	State SessionState `json:"state,omitempty"`

	// permissionsChangedAt is when a parent last changed the player's
	// permissions (Session.ChangePermissions).
	// +optional
	PermissionsChangedAt *metav1.Time `json:"permissionsChangedAt,omitempty"`

	// deletedAt is when k-ID signed the Session.Delete.
	// +optional
	DeletedAt *metav1.Time `json:"deletedAt,omitempty"`

	// permissions as k-ID's /session/get reported them at syncedAt.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=128
	Permissions []SessionPermission `json:"permissions,omitempty"`

	// permissionsSummary is "<enabled>/<all> enabled", for kubectl.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	PermissionsSummary string `json:"permissionsSummary,omitempty"`

	// ageStatus as k-ID reported it: DIGITAL_MINOR, DIGITAL_YOUTH or
	// LEGAL_ADULT (an open set).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	AgeStatus string `json:"ageStatus,omitempty"`

	// jurisdiction as k-ID reported it, for example US-CA.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Jurisdiction string `json:"jurisdiction,omitempty"`

	// status is k-ID's own session status (ACTIVE, ...), as reported.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Status string `json:"status,omitempty"`

	// etag of the session as last read, sent back so that an unchanged
	// session costs k-ID a 304 and the cluster no write.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	ETag string `json:"etag,omitempty"`

	// syncedAt is when the session was last read from k-ID with a change.
	// +optional
	SyncedAt *metav1.Time `json:"syncedAt,omitempty"`

	// permissionsReadAt is the newest permissionsChangedAt that a read of
	// the session answered for: the session was read from k-ID after that
	// change was folded. A Session.ChangePermissions event's actions wait
	// until it reaches the event's time, so that they see the new
	// permissions.
	// +optional
	PermissionsReadAt *metav1.Time `json:"permissionsReadAt,omitempty"`
}

// SessionPermission is one permission of a session, as k-ID reports it.
type SessionPermission struct {
	// name is the product's permission slug.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Name string `json:"name"`

	// enabled says whether the player may use the feature.
	// +required
	Enabled bool `json:"enabled"`

	// managedBy: PLAYER, GUARDIAN or PROHIBITED (an open set).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	ManagedBy string `json:"managedBy,omitempty"`

	// verifiedAgeThreshold is the verified age the permission needs, if any.
	// +optional
	VerifiedAgeThreshold *int32 `json:"verifiedAgeThreshold,omitempty"`
}

// PersonalData holds the personal data the product's privacy settings allow
// to keep. It is erased on Session.Delete and Account.Delete.
type PersonalData struct {
	// dateOfBirth, YYYY-MM-DD.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	DateOfBirth string `json:"dateOfBirth,omitempty"`

	// approverEmail is the trusted adult who approved consent.
	// +optional
	// +kubebuilder:validation:MaxLength=320
	ApproverEmail string `json:"approverEmail,omitempty"`
}

// KidUserStatus is the state of one player, folded from k-ID's events.
type KidUserStatus struct {
	// conditions: ConsentGranted, AgeVerified, SessionActive.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// sessionId is the player's k-ID session.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	SessionID string `json:"sessionId,omitempty"`

	// kuid is the player's k-ID user id.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	KUID string `json:"kuid,omitempty"`

	// challengeIds are the challenges linked to this player, in the order
	// first seen; past the bound the oldest are dropped.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=128
	ChallengeIDs []string `json:"challengeIds,omitempty"`

	// consent is the player's parental consent.
	// +optional
	Consent ConsentStatus `json:"consent,omitempty"`

	// verification is the player's age verification.
	// +optional
	Verification VerificationStatus `json:"verification,omitempty"`

	// session is the player's k-ID session.
	// +optional
	Session SessionStatus `json:"session,omitempty"`

	// accountDeleted is true once k-ID deleted the player's account.
	// +optional
	AccountDeleted bool `json:"accountDeleted,omitempty"`

	// personalData kept as the product's privacy settings allow.
	// +optional
	PersonalData *PersonalData `json:"personalData,omitempty"`

	// erasedAt is when the player's personal data was erased, after a
	// Session.Delete or Account.Delete.
	// +optional
	ErasedAt *metav1.Time `json:"erasedAt,omitempty"`

	// lastEventRef names the newest event (by k-ID's signing time) folded in.
	// +optional
	LastEventRef *LocalObjectReference `json:"lastEventRef,omitempty"`

	// lastEventTime is k-ID's signing time of lastEventRef.
	// +optional
	LastEventTime *metav1.Time `json:"lastEventTime,omitempty"`

	// observedEvents counts the events folded in: the sum of eventCounts.
	// +optional
	ObservedEvents int64 `json:"observedEvents,omitempty"`

	// eventCounts counts the events folded in, by the UID of the KidUser
	// object they were first folded into. Merging two users keeps the
	// larger count of each origin, so a merge repeated after a failure
	// never counts an event twice. The counts of origins gone (stand-ins
	// merged and deleted) are compacted into one entry, "<uid>/compacted".
	// +optional
	// +listType=map
	// +listMapKey=origin
	// +kubebuilder:validation:MaxItems=128
	EventCounts []EventCount `json:"eventCounts,omitempty"`

	// inFlightEvents names the KidEvents folded into this user that were
	// not yet seen Applied. The user is written before its event is marked
	// Applied, so a crash between the two writes leaves the event Pending
	// and it is folded again: finding its name here, that fold does not
	// count it again. Names are dropped once their event is seen finished
	// or gone, so the list holds about the events in flight, not a history.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	InFlightEvents []string `json:"inFlightEvents,omitempty"`
}

// EventCount is the number of events first folded into one KidUser object.
type EventCount struct {
	// origin is the UID of the KidUser object.
	// +required
	// +kubebuilder:validation:MaxLength=64
	Origin string `json:"origin"`

	// count of events.
	// +required
	Count int64 `json:"count"`
}

// KidUser is the state of one player in one product, as k-ID reported it.
//
// Its product, identity, session, kuid and consent's challenge are
// selectable fields (kubectl get kidusers --field-selector
// spec.identity.id=<id>): the receiver's status stream watches a page's
// player by them, and kubectl kid finds a player by any id through them
// without listing every player.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ku;kidu,categories=kid
// +kubebuilder:printcolumn:name="Product",type=string,JSONPath=`.spec.productRef.name`
// +kubebuilder:printcolumn:name="Session",type=string,JSONPath=`.status.sessionId`
// +kubebuilder:printcolumn:name="Consent",type=string,JSONPath=`.status.consent.state`
// +kubebuilder:printcolumn:name="Verification",type=string,JSONPath=`.status.verification.state`
// +kubebuilder:printcolumn:name="Session State",type=string,JSONPath=`.status.session.state`
// +kubebuilder:printcolumn:name="Permissions",type=string,priority=1,JSONPath=`.status.session.permissionsSummary`
// +kubebuilder:printcolumn:name="Age Status",type=string,priority=1,JSONPath=`.status.session.ageStatus`
// +kubebuilder:printcolumn:name="Synced",type=date,priority=1,JSONPath=`.status.session.syncedAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:selectablefield:JSONPath=`.spec.productRef.name`
// +kubebuilder:selectablefield:JSONPath=`.spec.identity.kind`
// +kubebuilder:selectablefield:JSONPath=`.spec.identity.id`
// +kubebuilder:selectablefield:JSONPath=`.status.consent.challengeId`
// +kubebuilder:selectablefield:JSONPath=`.status.sessionId`
// +kubebuilder:selectablefield:JSONPath=`.status.kuid`
// +kubebuilder:validation:XValidation:rule="self.spec == oldSelf.spec",message="spec is immutable: a KidUser's identity never changes"
type KidUser struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec and status are atomic (+structType): the API server records each
	// writer as owning all of one, not each of its keys. Listed key by key,
	// a player's managedFields were 2,100 of its 4,131 bytes in etcd,
	// decoded and encoded again on every write, list and watch
	// (docs/benchmarks.md, "Spec and status atomic"). The operator writes
	// both with merge patches, which atomicity does not change, and is
	// their only writer, so nothing needs to own a single key.

	// spec says which player this is.
	// +required
	// +structType=atomic
	Spec KidUserSpec `json:"spec"`

	// status is the player's state, folded from events.
	// +optional
	// +structType=atomic
	Status KidUserStatus `json:"status,omitempty"`
}

// KidUserList is a list of KidUsers.
//
// +kubebuilder:object:root=true
type KidUserList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KidUser `json:"items"`
}
