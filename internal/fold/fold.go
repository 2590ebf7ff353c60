// Package fold computes a player's KidUser status from k-ID's events. It is
// pure: no API calls, no clock, no randomness, so it can be tested
// exhaustively.
//
// The fold is a join: each event is turned into a partial status (Delta), and
// Merge joins two statuses field by field, each field taking the value with
// the higher precedence (design.md §2, "Precedence"). Merge is commutative,
// associative and idempotent, so the result does not depend on the order in
// which k-ID's deliveries arrive, nor on how often they repeat. Linking two
// KidUsers of one player is the same Merge. The one count, observedEvents,
// is a grow-only counter per KidUser object, so it is a join too; the names
// of the events in flight (folded, not yet marked Applied) keep a fold
// repeated after a crash from counting its event twice.
package fold

import (
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// MaxChallengeIDs bounds the challenges remembered per player (the CRD's
// limit). The list is in the order the ids were first seen, oldest first,
// and past the bound the oldest are dropped: a new challenge is always
// held, so its later events link to the player. Merge keeps the first
// status's order and appends what the second adds, so the set it holds
// does not depend on the order of events below the bound; the order does.
const MaxChallengeIDs = 64

// MaxEventCounts bounds eventCounts (the CRD's limit). Each merge of a
// stand-in adds its origin; the KidUser controller folds the counts of
// origins gone into one entry (CompactCounts) long before the bound.
const MaxEventCounts = 128

// compactedSuffix marks the entry of eventCounts that holds the counts of
// the origins compacted into a user: its origin is the user's UID and this.
const compactedSuffix = "/compacted"

// MaxVerifications bounds the verification records per player (the CRD's
// limit).
const MaxVerifications = 32

// MaxInFlightEvents bounds the names of events in flight per player (the
// CRD's limit). The controller drops the names of finished events before
// each fold, so the list holds about the events being folded at once and
// never reaches this; were it exceeded, the lexically smallest names are
// kept, so Merge stays order-free, and an event whose name was dropped
// would be counted again if its fold were repeated.
const MaxInFlightEvents = 64

// Event is what the fold needs of a KidEvent.
type Event struct {
	// Name of the KidEvent.
	Name string
	// Type is k-ID's eventType.
	Type string
	// SignedAt is k-ID's signing time.
	SignedAt time.Time
	// Subject holds the ids the event names. For Verification.Revoke it may
	// be narrowed to the ids of one player.
	Subject kidv1.EventSubject
	// Payload is the decoded data.
	Payload kid.Payload
}

// Apply folds one event into a status and returns the result; st is not
// modified. origin is the UID of the KidUser object being written: it keys
// the event count (see Merge).
//
// Everything but the count is a join, so folding an event again changes
// nothing; the count would grow. The controller writes the user before it
// marks the event Applied, so a crash between the two writes folds the event
// again: its name, left in inFlightEvents by the first fold (Delta puts it
// there), says it was counted.
func Apply(st *kidv1.KidUserStatus, e *Event, privacy kid.Privacy, origin string) *kidv1.KidUserStatus {
	counted := e.Name != "" && slices.Contains(st.InFlightEvents, e.Name)
	out := Merge(st, Delta(e, privacy))
	if !counted {
		out.EventCounts = addCount(out.EventCounts, origin, 1)
		out.ObservedEvents = sumCounts(out.EventCounts)
	}
	return out
}

// Join folds one event into a status without counting it and without
// naming it in flight: for an event already counted on another user (or on
// this one), folded again because a later copy added to it what the first
// lacked, such as the session that links its challenge to a player
// (design.md §2, "The richer copy wins"). The users that counted it carry
// their counts into the player's user when they are merged, so the event is
// counted once. st is not modified.
func Join(st *kidv1.KidUserStatus, e *Event, privacy kid.Privacy) *kidv1.KidUserStatus {
	d := Delta(e, privacy)
	d.InFlightEvents = nil
	return Merge(st, d)
}

// Delta is the partial status one event stands for.
func Delta(e *Event, privacy kid.Privacy) *kidv1.KidUserStatus {
	p := &e.Payload
	at := metav1.NewTime(e.SignedAt.UTC())
	d := &kidv1.KidUserStatus{
		SessionID:     e.Subject.SessionID,
		KUID:          e.Subject.KUID,
		LastEventRef:  &kidv1.LocalObjectReference{Name: e.Name},
		LastEventTime: &at,
	}
	if e.Name != "" {
		d.InFlightEvents = []string{e.Name}
	}
	if e.Subject.ChallengeID != "" {
		d.ChallengeIDs = []string{e.Subject.ChallengeID}
	}
	if d.SessionID != "" {
		d.Session.State = kidv1.SessionActive
	}
	keep := func(email, dob string) {
		pd := &kidv1.PersonalData{}
		if privacy.KeepEmail {
			pd.ApproverEmail = email
		}
		if privacy.KeepDateOfBirth {
			pd.DateOfBirth = dob
		}
		if *pd != (kidv1.PersonalData{}) {
			d.PersonalData = pd
		}
	}

	switch e.Type {
	case kid.ChallengeStateChange:
		state := map[string]kidv1.ConsentState{
			kid.StatusInProgress: kidv1.ConsentPending,
			kid.StatusPending:    kidv1.ConsentPending,
			kid.StatusPass:       kidv1.ConsentGranted,
			kid.StatusFail:       kidv1.ConsentDenied,
		}[p.Status]
		if state != "" {
			d.Consent = kidv1.ConsentStatus{State: state, ChallengeID: p.ID, Time: &at}
		}
		keep(p.ApproverEmail, p.DOB)
	case kid.ParentalConsentGranted:
		d.Consent = kidv1.ConsentStatus{State: kidv1.ConsentGranted, ChallengeID: p.ChallengeID, Time: &at}
	case kid.VerificationResult, kid.AgeAssuranceResult:
		if r := verificationRecord(p, at); r != nil {
			d.Verification.Records = []kidv1.VerificationRecord{*r}
		}
		keep("", p.DOB)
	case kid.VerificationRevoke:
		for _, v := range p.Verifications {
			if slices.Contains(e.Subject.VerificationIDs, v.ID) {
				d.Verification.Records = append(d.Verification.Records, kidv1.VerificationRecord{
					ID: v.ID, State: kidv1.VerificationRevoked, Reason: v.Reason, Time: &at,
				})
			}
		}
	case kid.SessionChangePermissions:
		d.Session.PermissionsChangedAt = &at
	case kid.SessionDelete:
		d.Session = kidv1.SessionStatus{State: kidv1.SessionDeleted, DeletedAt: &at}
		d.ErasedAt = &at
	case kid.AccountDelete:
		d.AccountDeleted = true
		d.ErasedAt = &at
	}
	return normalize(d)
}

// verificationRecord reads a Verification.Result, or either shape of the
// deprecated AgeAssurance.Result.
func verificationRecord(p *kid.Payload, at metav1.Time) *kidv1.VerificationRecord {
	if p.ID == "" {
		return nil
	}
	r := &kidv1.VerificationRecord{ID: p.ID, Method: p.Method, AgeCategory: p.AgeCategory, Time: &at}
	switch p.Status {
	case kid.StatusPass:
		r.State = kidv1.VerificationVerified
	case kid.StatusFail:
		r.State = kidv1.VerificationFailed
		r.Reason = p.FailureReason
	case kid.StatusInconclusive:
		// Legacy AgeAssurance.Result: no decision. Recorded, so that it
		// shows, but it ranks below any decision.
		r.State = kidv1.VerificationUnverified
		r.Reason = "inconclusive"
	default:
		return nil
	}
	switch {
	case p.Age != nil:
		r.Age = ageRange(p.Age.Low, p.Age.High)
	case p.AgeRange != nil:
		r.Age = ageRange(p.AgeRange.MinAge, p.AgeRange.MaxAge)
	}
	return r
}

func ageRange(low, high *kid.LenientInt) *kidv1.AgeRange {
	conv := func(n *kid.LenientInt) *int32 {
		if n == nil || !n.Set || n.Value < 0 || n.Value > 200 {
			return nil
		}
		v := int32(n.Value)
		return &v
	}
	a := &kidv1.AgeRange{Low: conv(low), High: conv(high)}
	if a.Low == nil && a.High == nil {
		return nil
	}
	return a
}

// Merge joins two statuses. Neither argument is modified.
func Merge(a, b *kidv1.KidUserStatus) *kidv1.KidUserStatus {
	out := &kidv1.KidUserStatus{
		Conditions:     a.DeepCopy().Conditions, // owned by the controller, not the fold
		SessionID:      minNonEmpty(a.SessionID, b.SessionID),
		KUID:           minNonEmpty(a.KUID, b.KUID),
		ChallengeIDs:   newest(a.ChallengeIDs, b.ChallengeIDs, MaxChallengeIDs),
		Consent:        mergeConsent(a.Consent, b.Consent),
		Verification:   kidv1.VerificationStatus{Records: mergeRecords(a.Verification.Records, b.Verification.Records)},
		Session:        mergeSession(a.Session, b.Session),
		AccountDeleted: a.AccountDeleted || b.AccountDeleted,
		PersonalData:   mergePersonal(a.PersonalData, b.PersonalData),
		ErasedAt:       earliest(a.ErasedAt, b.ErasedAt),
		EventCounts:    mergeCounts(a.EventCounts, b.EventCounts),
		// A stand-in's names move to the user it is merged into, so that an
		// event folded into the stand-in and folded again after a crash,
		// now into that user, is not counted twice.
		InFlightEvents: union(a.InFlightEvents, b.InFlightEvents, MaxInFlightEvents),
	}
	out.ObservedEvents = sumCounts(out.EventCounts)
	out.LastEventRef, out.LastEventTime = a.LastEventRef.DeepCopy(), a.LastEventTime.DeepCopy()
	if later(b.LastEventTime, b.LastEventRef, a.LastEventTime, a.LastEventRef) {
		out.LastEventRef, out.LastEventTime = b.LastEventRef.DeepCopy(), b.LastEventTime.DeepCopy()
	}
	return normalize(out)
}

// normalize derives the summary fields and applies erasure. It is
// idempotent, so Merge stays a join.
func normalize(st *kidv1.KidUserStatus) *kidv1.KidUserStatus {
	st.Verification.State = summarize(st.Verification.Records)
	if st.Consent.State == "" {
		st.Consent.State = kidv1.ConsentNone
	}
	if st.ErasedAt != nil {
		// Erased: keep what shows the erasure happened and what the game
		// needs to refuse access; drop personal data and age details.
		st.PersonalData = nil
		for i := range st.Verification.Records {
			st.Verification.Records[i].Age = nil
			st.Verification.Records[i].AgeCategory = ""
		}
	}
	return st
}

var consentRank = map[kidv1.ConsentState]int{
	"": 0, kidv1.ConsentNone: 0, kidv1.ConsentPending: 1, kidv1.ConsentDenied: 2, kidv1.ConsentGranted: 3,
}

// mergeConsent: the higher state wins (None < Pending < Denied < Granted); of
// two equal states, the earlier one, then the smaller challenge id.
func mergeConsent(a, b kidv1.ConsentStatus) kidv1.ConsentStatus {
	ra, rb := consentRank[a.State], consentRank[b.State]
	switch {
	case ra > rb:
		return *a.DeepCopy()
	case rb > ra:
		return *b.DeepCopy()
	case before(b.Time, a.Time) || (timeEqual(a.Time, b.Time) && b.ChallengeID < a.ChallengeID):
		return *b.DeepCopy()
	}
	return *a.DeepCopy()
}

var verificationRank = map[kidv1.VerificationState]int{
	kidv1.VerificationUnverified: 0, kidv1.VerificationFailed: 1, kidv1.VerificationVerified: 2, kidv1.VerificationRevoked: 3,
}

// outranks orders two records of one verification: the higher state first
// (Unverified < Failed < Verified < Revoked: only a revocation takes Verified
// away), then the earlier time, then the smaller reason, method.
func outranks(a, b *kidv1.VerificationRecord) bool {
	if ra, rb := verificationRank[a.State], verificationRank[b.State]; ra != rb {
		return ra > rb
	}
	if !timeEqual(a.Time, b.Time) {
		return before(a.Time, b.Time)
	}
	if a.Reason != b.Reason {
		return a.Reason < b.Reason
	}
	return a.Method < b.Method
}

// mergeRecords joins the records by id. For one id, each field takes the
// value of the highest-ranked record that has one, so a revocation keeps the
// method and age of the verification it revoked.
func mergeRecords(a, b []kidv1.VerificationRecord) []kidv1.VerificationRecord {
	byID := map[string][]kidv1.VerificationRecord{}
	for _, r := range slices.Concat(a, b) {
		byID[r.ID] = append(byID[r.ID], r)
	}
	if len(byID) == 0 {
		return nil
	}
	out := make([]kidv1.VerificationRecord, 0, len(byID))
	for _, rs := range byID {
		slices.SortFunc(rs, func(x, y kidv1.VerificationRecord) int {
			switch {
			case outranks(&x, &y):
				return -1
			case outranks(&y, &x):
				return 1
			}
			return 0
		})
		merged := *rs[0].DeepCopy()
		for _, r := range rs[1:] {
			if merged.Method == "" {
				merged.Method = r.Method
			}
			if merged.AgeCategory == "" {
				merged.AgeCategory = r.AgeCategory
			}
			if merged.Age == nil && r.Age != nil {
				merged.Age = r.Age.DeepCopy()
			}
		}
		out = append(out, merged)
	}
	slices.SortFunc(out, func(x, y kidv1.VerificationRecord) int { return strings.Compare(x.ID, y.ID) })
	if len(out) > MaxVerifications {
		out = out[:MaxVerifications]
	}
	return out
}

// summarize: Verified if any verification passed and stands, else Revoked,
// else Failed, else Unverified.
func summarize(records []kidv1.VerificationRecord) kidv1.VerificationState {
	has := func(s kidv1.VerificationState) bool {
		return slices.ContainsFunc(records, func(r kidv1.VerificationRecord) bool { return r.State == s })
	}
	for _, s := range []kidv1.VerificationState{kidv1.VerificationVerified, kidv1.VerificationRevoked, kidv1.VerificationFailed} {
		if has(s) {
			return s
		}
	}
	return kidv1.VerificationUnverified
}

// mergeSession: Deleted outranks Active (nothing resurrects a deleted
// session); times take the latest change and the first deletion; what k-ID's
// /session/get reported is taken whole from the later read.
func mergeSession(a, b kidv1.SessionStatus) kidv1.SessionStatus {
	synced := &a
	if syncedLater(&b, &a) {
		synced = &b
	}
	out := kidv1.SessionStatus{
		State:                a.State,
		PermissionsChangedAt: latest(a.PermissionsChangedAt, b.PermissionsChangedAt),
		DeletedAt:            earliest(a.DeletedAt, b.DeletedAt),
		Permissions:          slices.Clone(synced.Permissions),
		PermissionsSummary:   synced.PermissionsSummary,
		AgeStatus:            synced.AgeStatus,
		Jurisdiction:         synced.Jurisdiction,
		Status:               synced.Status,
		ETag:                 synced.ETag,
		SyncedAt:             synced.SyncedAt.DeepCopy(),
		PermissionsReadAt:    latest(a.PermissionsReadAt, b.PermissionsReadAt),
	}
	for i := range out.Permissions {
		out.Permissions[i] = *out.Permissions[i].DeepCopy()
	}
	if b.State == kidv1.SessionDeleted || out.State == "" {
		out.State = b.State
	}
	return out
}

// syncedLater orders two reads of a session: the later one, then (should
// two reads carry one time) the larger etag, so Merge stays a join.
func syncedLater(b, a *kidv1.SessionStatus) bool {
	switch {
	case b.SyncedAt == nil:
		return false
	case a.SyncedAt == nil:
		return true
	case !a.SyncedAt.Equal(b.SyncedAt):
		return a.SyncedAt.Before(b.SyncedAt)
	}
	return b.ETag > a.ETag
}

// Session is what k-ID's /session/get reported of a session.
type Session struct {
	SessionID    string
	KUID         string
	AgeStatus    string
	Jurisdiction string
	Status       string
	ETag         string
	DateOfBirth  string
	Permissions  []kidv1.SessionPermission
	// At is when k-ID answered.
	At time.Time
	// ReadFor is the newest permission change the read answered for
	// (zero: none): it becomes permissionsReadAt.
	ReadFor time.Time
}

// SyncDelta is the partial status a read of the session stands for. It is
// joined with Merge like an event's Delta, so a sync and a fold that race
// each other both survive. The date of birth is kept only where the
// product's privacy settings allow it.
func SyncDelta(s *Session, privacy kid.Privacy) *kidv1.KidUserStatus {
	at := metav1.NewTime(s.At.UTC())
	enabled := 0
	perms := make([]kidv1.SessionPermission, 0, len(s.Permissions))
	for _, p := range s.Permissions {
		if p.Enabled {
			enabled++
		}
		perms = append(perms, *p.DeepCopy())
	}
	slices.SortFunc(perms, func(x, y kidv1.SessionPermission) int { return strings.Compare(x.Name, y.Name) })
	d := &kidv1.KidUserStatus{
		SessionID: s.SessionID,
		KUID:      s.KUID,
		Session: kidv1.SessionStatus{
			State:              kidv1.SessionActive,
			Permissions:        perms,
			PermissionsSummary: strconv.Itoa(enabled) + "/" + strconv.Itoa(len(perms)) + " enabled",
			AgeStatus:          s.AgeStatus,
			Jurisdiction:       s.Jurisdiction,
			Status:             s.Status,
			ETag:               s.ETag,
			SyncedAt:           &at,
		},
	}
	if len(perms) == 0 {
		d.Session.Permissions = nil
	}
	if !s.ReadFor.IsZero() {
		readFor := metav1.NewTime(s.ReadFor.UTC())
		d.Session.PermissionsReadAt = &readFor
	}
	if privacy.KeepDateOfBirth && s.DateOfBirth != "" {
		d.PersonalData = &kidv1.PersonalData{DateOfBirth: s.DateOfBirth}
	}
	return normalize(d)
}

// ReadDelta is the partial status of a read that changed nothing but
// answered for the permission change at readFor (a 304 after a notice): the
// session's permissionsReadAt.
func ReadDelta(readFor time.Time) *kidv1.KidUserStatus {
	at := metav1.NewTime(readFor.UTC())
	return &kidv1.KidUserStatus{Session: kidv1.SessionStatus{PermissionsReadAt: &at}}
}

// mergeCounts keeps, per origin, the larger count: a grow-only counter, so
// that merging the same users twice counts nothing twice.
func mergeCounts(a, b []kidv1.EventCount) []kidv1.EventCount {
	byOrigin := map[string]int64{}
	for _, c := range slices.Concat(a, b) {
		byOrigin[c.Origin] = max(byOrigin[c.Origin], c.Count)
	}
	if len(byOrigin) == 0 {
		return nil
	}
	out := make([]kidv1.EventCount, 0, len(byOrigin))
	for origin, n := range byOrigin {
		out = append(out, kidv1.EventCount{Origin: origin, Count: n})
	}
	slices.SortFunc(out, func(x, y kidv1.EventCount) int { return strings.Compare(x.Origin, y.Origin) })
	return out
}

func addCount(counts []kidv1.EventCount, origin string, n int64) []kidv1.EventCount {
	for i := range counts {
		if counts[i].Origin == origin {
			counts[i].Count += n
			return counts
		}
	}
	counts = append(counts, kidv1.EventCount{Origin: origin, Count: n})
	slices.SortFunc(counts, func(x, y kidv1.EventCount) int { return strings.Compare(x.Origin, y.Origin) })
	return counts
}

// CompactCounts sums the counts of the origins that live says are gone
// into one entry of owner's (the UID of the user whose counts these are),
// and keeps the rest as they are: the sum, observedEvents, does not change.
// Only a gone origin's entry may be folded: a user that still exists may be
// merged again, and its count, kept per origin by the larger, would then be
// added a second time. A compacted entry is live while its owner is (an
// account's stand-in is merged and kept). counts is not modified.
func CompactCounts(counts []kidv1.EventCount, owner string, live func(uid string) bool) []kidv1.EventCount {
	into := owner + compactedSuffix
	var out []kidv1.EventCount
	var gone int64
	for _, c := range counts {
		if c.Origin == into || !live(strings.TrimSuffix(c.Origin, compactedSuffix)) {
			gone += c.Count
			continue
		}
		out = append(out, c)
	}
	if gone > 0 {
		out = append(out, kidv1.EventCount{Origin: into, Count: gone})
	}
	slices.SortFunc(out, func(x, y kidv1.EventCount) int { return strings.Compare(x.Origin, y.Origin) })
	return out
}

func sumCounts(counts []kidv1.EventCount) int64 {
	var n int64
	for _, c := range counts {
		n += c.Count
	}
	return n
}

func mergePersonal(a, b *kidv1.PersonalData) *kidv1.PersonalData {
	if a == nil && b == nil {
		return nil
	}
	var x, y kidv1.PersonalData
	if a != nil {
		x = *a
	}
	if b != nil {
		y = *b
	}
	return &kidv1.PersonalData{
		DateOfBirth:   minNonEmpty(x.DateOfBirth, y.DateOfBirth),
		ApproverEmail: minNonEmpty(x.ApproverEmail, y.ApproverEmail),
	}
}

// minNonEmpty picks the non-empty one, or the smaller of two: a
// deterministic choice where k-ID should never disagree with itself.
func minNonEmpty(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return min(a, b)
}

func union(a, b []string, limit int) []string {
	if len(a) == 0 && len(b) == 0 {
		return nil
	}
	out := slices.Concat(a, b)
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

// newest is a's ids, then those b adds, in the order first seen, without
// the oldest past limit.
func newest(a, b []string, limit int) []string {
	out := slices.Clone(a)
	for _, id := range b {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func before(a, b *metav1.Time) bool {
	switch {
	case a == nil:
		return false
	case b == nil:
		return true
	}
	return a.Before(b)
}

func timeEqual(a, b *metav1.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}

func earliest(a, b *metav1.Time) *metav1.Time {
	if before(b, a) {
		return b.DeepCopy()
	}
	return a.DeepCopy()
}

func latest(a, b *metav1.Time) *metav1.Time {
	if a == nil || (b != nil && a.Before(b)) {
		return b.DeepCopy()
	}
	return a.DeepCopy()
}

// later orders events by signing time, then name.
func later(at *metav1.Time, a *kidv1.LocalObjectReference, bt *metav1.Time, b *kidv1.LocalObjectReference) bool {
	switch {
	case at == nil:
		return false
	case bt == nil:
		return true
	case !at.Equal(bt):
		return bt.Before(at)
	}
	return a != nil && (b == nil || a.Name > b.Name)
}
