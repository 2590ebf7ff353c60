package kidsim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"k8s.io/utils/clock"

	"github.com/kid-operator/kid-operator/internal/kid"
)

// FakeOptions configure a Fake.
type FakeOptions struct {
	// APIKey is the Bearer key the REST API accepts; any other key, or none,
	// gets 401. An empty APIKey accepts nothing, as a product without a key
	// would: a fake that lets everyone in would hide a client that forgets
	// the header.
	APIKey string
	// ProductID goes in data.productId of the events where k-ID puts it
	// (Challenge.StateChange, Session.*, Account.Delete).
	ProductID int64
	// WebhookURL receives the deliveries; "" means state changes are
	// delivered nowhere.
	WebhookURL string
	// WebhookSecret signs the deliveries as k-ID does.
	WebhookSecret []byte
	// Schedule is the wait before each retry; nil means RetrySchedule (5 s,
	// 10 s). Tests pass shorter ones; an empty non-nil slice means no retry.
	Schedule []time.Duration
	// PropagationDelay is how long /session/get answers 404 for a session
	// after an approval creates it, the delay k-ID's vendor guidance
	// reports (SetPropagationDelay and SetPropagationStatus change it).
	// Zero means none.
	PropagationDelay time.Duration
	// Clock is the clock of the API, the deliveries' timestamps and the
	// records; nil means the real clock. The retry schedule and the
	// delivery delay wait on real time: the integration tests' clock is
	// real time plus the jumps they make, and a passive one.
	Clock clock.PassiveClock
	// HTTPClient sends the deliveries; nil means a client with a 10 s
	// timeout. Its transport is wrapped to inject the delivery faults.
	HTTPClient *http.Client
	// OnAPIRequest, if set, is called after each REST API call, on the
	// request's goroutine before the answer is written (the CLI logs it).
	OnAPIRequest func(APIRequest)
	// OnDelivery, if set, is called after each delivery attempt, on the
	// delivery's goroutine.
	OnDelivery func(DeliveryRecord)
	// MaxRecords bounds each of the request and delivery logs to its last
	// MaxRecords records, while RequestCount and DeliveryCount still count
	// them all: a fake that runs for days (kidsim serve) must not grow
	// without end. Zero keeps every record, as a test that checks each
	// call needs.
	MaxRecords int
}

// DeliveryFault is what goes wrong with deliveries.
type DeliveryFault string

const (
	// FaultNone delivers normally.
	FaultNone DeliveryFault = ""
	// FaultDrop loses the event: nothing is sent and nothing is retried,
	// as when k-ID's side fails before the first attempt.
	FaultDrop DeliveryFault = "drop"
	// Fault5xx fails every attempt with a 502 from an imagined ingress in
	// front of the receiver: the retries run on the schedule and nothing
	// reaches the URL.
	Fault5xx DeliveryFault = "5xx"
	// FaultTimeout makes every attempt hang until the client's timeout,
	// reaching nothing.
	FaultTimeout DeliveryFault = "timeout"
)

// RevokedAnswer is how /age-verification/get-status answers a revoked
// verification, which k-ID does not document (spec §4.4): each way it
// might, so a test can try the operator against each.
type RevokedAnswer string

const (
	// RevokedAsPassed answers as before the revocation, PASS and nothing
	// more: the revocation cannot be read from the API.
	RevokedAsPassed RevokedAnswer = ""
	// RevokedAsStatus answers the status REVOKED, with a revokedReason.
	RevokedAsStatus RevokedAnswer = "status"
	// RevokedAsFlag answers PASS with "revoked": true and a revokedReason.
	RevokedAsFlag RevokedAnswer = "flag"
)

// ParseRevokedAnswer checks a RevokedAnswer's name.
func ParseRevokedAnswer(s string) (RevokedAnswer, error) {
	switch a := RevokedAnswer(s); a {
	case RevokedAsPassed, RevokedAsStatus, RevokedAsFlag:
		return a, nil
	}
	return "", fmt.Errorf("unknown revoked answer %q: want status, flag or empty", s)
}

// ParseDeliveryFault checks a fault's name.
func ParseDeliveryFault(s string) (DeliveryFault, error) {
	switch f := DeliveryFault(s); f {
	case FaultNone, FaultDrop, Fault5xx, FaultTimeout:
		return f, nil
	}
	return "", fmt.Errorf("unknown delivery fault %q: want drop, 5xx, timeout or empty", s)
}

// Errors of the control calls; the admin API answers 404 and 409 for them.
var (
	ErrNotFound   = errors.New("not found")
	ErrWrongState = errors.New("wrong state")
)

// Approval is what the trusted adult's approval of a challenge carries. Empty
// fields get defaults.
type Approval struct {
	// SessionID of the session created; default a new UUID.
	SessionID string `json:"sessionId,omitempty"`
	// KUID of the player; default a new UUID.
	KUID string `json:"kuid,omitempty"`
	// Email of the approver; default parent@example.com.
	Email string `json:"email,omitempty"`
	// DOB of the player, YYYY-MM-DD; default 2013-04-01.
	DOB string `json:"dob,omitempty"`
}

// Defaults of a session created by an approval.
const (
	DefaultApproverEmail = "parent@example.com"
	DefaultDOB           = "2013-04-01"
	DefaultJurisdiction  = "US-CA"
	DefaultAgeStatus     = "DIGITAL_MINOR"
)

// Values of a session permission's managedBy.
const (
	ManagedByPlayer     = "PLAYER"
	ManagedByGuardian   = "GUARDIAN"
	ManagedByProhibited = "PROHIBITED"
)

// Session is a session as /session/get answers it, its fields in k-ID's
// order.
type Session struct {
	AgeStatus    string       `json:"ageStatus"`
	DateOfBirth  string       `json:"dateOfBirth"`
	Etag         string       `json:"etag"`
	Jurisdiction string       `json:"jurisdiction"`
	KUID         string       `json:"kuid"`
	Permissions  []Permission `json:"permissions"`
	Allowances   []any        `json:"allowances"`
	SessionID    string       `json:"sessionId"`
	Status       string       `json:"status"`
}

// Permission is one of a session's permissions.
type Permission struct {
	Enabled   bool   `json:"enabled"`
	ManagedBy string `json:"managedBy"`
	Name      string `json:"name"`
	// VerifiedAgeThreshold is the age a player must prove to enable it
	// (0: none). Such permissions are never managed by the guardian.
	VerifiedAgeThreshold int `json:"verifiedAgeThreshold,omitempty"`
}

// DefaultPermissions are the permissions of a new session: one of each kind
// of manager, and one behind a verified age.
func DefaultPermissions() []Permission {
	return []Permission{
		{Enabled: false, ManagedBy: ManagedByGuardian, Name: "text-chat-private"},
		{Enabled: true, ManagedBy: ManagedByPlayer, Name: "ai-generated-avatars"},
		{Enabled: false, ManagedBy: ManagedByProhibited, Name: "voice-chat"},
		{Enabled: false, ManagedBy: ManagedByPlayer, Name: "purchases", VerifiedAgeThreshold: 18},
	}
}

// Challenge is a challenge as the fake holds it.
type Challenge struct {
	ChallengeID string    `json:"challengeId"`
	Status      string    `json:"status"`
	SessionID   string    `json:"sessionId,omitempty"`
	KUID        string    `json:"kuid,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
}

// AgeRange is a verification's age.
type AgeRange struct {
	Low  int `json:"low"`
	High int `json:"high"`
}

// Verification is an age verification as the fake holds it.
type Verification struct {
	ID            string    `json:"id"`
	Status        string    `json:"status"`
	Method        string    `json:"method,omitempty"`
	AgeCategory   string    `json:"ageCategory,omitempty"`
	Age           *AgeRange `json:"age,omitempty"`
	FailureReason string    `json:"failureReason,omitempty"`
	DOB           string    `json:"dob,omitempty"`
	// RevokedReason is set once the verification is revoked. What
	// get-status answers for a revoked verification is not documented, so
	// it keeps answering as before unless SetRevokedAnswer says otherwise.
	RevokedReason string    `json:"revokedReason,omitempty"`
	CreatedAt     time.Time `json:"createdAt"`
}

// StoredSession is a session with the time it was created.
type StoredSession struct {
	Session   Session   `json:"session"`
	CreatedAt time.Time `json:"createdAt"`
}

// State is everything the fake holds, each list in creation order.
type State struct {
	Challenges    []Challenge     `json:"challenges"`
	Verifications []Verification  `json:"verifications"`
	Sessions      []StoredSession `json:"sessions"`
}

// APIRequest is the record of one REST API call.
type APIRequest struct {
	At time.Time `json:"at"`
	// Method is the HTTP method.
	Method string `json:"method"`
	// Endpoint is the path after /api/v1/, such as "session/get"; empty
	// for a path outside the API.
	Endpoint string `json:"endpoint"`
	// Path is the request's whole path, such as "/api/v1/session/get", or
	// "/session/get" from a client whose base URL lacks /api/v1.
	Path   string     `json:"path"`
	Status int        `json:"status"`
	Query  url.Values `json:"query"`
	// KeyID tells the API keys the calls carried apart without holding
	// them (KeyID); empty for a call without a Bearer key.
	KeyID string `json:"keyId,omitempty"`
}

// KeyID is how APIRequest names the key a call carried: the first 12 hex
// digits of its SHA-256.
func KeyID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])[:12]
}

// DeliveryRecord is the record of one delivery attempt.
type DeliveryRecord struct {
	// At is when the attempt started.
	At time.Time `json:"at"`
	// Event numbers the events from 1, so the attempts of one event can be
	// told from those of another delivered at the same time.
	Event     int    `json:"event"`
	EventType string `json:"eventType"`
	// Attempt counts from 1.
	Attempt int `json:"attempt"`
	// Status is the answer, 0 when there was none.
	Status int `json:"status"`
	// Fault is the fault applied to this attempt.
	Fault DeliveryFault `json:"fault,omitempty"`
	// Err is the transport error, if any.
	Err string `json:"err,omitempty"`
}

// Fake is a stateful k-ID for tests and local runs: its REST API answers
// with k-ID's codes, bodies and headers, an admin API drives the state a
// parent or a verification provider would change, and each change is
// delivered by webhook, signed and retried as k-ID does.
type Fake struct {
	opts    FakeOptions
	handler http.Handler
	client  *http.Client
	// transport is closed on Close when the fake made it.
	transport *http.Transport

	// ctx ends on Close and aborts every delivery.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	apiKey string
	// order holds the ids of challenges, verifications and sessions in
	// creation order (UUIDs do not collide), which the clock cannot give
	// when a test freezes it.
	order         []string
	challenges    map[string]*Challenge
	verifications map[string]*Verification
	sessions      map[string]*storedSession
	events        int
	fault         DeliveryFault
	deliveryDelay time.Duration
	// statusWithoutSession: /challenge/get-status answers a PASS without
	// its sessionId (SetStatusWithoutSession).
	statusWithoutSession bool
	// revokedAnswer is how get-status answers a revoked verification
	// (SetRevokedAnswer).
	revokedAnswer RevokedAnswer
	limit         rateLimit
	buckets       map[string]*bucket
	retryAfter    time.Duration
	// The API faults (fake_api_faults.go): per endpoint, the fixed
	// window's limit and this second's counts, the propagation delay and
	// its answer, and PENDING for undecided challenges.
	apiFaults         map[string]*APIFault
	windowLimit       int
	windowStart       time.Time
	windowCalls       map[string]int
	propagationDelay  time.Duration
	propagationStatus int
	challengesPending bool
	// sessionFaults make /session/get misanswer for some sessions
	// (SetSessionNotFound, SetSessionStatus); at most maxSessionFaults.
	sessionFaults map[string]*SessionFault
	requests      records[APIRequest]
	deliveries    records[DeliveryRecord]
}

// storedSession adds what ordering and propagation need.
type storedSession struct {
	Session
	createdAt time.Time
	// seq orders the sessions of a kuid by creation.
	seq int
}

// NewFake returns a fake k-ID. Close it to stop its deliveries.
func NewFake(o FakeOptions) *Fake {
	if o.Schedule == nil {
		o.Schedule = RetrySchedule
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	f := &Fake{
		opts:          o,
		apiKey:        o.APIKey,
		challenges:    map[string]*Challenge{},
		verifications: map[string]*Verification{},
		sessions:      map[string]*storedSession{},
		buckets:       map[string]*bucket{},
		sessionFaults: map[string]*SessionFault{},
		retryAfter:    time.Second,
		apiFaults:     map[string]*APIFault{},
		windowCalls:   map[string]int{},
		// PropagationDelay is the start; SetPropagationDelay changes it.
		propagationDelay:  max(o.PropagationDelay, 0),
		propagationStatus: http.StatusNotFound,
		requests:          records[APIRequest]{max: o.MaxRecords},
		deliveries:        records[DeliveryRecord]{max: o.MaxRecords},
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.client = o.HTTPClient
	if f.client == nil {
		f.transport = http.DefaultTransport.(*http.Transport).Clone()
		f.client = &http.Client{Timeout: 10 * time.Second, Transport: f.transport}
	}
	mux := http.NewServeMux()
	mux.HandleFunc(apiPrefix, f.serveAPI)
	mux.Handle(adminPrefix, f.adminHandler())
	mux.HandleFunc("GET "+WidgetPath, f.serveWidget)
	mux.HandleFunc("/", f.serveUnknown)
	f.handler = mux
	return f
}

// Handler serves the REST API under /api/v1/, the admin API under /kidsim/
// and a stand-in for k-ID's widget at /widget (widget.go).
func (f *Fake) Handler() http.Handler { return f.handler }

// Close stops sending: deliveries waiting for their delay or a retry end,
// attempts in flight are aborted, and Close returns once all have ended.
// Later state changes are not delivered.
func (f *Fake) Close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
	if f.transport != nil {
		f.transport.CloseIdleConnections()
	}
}

// StartChallenge creates a challenge IN_PROGRESS, as /age-gate/check does for
// a minor, and delivers its Challenge.StateChange.
func (f *Fake) StartChallenge() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := &Challenge{ChallengeID: uuid.NewString(), Status: kid.StatusInProgress, CreatedAt: f.opts.Clock.Now()}
	f.challenges[c.ChallengeID] = c
	f.order = append(f.order, c.ChallengeID)
	f.deliverLocked(kid.ChallengeStateChange, Fields{ChallengeID: c.ChallengeID, ProductID: f.opts.ProductID, Status: c.Status})
	return c.ChallengeID
}

// ApproveChallenge passes an IN_PROGRESS challenge as a trusted adult's
// approval does: it creates the player's session (visible to /session/get
// after PropagationDelay) and delivers Challenge.StateChange PASS.
func (f *Fake) ApproveChallenge(id string, a Approval) (sessionID string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.openChallengeLocked(id)
	if err != nil {
		return "", err
	}
	a.SessionID = orDefault(a.SessionID, uuid.NewString())
	a.KUID = orDefault(a.KUID, uuid.NewString())
	a.Email = orDefault(a.Email, DefaultApproverEmail)
	a.DOB = orDefault(a.DOB, DefaultDOB)
	if _, ok := f.sessions[a.SessionID]; ok {
		return "", fmt.Errorf("session %s exists already: %w", a.SessionID, ErrWrongState)
	}
	s := &storedSession{
		Session: Session{
			AgeStatus:    DefaultAgeStatus,
			DateOfBirth:  a.DOB,
			Jurisdiction: DefaultJurisdiction,
			KUID:         a.KUID,
			Permissions:  DefaultPermissions(),
			Allowances:   []any{},
			SessionID:    a.SessionID,
			Status:       "ACTIVE",
		},
		createdAt: f.opts.Clock.Now(),
		seq:       len(f.order),
	}
	s.Etag = etag(s.Session)
	f.sessions[s.SessionID] = s
	f.order = append(f.order, s.SessionID)
	c.Status, c.SessionID, c.KUID = kid.StatusPass, s.SessionID, s.KUID
	f.deliverLocked(kid.ChallengeStateChange, Fields{
		ChallengeID: c.ChallengeID, ProductID: f.opts.ProductID, Status: c.Status,
		SessionID: s.SessionID, KUID: s.KUID, ApproverEmail: a.Email, DOB: a.DOB,
	})
	return s.SessionID, nil
}

// DenyChallenge fails an IN_PROGRESS challenge and delivers
// Challenge.StateChange FAIL.
func (f *Fake) DenyChallenge(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.openChallengeLocked(id)
	if err != nil {
		return err
	}
	c.Status = kid.StatusFail
	f.deliverLocked(kid.ChallengeStateChange, Fields{ChallengeID: c.ChallengeID, ProductID: f.opts.ProductID, Status: c.Status})
	return nil
}

func (f *Fake) openChallengeLocked(id string) (*Challenge, error) {
	c, ok := f.challenges[id]
	if !ok {
		return nil, fmt.Errorf("challenge %s: %w", id, ErrNotFound)
	}
	if c.Status != kid.StatusInProgress {
		return nil, fmt.Errorf("challenge %s is %s already: %w", id, c.Status, ErrWrongState)
	}
	return c, nil
}

// StartVerification creates a PENDING age verification, as
// /age-verification/perform-* does. Nothing is delivered: k-ID sends a
// result only when the verification completes.
func (f *Fake) StartVerification() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := &Verification{ID: uuid.NewString(), Status: kid.StatusPending, CreatedAt: f.opts.Clock.Now()}
	f.verifications[v.ID] = v
	f.order = append(f.order, v.ID)
	return v.ID
}

// CompleteVerification ends a PENDING verification and delivers its
// Verification.Result. A pass is an ID document of a 15-year-old (an exact
// age, so low equals high, with the date of birth); a fail is
// max-attempts-exceeded, which carries no method and no age.
func (f *Fake) CompleteVerification(id string, pass bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.verifications[id]
	if !ok {
		return fmt.Errorf("verification %s: %w", id, ErrNotFound)
	}
	if v.Status != kid.StatusPending {
		return fmt.Errorf("verification %s is %s already: %w", id, v.Status, ErrWrongState)
	}
	if pass {
		v.Status, v.Method, v.AgeCategory = kid.StatusPass, "id-document", "digital-youth"
		v.Age = &AgeRange{Low: 15, High: 15}
		v.DOB = f.opts.Clock.Now().AddDate(-15, -3, 0).Format(time.DateOnly)
	} else {
		v.Status, v.FailureReason = kid.StatusFail, "max-attempts-exceeded"
	}
	fields := Fields{ID: v.ID, Status: v.Status, Method: v.Method, AgeCategory: v.AgeCategory, FailureReason: v.FailureReason, DOB: v.DOB}
	if v.Age != nil {
		fields.AgeLow, fields.AgeHigh = v.Age.Low, v.Age.High
	}
	f.deliverLocked(kid.VerificationResult, fields)
	return nil
}

// RevokeVerification revokes a passed verification and delivers
// Verification.Revoke. An empty reason means fraudulent-activity-detected.
func (f *Fake) RevokeVerification(id, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.verifications[id]
	if !ok {
		return fmt.Errorf("verification %s: %w", id, ErrNotFound)
	}
	if v.Status != kid.StatusPass {
		// k-ID revokes "previously passed verifications" only.
		return fmt.Errorf("verification %s is %s, not PASS: %w", id, v.Status, ErrWrongState)
	}
	v.RevokedReason = orDefault(reason, "fraudulent-activity-detected")
	f.deliverLocked(kid.VerificationRevoke, Fields{VerificationIDs: []string{v.ID}, Reason: v.RevokedReason})
	return nil
}

// SetPermission sets one permission of a session, as a parent does in
// Family Connect, and delivers Session.ChangePermissions. The session gets a
// new etag. Setting a permission to the value it has changes nothing and
// sends nothing, so the etag stays a digest of the content.
func (f *Fake) SetPermission(sessionID, name string, enabled bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[sessionID]
	if !ok {
		return fmt.Errorf("session %s: %w", sessionID, ErrNotFound)
	}
	i := slices.IndexFunc(s.Permissions, func(p Permission) bool { return p.Name == name })
	if i < 0 {
		return fmt.Errorf("session %s has no permission %q: %w", sessionID, name, ErrNotFound)
	}
	if s.Permissions[i].Enabled == enabled {
		return nil
	}
	s.Permissions[i].Enabled = enabled
	s.Etag = etag(s.Session)
	f.deliverLocked(kid.SessionChangePermissions, Fields{SessionID: s.SessionID, ProductID: f.opts.ProductID})
	return nil
}

// AgeUp changes a session's age status as a birthday does, and sends
// nothing: k-ID fires no webhook for an age-up (spec §1.9). At LEGAL_ADULT
// the permissions the guardian managed pass to the player (spec §4.2:
// managedBy changes "from GUARDIAN to PLAYER when the player ages up"). The
// session gets a new etag.
func (f *Fake) AgeUp(sessionID, ageStatus string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[sessionID]
	if !ok {
		return fmt.Errorf("session %s: %w", sessionID, ErrNotFound)
	}
	if ageStatus == "" || ageStatus == s.AgeStatus {
		return fmt.Errorf("session %s is %s already: %w", sessionID, s.AgeStatus, ErrWrongState)
	}
	s.AgeStatus = ageStatus
	if ageStatus == "LEGAL_ADULT" {
		for i := range s.Permissions {
			if s.Permissions[i].ManagedBy == ManagedByGuardian {
				s.Permissions[i].ManagedBy = ManagedByPlayer
			}
		}
	}
	s.Etag = etag(s.Session)
	return nil
}

// DeleteSession deletes a session (/session/get then answers 400 NOT_FOUND)
// and delivers Session.Delete.
func (f *Fake) DeleteSession(sessionID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sessions[sessionID]; !ok {
		return fmt.Errorf("session %s: %w", sessionID, ErrNotFound)
	}
	delete(f.sessions, sessionID)
	delete(f.sessionFaults, sessionID)
	f.deliverLocked(kid.SessionDelete, Fields{SessionID: sessionID, ProductID: f.opts.ProductID})
	return nil
}

// DeleteAccount deletes every session of a k-ID user and delivers one
// Account.Delete.
func (f *Fake) DeleteAccount(kuid string) error {
	_, err := f.deleteAccount(kuid)
	return err
}

func (f *Fake) deleteAccount(kuid string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for id, s := range f.sessions {
		if s.KUID == kuid {
			delete(f.sessions, id)
			delete(f.sessionFaults, id)
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("account %s has no session: %w", kuid, ErrNotFound)
	}
	f.deliverLocked(kid.AccountDelete, Fields{KUID: kuid, ProductID: f.opts.ProductID})
	return n, nil
}

// SetDeliveryFault sets the fault of the attempts made from now on, retries
// of earlier events included. A name ParseDeliveryFault refuses delivers
// normally.
func (f *Fake) SetDeliveryFault(mode DeliveryFault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault = mode
}

// SetDeliveryDelay delays the first attempt of each event created from now
// on, so a test can make its API poll win the race against the webhook.
func (f *Fake) SetDeliveryDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deliveryDelay = d
}

// SetStatusWithoutSession makes /challenge/get-status answer a PASS without
// its sessionId, as k-ID may ("present on PASS, but not always", spec
// §4.3); the webhook still carries it. Off answers as the webhook does.
func (f *Fake) SetStatusWithoutSession(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statusWithoutSession = on
}

// SetRevokedAnswer sets how /age-verification/get-status answers a revoked
// verification: as passed (the default), with the status REVOKED, or with a
// revoked flag. An unknown answer answers as passed.
func (f *Fake) SetRevokedAnswer(a RevokedAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revokedAnswer = a
}

// SetRateLimit limits the REST API to rps requests a second per API key,
// with bursts of up to burst (at least 1); over it the API answers 429.
// rps <= 0 turns the limit off.
func (f *Fake) SetRateLimit(rps float64, burst int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.limit = rateLimit{rps: rps, burst: max(burst, 1)}
	clear(f.buckets)
}

// SetRetryAfter sets the Retry-After of a 429 (default 1 s; sent in whole
// seconds, rounded up).
func (f *Fake) SetRetryAfter(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retryAfter = d
}

// SetAPIKey replaces the key the REST API accepts, as rotating it in
// Compliance Studio does.
func (f *Fake) SetAPIKey(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.apiKey = key
}

// Requests returns every REST API call so far, in order (the last
// FakeOptions.MaxRecords when that is set).
func (f *Fake) Requests() []APIRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests.all()
}

// Deliveries returns every delivery attempt so far, in the order they
// ended (the last FakeOptions.MaxRecords when that is set).
func (f *Fake) Deliveries() []DeliveryRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deliveries.all()
}

// State returns a copy of everything the fake holds.
func (f *Fake) State() State {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := State{Challenges: []Challenge{}, Verifications: []Verification{}, Sessions: []StoredSession{}}
	seen := map[string]bool{}
	for _, id := range f.order {
		if seen[id] {
			continue // a session deleted and created again under its id
		}
		seen[id] = true
		if c, ok := f.challenges[id]; ok {
			st.Challenges = append(st.Challenges, *c)
		}
		if v, ok := f.verifications[id]; ok {
			c := *v
			if v.Age != nil {
				age := *v.Age
				c.Age = &age
			}
			st.Verifications = append(st.Verifications, c)
		}
		if s, ok := f.sessions[id]; ok {
			st.Sessions = append(st.Sessions, StoredSession{Session: s.copy(), CreatedAt: s.createdAt})
		}
	}
	return st
}

// copy returns the session with its own permissions.
func (s *storedSession) copy() Session {
	c := s.Session
	c.Permissions = slices.Clone(s.Permissions)
	c.Allowances = []any{}
	return c
}

// etag is a hex digest of the session's content, so it changes exactly when
// the content does. Its 40 characters match the length of k-ID's.
func etag(s Session) string {
	s.Etag = ""
	b, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("kidsim: marshalling a session: %v", err)) // plain data: cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:20])
}
