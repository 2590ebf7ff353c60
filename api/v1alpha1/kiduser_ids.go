package v1alpha1

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
	p := u.Spec.ProductRef.Name
	keys := []string{UserIDKey(p, u.Spec.Identity.Kind, u.Spec.Identity.ID)}
	if u.Status.SessionID != "" {
		keys = append(keys, UserIDKey(p, IdentitySession, u.Status.SessionID))
	}
	if u.Status.KUID != "" {
		keys = append(keys, UserIDKey(p, IdentityAccount, u.Status.KUID))
	}
	for _, c := range u.Status.ChallengeIDs {
		keys = append(keys, UserIDKey(p, IdentityChallenge, c))
	}
	for _, r := range u.Status.Verification.Records {
		keys = append(keys, UserIDKey(p, IdentityVerification, r.ID))
	}
	return keys
}
