package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Strength orders identities: a session is the player; the others stand in
// for one until a link appears, and are merged into the strongest user
// holding one of their ids. The controllers, the receiver's status stream and
// kubectl kid all pick a player by it.
func (k IdentityKind) Strength() int {
	switch k {
	case IdentitySession:
		return 3
	case IdentityChallenge:
		return 2
	case IdentityVerification:
		return 1
	}
	return 0
}

// UserName is the deterministic name of the KidUser known by an identity:
// the product, the identity's kind and a digest of the id (k-ID's ids are
// not promised to be valid in object names).
func UserName(product string, kind IdentityKind, id string) string {
	sum := sha256.Sum256([]byte(string(kind) + "\x00" + id))
	return product + "-" + map[IdentityKind]string{
		IdentitySession:      "session",
		IdentityChallenge:    "challenge",
		IdentityVerification: "verification",
		IdentityAccount:      "account",
	}[kind] + "-" + hex.EncodeToString(sum[:10])
}

// UserIDIndex is the field index of KidUsers by every k-ID id they hold,
// each as UserIDKey(product, kind, id). It links events to players: the
// controllers fold an event into the user holding one of its ids and merge
// stand-ins through it, and the receiver's status stream finds a page's
// player through it. One definition, so the two can never disagree.
const UserIDIndex = "kid.dev/user-id"

// UserIDKey is the index value of one k-ID id within a product: ids of
// different kinds or products never collide.
func UserIDKey(product string, kind IdentityKind, id string) string {
	return product + "/" + string(kind) + "/" + id
}

// IDKeys returns the index values of the ids the user holds: its identity,
// then its session, kuid, challenges and verifications.
func (u *KidUser) IDKeys() []string {
	var keys []string
	u.eachID(func(kind IdentityKind, id string) { keys = append(keys, UserIDKey(u.Spec.ProductRef.Name, kind, id)) })
	return keys
}

// eachID calls f with each id the user holds and its kind: its identity,
// then its session, kuid, challenges and verifications.
func (u *KidUser) eachID(f func(IdentityKind, string)) {
	f(u.Spec.Identity.Kind, u.Spec.Identity.ID)
	if u.Status.SessionID != "" {
		f(IdentitySession, u.Status.SessionID)
	}
	if u.Status.KUID != "" {
		f(IdentityAccount, u.Status.KUID)
	}
	for _, c := range u.Status.ChallengeIDs {
		f(IdentityChallenge, c)
	}
	for _, r := range u.Status.Verification.Records {
		f(IdentityVerification, r.ID)
	}
}

// IDKeys returns the UserIDKey of each id the event names: its session,
// challenge, kuid and verifications.
func (e *KidEvent) IDKeys() []string {
	p, s := e.Spec.ProductRef.Name, e.Spec.Subject
	var keys []string
	add := func(kind IdentityKind, id string) {
		if id != "" {
			keys = append(keys, UserIDKey(p, kind, id))
		}
	}
	add(IdentitySession, s.SessionID)
	add(IdentityChallenge, s.ChallengeID)
	add(IdentityAccount, s.KUID)
	for _, v := range s.VerificationIDs {
		add(IdentityVerification, v)
	}
	return keys
}

// The selectable fields of KidUser (its CRD's selectableFields), for field
// selectors: the receiver's status stream watches the users holding a
// page's subject by them rather than caching every player, and kubectl kid
// finds a player by an id through them rather than listing every player.
// A CRD has at most 8; KidUser uses 6.
const (
	// UserProductField is the product the user belongs to.
	UserProductField = "spec.productRef.name"
	// UserIdentityKindField is the kind of the user's identity.
	UserIdentityKindField = "spec.identity.kind"
	// UserIdentityIDField is the id of the user's identity.
	UserIdentityIDField = "spec.identity.id"
	// UserConsentChallengeField is the challenge its consent state is about.
	UserConsentChallengeField = "status.consent.challengeId"
	// UserSessionField is the player's k-ID session.
	UserSessionField = "status.sessionId"
	// UserKUIDField is the player's k-ID user id.
	UserKUIDField = "status.kuid"
)

// The selectable fields of KidEvent (its CRD's selectableFields): kubectl
// kid finds the events naming an id, and those folded into a user, through
// them rather than listing a product's every event. A subject's
// verification ids are a list, which no selectable field can be: the
// events carry VerificationLabel for each instead.
const (
	// EventSessionField is the session the event names.
	EventSessionField = "spec.subject.sessionId"
	// EventChallengeField is the challenge the event names.
	EventChallengeField = "spec.subject.challengeId"
	// EventKUIDField is the k-ID user id the event names.
	EventKUIDField = "spec.subject.kuid"
	// EventUserField is the KidUser the event was folded into.
	EventUserField = "status.userRef.name"
)

// verificationLabelPrefix starts the label key of a verification id.
const verificationLabelPrefix = "kid.dev/verification-"

// VerificationLabel is the label key a KidEvent carries (with an empty
// value) for each verification id its subject names, so that
// "kubectl get kidevents -l <key>" finds the events naming a verification
// without reading every event. The key holds a digest of the id: an id
// need not be valid in a label, and a key's name is at most 63 bytes.
func VerificationLabel(id string) string {
	sum := sha256.Sum256([]byte(id))
	return verificationLabelPrefix + hex.EncodeToString(sum[:16])
}

// SetVerificationLabels puts VerificationLabel of each of ids on labels,
// which must not be nil.
func SetVerificationLabels(labels map[string]string, ids []string) {
	for _, id := range ids {
		labels[VerificationLabel(id)] = ""
	}
}

// idLabelPrefix starts the label key of an id a KidUser holds (IDLabel).
const idLabelPrefix = "kid.dev/id-"

// IDLabel is the label key a KidUser carries (with an empty value) for each
// k-ID id it holds, whatever the id's kind: kubectl kid finds the users
// holding an id with one list selecting this key (design §5, "Lookups"),
// where field selectors took one list per field and the events' lists for
// the ids a user holds only in a list (challengeIds, verification
// records). The key holds a digest of the id, as VerificationLabel's.
func IDLabel(id string) string {
	sum := sha256.Sum256([]byte(id))
	return idLabelPrefix + hex.EncodeToString(sum[:16])
}

// IsIDLabel reports whether a label key is an IDLabel.
func IsIDLabel(key string) bool { return strings.HasPrefix(key, idLabelPrefix) }

// HeldIDs returns every k-ID id the user holds, as IDKeys has them but
// without product and kind: its identity, session, kuid, challenges and
// verifications. Each is bounded by the CRD (challengeIds and the records
// by their maxItems), so the labels are too.
func (u *KidUser) HeldIDs() []string {
	var ids []string
	u.eachID(func(_ IdentityKind, id string) { ids = append(ids, id) })
	return ids
}

// IDLabelsCover reports whether labels carry the IDLabel of every id of
// ids. A label of an id the user does not hold (any more, or not yet) is
// no reason to write: the fold creates a user with the labels of the ids
// its first status write gives it, and until that write lands the user
// holds fewer. Each write of the labels (WithIDLabels) sets exactly the
// ids held then, so the labels stay bounded by the ids a user can hold at
// once (the CRD's bounds) plus those of its create.
func IDLabelsCover(labels map[string]string, ids []string) bool {
	for _, id := range ids {
		if _, ok := labels[IDLabel(id)]; !ok && id != "" {
			return false
		}
	}
	return true
}

// WithIDLabels returns labels (which it does not change) with exactly one
// IDLabel per id of ids, and no other.
func WithIDLabels(labels map[string]string, ids []string) map[string]string {
	out := make(map[string]string, len(labels)+len(ids))
	for k, v := range labels {
		if !IsIDLabel(k) {
			out[k] = v
		}
	}
	for _, id := range ids {
		if id != "" {
			out[IDLabel(id)] = ""
		}
	}
	return out
}
