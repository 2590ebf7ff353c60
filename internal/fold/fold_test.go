package fold

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apiequality "k8s.io/apimachinery/pkg/api/equality"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

const (
	challenge  = "c-1"
	challenge2 = "c-2"
	session    = "s-1"
	kuid       = "k-1"
	verif      = "v-1"
	verif2     = "v-2"
	email      = "parent@example.com"
	dob        = "2011-07-12"
)

var t0 = time.Unix(1764000000, 0)

// ev builds the Event the controller would hand to the fold for a payload
// built by the simulator, signed n seconds after t0.
func ev(t testing.TB, n int, eventType string, f kidsim.Fields) *Event {
	body, err := kidsim.Build(eventType, f)
	if err != nil {
		t.Fatal(err)
	}
	env, err := kid.ParseEnvelope(body)
	if err != nil {
		t.Fatal(err)
	}
	s := env.Subject()
	return &Event{
		Name:     fmt.Sprintf("e%02d", n),
		Type:     eventType,
		SignedAt: t0.Add(time.Duration(n) * time.Second),
		Subject:  kidv1.EventSubject{SessionID: s.SessionID, ChallengeID: s.ChallengeID, VerificationIDs: s.VerificationIDs, KUID: s.KUID},
		Payload:  env.Payload,
	}
}

var everything = kid.Privacy{KeepEmail: true, KeepDateOfBirth: true}

func foldAll(events []*Event) *kidv1.KidUserStatus { return foldInto("uid-1", events) }

// foldInto folds events into a new KidUser object with the given UID.
func foldInto(origin string, events []*Event) *kidv1.KidUserStatus {
	st := &kidv1.KidUserStatus{}
	for _, e := range events {
		st = Apply(st, e, everything, origin)
	}
	return st
}

// sequences are realistic event sequences for one player, in k-ID's order.
func sequences(t testing.TB) map[string][]*Event {
	return map[string][]*Event{
		"consent then session life": {
			ev(t, 1, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusInProgress}),
			ev(t, 2, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusPass, SessionID: session, KUID: kuid, DOB: dob, ApproverEmail: email}),
			ev(t, 3, kid.SessionChangePermissions, kidsim.Fields{SessionID: session}),
			ev(t, 4, kid.SessionChangePermissions, kidsim.Fields{SessionID: session}),
			ev(t, 5, kid.SessionDelete, kidsim.Fields{SessionID: session}),
		},
		"denied then granted on a new challenge": {
			ev(t, 1, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusInProgress}),
			ev(t, 2, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusFail}),
			ev(t, 3, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge2, Status: kid.StatusInProgress}),
			ev(t, 4, kid.ParentalConsentGranted, kidsim.Fields{ChallengeID: challenge2}),
			ev(t, 5, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge2, Status: kid.StatusPass, SessionID: session, KUID: kuid}),
		},
		"verified, revoked, verified again": {
			ev(t, 1, kid.VerificationResult, kidsim.Fields{ID: verif, Status: kid.StatusPass, Method: "id-document", AgeLow: 43, AgeHigh: 43, DOB: "1981-06-20"}),
			ev(t, 2, kid.VerificationRevoke, kidsim.Fields{VerificationIDs: []string{verif}, Reason: "fraudulent-activity-detected"}),
			ev(t, 3, kid.VerificationResult, kidsim.Fields{ID: verif2, Status: kid.StatusFail, FailureReason: "age-criteria-not-met", AgeLow: 13, AgeHigh: 17}),
			ev(t, 4, kid.VerificationResult, kidsim.Fields{ID: verif2, Status: kid.StatusPass, Method: "age-estimation-scan", AgeLow: 18, AgeHigh: 100}),
			// A bulk revocation, narrowed (as the controller does) to the ids
			// this player holds.
			narrow(ev(t, 5, kid.VerificationRevoke, kidsim.Fields{VerificationIDs: []string{verif, "someone-else"}, Reason: "provider-reported-error"}), verif),
		},
		"account deleted after consent, with repeats": {
			ev(t, 1, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusPass, SessionID: session, KUID: kuid, DOB: dob, ApproverEmail: email}),
			ev(t, 1, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusPass, SessionID: session, KUID: kuid, DOB: dob, ApproverEmail: email}),
			ev(t, 2, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusInProgress}),
			ev(t, 3, kid.AgeAssuranceResult, kidsim.Fields{ID: verif, Status: kid.StatusPass, AgeCategory: "digital-youth", AgeLow: 14, AgeHigh: 16, DOB: dob}),
			ev(t, 4, kid.AccountDelete, kidsim.Fields{KUID: kuid}),
			ev(t, 5, kid.SessionChangePermissions, kidsim.Fields{SessionID: session}),
		},
		"legacy inconclusive then a decision": {
			{Name: "e01", Type: kid.AgeAssuranceResult, SignedAt: t0, Payload: legacy(t, verif, kid.StatusInconclusive)},
			{Name: "e02", Type: kid.AgeAssuranceResult, SignedAt: t0.Add(time.Second), Payload: legacy(t, verif, kid.StatusPass)},
			ev(t, 3, kid.VerificationResult, kidsim.Fields{ID: verif2, Status: kid.StatusFail, FailureReason: "max-attempts-exceeded"}),
			ev(t, 4, kid.VerificationRevoke, kidsim.Fields{VerificationIDs: []string{verif}}),
			ev(t, 5, kid.VerificationResult, kidsim.Fields{ID: verif, Status: kid.StatusPass}),
		},
	}
}

func legacy(t testing.TB, id, status string) kid.Payload {
	body := fmt.Sprintf(`{"eventType":"AgeAssurance.Result","data":{"id":%q,"status":%q,"ageRange":{"minAge":18,"maxAge":25,"confidence":0.8}}}`, id, status)
	env, err := kid.ParseEnvelope([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return env.Payload
}

// permutations calls f with every ordering of events (Heap's algorithm).
func permutations(events []*Event, f func([]*Event)) {
	a := append([]*Event(nil), events...)
	var generate func(int)
	generate = func(k int) {
		if k <= 1 {
			f(a)
			return
		}
		for i := 0; i < k; i++ {
			generate(k - 1)
			if k%2 == 0 {
				a[i], a[k-1] = a[k-1], a[i]
			} else {
				a[0], a[k-1] = a[k-1], a[0]
			}
		}
	}
	generate(len(a))
}

func dump(st *kidv1.KidUserStatus) string {
	b, _ := json.MarshalIndent(st, "", " ")
	return string(b)
}

// challengesSorted is st with its challenge ids sorted: the list is in the
// order they were first seen (so that the newest are kept past the bound),
// and what must not depend on the order of events is the set.
func challengesSorted(st *kidv1.KidUserStatus) *kidv1.KidUserStatus {
	out := st.DeepCopy()
	slices.Sort(out.ChallengeIDs)
	return out
}

func TestEveryOrderFoldsToTheInOrderStatus(t *testing.T) {
	for name, events := range sequences(t) {
		t.Run(name, func(t *testing.T) {
			want := foldAll(events)
			n := 0
			permutations(events, func(order []*Event) {
				n++
				if got := foldAll(order); !apiequality.Semantic.DeepEqual(challengesSorted(got), challengesSorted(want)) {
					t.Fatalf("order %v folds to\n%s\nwant\n%s", names(order), dump(got), dump(want))
				}
			})
			if n < 120 {
				t.Fatalf("only %d orders tried", n)
			}
		})
	}
}

func TestLinkingIsTheSameAsOneFold(t *testing.T) {
	// Two KidUsers of one player, each folded from part of the events, then
	// merged, equal the fold of all the events on one user. A repeated
	// event goes to the part that already holds it: the controller folds
	// an event again only after a crash, and then into the user that holds
	// it in flight (targets), never into a second user that would count it
	// again.
	for name, events := range sequences(t) {
		t.Run(name, func(t *testing.T) {
			want := foldAll(events)
			for split := 0; split <= len(events); split++ {
				first := events[:split]
				rest := slices.DeleteFunc(slices.Clone(events[split:]), func(e *Event) bool {
					return slices.ContainsFunc(first, func(f *Event) bool { return f.Name == e.Name })
				})
				a, b := foldInto("uid-a", first), foldInto("uid-b", rest)
				got := Merge(a, b)
				if got.ObservedEvents != want.ObservedEvents {
					t.Fatalf("split at %d counts %d events, want %d", split, got.ObservedEvents, want.ObservedEvents)
				}
				if again := Merge(got, a); !apiequality.Semantic.DeepEqual(again, got) {
					t.Fatalf("merging a part again changed the result:\n%s", dump(again))
				}
				got.EventCounts, want.EventCounts = nil, nil
				if !apiequality.Semantic.DeepEqual(got, want) {
					t.Fatalf("split at %d merges to\n%s\nwant\n%s", split, dump(got), dump(want))
				}
			}
		})
	}
}

func TestApplyingAnEventAgainChangesNothingNotEvenTheCount(t *testing.T) {
	// What a crash between the user's write and the event's leaves: the
	// event folded, and folded again.
	g := NewWithT(t)
	for name, events := range sequences(t) {
		once := foldAll(events)
		g.Expect(once.InFlightEvents).To(Equal(slices.Compact(slices.Sorted(slices.Values(names(events))))), name)
		for _, e := range events {
			twice := Apply(once, e, everything, "uid-1")
			g.Expect(apiequality.Semantic.DeepEqual(once, twice)).To(BeTrue(), "%s, %s again:\n%s", name, e.Name, dump(twice))
		}
	}
}

func TestAnEventFoldedIntoAStandInIsNotCountedAgainOnTheUserItWasMergedInto(t *testing.T) {
	// A challenge's first event is folded into the challenge's stand-in, and
	// the crash comes before the event is marked Applied. The stand-in is
	// merged into the session's user, and the event, folded again, now
	// resolves to that user.
	g := NewWithT(t)
	pending := ev(t, 1, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusInProgress})
	pass := ev(t, 2, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusPass, SessionID: session, KUID: kuid})
	standIn := foldInto("uid-a", []*Event{pending})
	merged := Merge(foldInto("uid-b", []*Event{pass}), standIn)
	g.Expect(merged.ObservedEvents).To(BeEquivalentTo(2))
	g.Expect(merged.InFlightEvents).To(Equal([]string{"e01", "e02"}), "the stand-in's name moved with its count")

	again := Apply(merged, pending, everything, "uid-b")
	g.Expect(again.ObservedEvents).To(BeEquivalentTo(2), "the event was counted once, on the stand-in")
	g.Expect(apiequality.Semantic.DeepEqual(again, merged)).To(BeTrue(), dump(again))

	// The merge repeated after a failure, in either order, changes nothing.
	g.Expect(apiequality.Semantic.DeepEqual(Merge(again, standIn), merged)).To(BeTrue())
	g.Expect(Merge(standIn, again).InFlightEvents).To(Equal(merged.InFlightEvents))
}

func TestAnEnrichedEventJoinedIntoTheSessionsUserIsCountedOnceAfterTheMerge(t *testing.T) {
	// The poll's PASS without the session was folded into the challenge's
	// stand-in and counted there; the webhook's copy added the session, and
	// the event is joined into the session's user, uncounted. The stand-in
	// is then merged into that user with its count.
	g := NewWithT(t)
	polled := ev(t, 2, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusPass, KUID: kuid})
	enriched := ev(t, 2, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusPass, KUID: kuid, SessionID: session, DOB: dob})
	standIn := foldInto("uid-a", []*Event{polled})

	user := Join(&kidv1.KidUserStatus{}, enriched, everything)
	g.Expect(user.ObservedEvents).To(BeZero(), "joined, not counted")
	g.Expect(user.InFlightEvents).To(BeEmpty(), "not in flight: it was counted elsewhere")
	g.Expect(user.ChallengeIDs).To(Equal([]string{challenge}), "the session's user now holds the challenge")
	g.Expect(user.SessionID).To(Equal(session))
	g.Expect(user.Consent.State).To(Equal(kidv1.ConsentGranted))
	g.Expect(user.PersonalData.DateOfBirth).To(Equal(dob))
	g.Expect(apiequality.Semantic.DeepEqual(Join(user, enriched, everything), user)).To(BeTrue(), "joining again changes nothing")

	merged := Merge(user, standIn)
	g.Expect(merged.ObservedEvents).To(BeEquivalentTo(1), "counted once, by the stand-in")
	g.Expect(Join(merged, enriched, everything).ObservedEvents).To(BeEquivalentTo(1))
	g.Expect(Join(&kidv1.KidUserStatus{}, enriched, kid.Privacy{}).PersonalData).To(BeNil(), "privacy applies to the join")
}

func TestInFlightEventsAreBounded(t *testing.T) {
	// The controller drops finished events' names before each fold, so the
	// bound is never reached; past it, the fold still counts each new event
	// once and keeps the lexically smallest names, in any order.
	g := NewWithT(t)
	var events []*Event
	for n := range MaxInFlightEvents + 6 {
		e := ev(t, n, kid.SessionChangePermissions, kidsim.Fields{SessionID: session})
		e.Name = fmt.Sprintf("e%03d", n)
		events = append(events, e)
	}
	st := foldAll(events)
	g.Expect(st.ObservedEvents).To(BeEquivalentTo(len(events)))
	g.Expect(st.InFlightEvents).To(HaveLen(MaxInFlightEvents))
	g.Expect(st.InFlightEvents).To(Equal(names(events[:MaxInFlightEvents])), "the smallest names are kept")
	reversed := slices.Clone(events)
	slices.Reverse(reversed)
	g.Expect(apiequality.Semantic.DeepEqual(foldAll(reversed), st)).To(BeTrue(), "the names kept do not depend on the order")

	a, b := foldInto("uid-a", events[:40]), foldInto("uid-b", events[40:])
	g.Expect(Merge(a, b).InFlightEvents).To(Equal(st.InFlightEvents))
	g.Expect(Merge(b, a).InFlightEvents).To(Equal(st.InFlightEvents))

	// What the bound costs, were it ever reached: a name it dropped no
	// longer keeps a repeated fold from counting its event again.
	g.Expect(Apply(st, events[0], everything, "uid-1").ObservedEvents).To(Equal(st.ObservedEvents))
	g.Expect(Apply(st, events[len(events)-1], everything, "uid-1").ObservedEvents).To(Equal(st.ObservedEvents + 1))
}

func TestPrecedence(t *testing.T) {
	g := NewWithT(t)
	seqs := sequences(t)

	st := foldAll(seqs["consent then session life"][:2])
	g.Expect(st.Consent.State).To(Equal(kidv1.ConsentGranted))
	g.Expect(st.SessionID).To(Equal(session))
	g.Expect(st.KUID).To(Equal(kuid))
	g.Expect(st.PersonalData).To(Equal(&kidv1.PersonalData{DateOfBirth: dob, ApproverEmail: email}))

	late := Apply(st, ev(t, 9, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusInProgress}), everything, "uid-1")
	g.Expect(late.Consent.State).To(Equal(kidv1.ConsentGranted), "a late IN_PROGRESS leaves consent Granted")

	deleted := foldAll(seqs["consent then session life"])
	g.Expect(deleted.Session.State).To(Equal(kidv1.SessionDeleted))
	g.Expect(deleted.PersonalData).To(BeNil(), "Session.Delete erases personal data")
	g.Expect(deleted.ErasedAt).NotTo(BeNil())
	again := Apply(deleted, ev(t, 9, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusPass, SessionID: session, DOB: dob, ApproverEmail: email}), everything, "uid-1")
	g.Expect(again.Session.State).To(Equal(kidv1.SessionDeleted), "nothing resurrects a deleted session")
	g.Expect(again.PersonalData).To(BeNil(), "nor its personal data")

	v := foldAll(seqs["verified, revoked, verified again"][:2])
	g.Expect(v.Verification.State).To(Equal(kidv1.VerificationRevoked))
	g.Expect(v.Verification.Records[0].Method).To(Equal("id-document"), "a revocation keeps what it revoked")
	g.Expect(v.Verification.Records[0].Reason).To(Equal("fraudulent-activity-detected"))
	v = Apply(v, ev(t, 9, kid.VerificationResult, kidsim.Fields{ID: verif, Status: kid.StatusPass}), everything, "uid-1")
	g.Expect(v.Verification.State).To(Equal(kidv1.VerificationRevoked), "only a revocation takes Verified away, and a late PASS does not undo it")

	all := foldAll(seqs["verified, revoked, verified again"])
	g.Expect(all.Verification.State).To(Equal(kidv1.VerificationVerified), "a later verification that stands makes the player Verified")
	g.Expect(all.Verification.Records).To(HaveLen(2), "the revocation of another player's verification is not recorded here")

	legacyFold := foldAll(seqs["legacy inconclusive then a decision"][:1])
	g.Expect(legacyFold.Verification.State).To(Equal(kidv1.VerificationUnverified))
	g.Expect(legacyFold.Verification.Records[0].Reason).To(Equal("inconclusive"))
	g.Expect(*legacyFold.Verification.Records[0].Age.Low).To(BeEquivalentTo(18))

	denied := foldAll(seqs["denied then granted on a new challenge"][:2])
	g.Expect(denied.Consent.State).To(Equal(kidv1.ConsentDenied))
	g.Expect(foldAll(seqs["denied then granted on a new challenge"]).Consent.ChallengeID).To(Equal(challenge2))

	acct := foldAll(seqs["account deleted after consent, with repeats"])
	g.Expect(acct.AccountDeleted).To(BeTrue())
	g.Expect(acct.PersonalData).To(BeNil())
	g.Expect(acct.Verification.Records[0].Age).To(BeNil(), "age details are erased too")
}

func TestPrivacyKeepsOnlyWhatIsAllowed(t *testing.T) {
	g := NewWithT(t)
	pass := ev(t, 1, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: challenge, Status: kid.StatusPass, SessionID: session, DOB: dob, ApproverEmail: email})
	g.Expect(Apply(&kidv1.KidUserStatus{}, pass, kid.Privacy{}, "uid-1").PersonalData).To(BeNil())
	g.Expect(Apply(&kidv1.KidUserStatus{}, pass, kid.Privacy{KeepEmail: true}, "uid-1").PersonalData).To(Equal(&kidv1.PersonalData{ApproverEmail: email}))
}

func narrow(e *Event, ids ...string) *Event {
	e.Subject.VerificationIDs = ids
	return e
}

func names(events []*Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.Name)
	}
	return out
}

func read(n int, etag string, enabled bool) *Session {
	return &Session{
		SessionID: session, KUID: kuid, AgeStatus: "DIGITAL_MINOR", Jurisdiction: "US-CA", Status: "ACTIVE",
		ETag: etag, DateOfBirth: dob, At: t0.Add(time.Duration(n) * time.Second),
		Permissions: []kidv1.SessionPermission{
			{Name: "text-chat-private", Enabled: enabled, ManagedBy: "GUARDIAN"},
			{Name: "ai-generated-avatars", Enabled: true, ManagedBy: "PLAYER"},
		},
	}
}

func TestSessionReadsJoinWithEventsInAnyOrder(t *testing.T) {
	// Two reads of the session and the events of a player's consent, in
	// every order: the later read's permissions win, and the rest is the
	// events' fold.
	seq := sequences(t)["consent then session life"][:4]
	second, first := read(6, "etag-2", true), read(3, "etag-1", false)
	first.ReadFor = t0.Add(2 * time.Second)
	// A 304 that answered for a later change: only permissionsReadAt.
	reads := []*kidv1.KidUserStatus{SyncDelta(second, everything), SyncDelta(first, everything), ReadDelta(t0.Add(4 * time.Second))}
	var want *kidv1.KidUserStatus
	n := 0
	permutations(append(seq, nil, nil, nil), func(order []*Event) {
		st, r := &kidv1.KidUserStatus{}, 0
		for _, e := range order {
			if e == nil {
				st = Merge(st, reads[r])
				r++
				continue
			}
			st = Apply(st, e, everything, "uid-1")
		}
		if want == nil {
			want = st
		}
		n++
		if !apiequality.Semantic.DeepEqual(st, want) {
			t.Fatalf("order %d gives\n%s\nwant\n%s", n, dump(st), dump(want))
		}
	})
	g := NewWithT(t)
	g.Expect(want.Session.ETag).To(Equal("etag-2"))
	g.Expect(want.Session.PermissionsSummary).To(Equal("2/2 enabled"))
	g.Expect(want.Session.Permissions[1]).To(Equal(kidv1.SessionPermission{Name: "text-chat-private", Enabled: true, ManagedBy: "GUARDIAN"}))
	g.Expect(want.Session.AgeStatus).To(Equal("DIGITAL_MINOR"))
	g.Expect(want.Consent.State).To(Equal(kidv1.ConsentGranted))
	g.Expect(want.Session.PermissionsChangedAt).NotTo(BeNil())
	g.Expect(want.Session.PermissionsReadAt.Time).To(BeTemporally("==", t0.Add(4*time.Second)), "the latest change a read answered for")
}

func TestSessionReadKeepsTheDateOfBirthOnlyWhereAllowedAndNeverAfterErasure(t *testing.T) {
	g := NewWithT(t)
	g.Expect(SyncDelta(read(1, "e", true), kid.Privacy{}).PersonalData).To(BeNil())
	g.Expect(SyncDelta(read(1, "e", true), kid.Privacy{KeepDateOfBirth: true}).PersonalData).To(Equal(&kidv1.PersonalData{DateOfBirth: dob}))

	deleted := foldAll(sequences(t)["consent then session life"])
	after := Merge(deleted, SyncDelta(read(9, "e", true), everything))
	g.Expect(after.PersonalData).To(BeNil(), "a read after the erasure brings no personal data back")
	g.Expect(after.Session.State).To(Equal(kidv1.SessionDeleted))
}

func TestANewChallengeIsHeldPastTheBound(t *testing.T) {
	// A player with more challenges than the bound keeps the newest: the
	// challenge just started is the one whose PASS must find the player.
	g := NewWithT(t)
	st := &kidv1.KidUserStatus{}
	for n := range MaxChallengeIDs + 6 {
		e := ev(t, n, kid.ChallengeStateChange, kidsim.Fields{ChallengeID: fmt.Sprintf("c-%03d", n), Status: kid.StatusInProgress})
		st = Apply(st, e, everything, "uid-1")
		g.Expect(st.ChallengeIDs).To(ContainElement(e.Subject.ChallengeID), "challenge %d is held", n)
	}
	g.Expect(st.ChallengeIDs).To(HaveLen(MaxChallengeIDs))
	g.Expect(st.ChallengeIDs[0]).To(Equal("c-006"), "the oldest were dropped")
	g.Expect(Merge(st, &kidv1.KidUserStatus{ChallengeIDs: []string{"c-010"}}).ChallengeIDs).To(Equal(st.ChallengeIDs), "an id held already changes nothing")
	standIn := &kidv1.KidUserStatus{ChallengeIDs: []string{"c-new"}}
	g.Expect(Merge(st, standIn).ChallengeIDs).To(ContainElement("c-new"), "a stand-in's challenge is held once merged")
}

func TestCompactingCountsKeepsTheSumAndTheLiveOrigins(t *testing.T) {
	g := NewWithT(t)
	counts := []kidv1.EventCount{{Origin: "uid-gone-1", Count: 2}, {Origin: "uid-live", Count: 3}, {Origin: "uid-me", Count: 1}, {Origin: "uid-gone-2", Count: 4}}
	live := func(uid string) bool { return uid == "uid-me" || uid == "uid-live" }
	out := CompactCounts(counts, "uid-me", live)
	g.Expect(out).To(ConsistOf(
		kidv1.EventCount{Origin: "uid-live", Count: 3},
		kidv1.EventCount{Origin: "uid-me", Count: 1},
		kidv1.EventCount{Origin: "uid-me/compacted", Count: 6},
	))
	g.Expect(sumCounts(out)).To(Equal(sumCounts(counts)))
	g.Expect(CompactCounts(out, "uid-me", live)).To(Equal(out), "compacting again changes nothing")

	// The live origin is merged again (a repeated merge): it adds nothing.
	g.Expect(sumCounts(mergeCounts(out, []kidv1.EventCount{{Origin: "uid-live", Count: 3}}))).To(Equal(sumCounts(counts)))
	// A compacted entry of a user still alive (an account's stand-in,
	// merged and kept) is kept as it is, so its next merge adds nothing.
	other := []kidv1.EventCount{{Origin: "uid-live/compacted", Count: 5}, {Origin: "uid-gone-3", Count: 1}}
	g.Expect(CompactCounts(other, "uid-me", live)).To(ConsistOf(
		kidv1.EventCount{Origin: "uid-live/compacted", Count: 5},
		kidv1.EventCount{Origin: "uid-me/compacted", Count: 1},
	))
}
