package v1alpha1

// Condition types shared by every kind. Ready summarises; Reconciling and
// Stalled are present only while true, which is what the kstatus-based health
// checks of Flux and Argo CD read.
const (
	// ReadyCondition is True when the object is fully reconciled and usable.
	ReadyCondition = "Ready"
	// ReconcilingCondition is True while the controller is still working
	// towards the desired state.
	ReconcilingCondition = "Reconciling"
	// StalledCondition is True when progress needs a change by the user.
	StalledCondition = "Stalled"
)

// Condition types of a KidProduct.
const (
	// APIReadyCondition is True when the product can call k-ID's REST API:
	// its key is present and k-ID accepts it. A product without spec.api
	// has it False with reason NotConfigured and works on webhooks alone.
	APIReadyCondition = "APIReady"
	// ErasuresHeldCondition is True while the product's erasure breaker is
	// open: so many of its sessions read NOT_FOUND from k-ID's API at once
	// (more than 10 % of them and at least 10 within an hour) that the
	// operator stopped erasing players on the API's word. Webhook
	// deletions are never held. It is present only while True, and
	// cleared only by a person, through ResumeErasuresAnnotation.
	ErasuresHeldCondition = "ErasuresHeld"
)

// Condition types of a KidUser.
const (
	// ConsentGrantedCondition is True once a trusted adult granted consent.
	ConsentGrantedCondition = "ConsentGranted"
	// AgeVerifiedCondition is True while the player holds a verification
	// that passed and was not revoked.
	AgeVerifiedCondition = "AgeVerified"
	// SessionActiveCondition is True while the player's k-ID session exists.
	SessionActiveCondition = "SessionActive"
)

// Condition types of a KidEvent.
const (
	// SessionReadCondition is set on a Session.ChangePermissions event when
	// it is applied: True when its actions waited for a read of the
	// session made after the change, so that they see the new
	// permissions; False when they ran without one, with the reason why
	// (NotConfigured, APINotReady, SessionGone, ReadTimedOut).
	SessionReadCondition = "SessionRead"
	// ProcessedCondition says why an event is where it is: True once the
	// controllers are done with it (Ignored, Succeeded or Failed), with
	// the reason (UnknownEventType, UndecodableData, BrowserEvent,
	// ProductGone, NoActionMatched, ActionsSucceeded, ActionFailed);
	// False while it waits, with what for (RunsPending, RetryScheduled,
	// WaitingForMerge). It is written with the status writes an event
	// has anyway, so a wait that writes nothing (a permission change
	// waiting for its read, a suspended product's runs) does not show.
	// Its message never carries personal data nor an action's error text
	// (status.actions has the latter).
	ProcessedCondition = "Processed"
	// FiltersEvaluatedCondition is set, False, on an event that did not
	// evaluate every KidAction of its namespace: reason
	// FilterBudgetExceeded when the filters spent the event's budget
	// (--action-filter-budget), ActionLimitExceeded when the namespace
	// holds more actions than an event evaluates
	// (--max-actions-per-namespace). Its message names the actions left.
	FiltersEvaluatedCondition = "FiltersEvaluated"
)

// Reasons of a KidEvent's Processed condition.
const (
	// UnknownEventTypeReason: Ignored; this version does not know the
	// event type (Test events among them).
	UnknownEventTypeReason = "UnknownEventType"
	// UndecodableDataReason: Ignored; the stored data does not decode as
	// the event type's payload.
	UndecodableDataReason = "UndecodableData"
	// BrowserEventReason: Ignored; a game page's hint is never folded nor
	// acted on, only (with spec.api) confirmed at k-ID.
	BrowserEventReason = "BrowserEvent"
	// ProductGoneReason: Ignored; the event's KidProduct does not exist.
	ProductGoneReason = "ProductGone"
	// NoActionMatchedReason: Applied, and no KidAction matched it.
	NoActionMatchedReason = "NoActionMatched"
	// ActionsSucceededReason: Succeeded; every run succeeded or was
	// skipped.
	ActionsSucceededReason = "ActionsSucceeded"
	// ActionFailedReason: Failed; a run used its attempts (the redrive
	// annotation runs it again).
	ActionFailedReason = "ActionFailed"
	// RunsPendingReason: Applied; its runs wait for their first attempt.
	RunsPendingReason = "RunsPending"
	// RetryScheduledReason: Applied; a run's attempt failed and the next
	// is scheduled (the message says which run and when).
	RetryScheduledReason = "RetryScheduled"
	// WaitingForMergeReason: Pending; the stand-in that counted the event
	// was merged away, or the cache does not show it yet, and the fold
	// waits for the cache to show where the event's name went.
	WaitingForMergeReason = "WaitingForMerge"
)

// Reasons used in conditions.
const (
	// SucceededReason: the last reconcile did all it had to.
	SucceededReason = "Succeeded"
	// ProgressingReason: the controller is working on the object.
	ProgressingReason = "Progressing"
	// SecretNotFoundReason: the referenced Secret does not exist.
	SecretNotFoundReason = "SecretNotFound"
	// SecretNotLabelledReason: the referenced Secret exists but does not
	// carry the label SecretLabel=SecretLabelValue, so kid-operator does not
	// use it.
	SecretNotLabelledReason = "SecretNotLabelled"
	// SecretKeyMissingReason: the Secret holds no usable (non-empty) key.
	SecretKeyMissingReason = "SecretKeyMissing"
	// InvalidFilterReason: a KidAction's CEL filter does not compile.
	InvalidFilterReason = "InvalidFilter"
	// FilterBudgetExceededReason: an event's filters spent its budget
	// before every action was evaluated.
	FilterBudgetExceededReason = "FilterBudgetExceeded"
	// ActionLimitExceededReason: the namespace holds more KidActions than
	// an event evaluates; the action (past the limit in name order) never
	// runs.
	ActionLimitExceededReason = "ActionLimitExceeded"
	// InvalidTemplateReason: a resource action's template names no known
	// kind.
	InvalidTemplateReason = "InvalidTemplate"
	// MissingPermissionReason: kid-operator may not create the kind a
	// resource action's template names.
	MissingPermissionReason = "MissingPermission"
	// NotConfiguredReason: the product has no spec.api; session sync and
	// recovery are off.
	NotConfiguredReason = "NotConfigured"
	// APIReadyReason: the API key is present and k-ID accepted it.
	APIReadyReason = "Ready"
	// UnauthorizedReason: k-ID answered 401 to the product's API key (to
	// both keys, while a rotation's next key is in the Secret).
	UnauthorizedReason = "Unauthorized"
	// InsecureBaseURLReason: spec.api.baseURL is not https://, and the
	// manager does not allow that (--allow-insecure-api-urls); the key is
	// never sent.
	InsecureBaseURLReason = "InsecureBaseURL"
	// BaseURLNotAllowedReason: spec.api.baseURL names a host that is not
	// one of k-ID's API hosts, and the manager's --api-allow-hosts does not
	// allow it for the product's namespace; the API Secret is neither read
	// nor sent.
	BaseURLNotAllowedReason = "BaseURLNotAllowed"
	// UnreachableReason: k-ID's API could not be reached; calls are retried.
	UnreachableReason = "Unreachable"
	// FailingReason: most of the product's calls to k-ID's API failed
	// over the breaker's window; its reads are paused and one probe at a
	// time tries again (design.md §3, "Failures").
	FailingReason = "Failing"
	// NotFoundSurgeReason: too many of the product's sessions read
	// NOT_FOUND within the breaker's window (ErasuresHeldCondition).
	NotFoundSurgeReason = "NotFoundSurge"
	// ReadAfterChangeReason: the session was read from k-ID after the
	// permission change (SessionReadCondition).
	ReadAfterChangeReason = "ReadAfterChange"
	// APINotReadyReason: the product's APIReady is not True, so no read
	// was waited for (SessionReadCondition).
	APINotReadyReason = "APINotReady"
	// SessionGoneReason: the player is erased or its session deleted, so
	// it is not read again (SessionReadCondition).
	SessionGoneReason = "SessionGone"
	// ReadTimedOutReason: no read came within the bounded wait; the
	// actions ran against the permissions last read (SessionReadCondition).
	ReadTimedOutReason = "ReadTimedOut"
	// ConsentReason and friends explain KidUser conditions.
	ConsentReason      = "Consent"
	VerificationReason = "Verification"
	SessionReason      = "Session"
)

// Label keys set on KidEvents so that `kubectl get -l` finds them.
const (
	// ProductLabel holds the KidProduct name.
	ProductLabel = "kid.dev/product"
	// EventTypeLabel holds the event type, made label-safe.
	EventTypeLabel = "kid.dev/event-type"
	// SessionLabel holds the k-ID session id the event names, if any.
	SessionLabel = "kid.dev/session"
)
