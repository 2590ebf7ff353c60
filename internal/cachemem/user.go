package cachemem

import (
	"maps"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// User is what the manager's cache keeps of a KidUser: its skeleton
// (Skeleton) in a compact form, about a fifth of a decoded KidUser. It is a
// Go type of its own, registered in no scheme, so a client cannot write it
// (the client finds no kind for it), and it has no setters: what the cache
// holds is read only. Readers see it as a KidUser through a View (UserOf,
// UserCache), which is what Skeleton returns.
//
// What makes it small:
//   - what all players of a product in one state repeat (namespace,
//     product, labels, owner references, finalizers, the identity's kind,
//     the consent, verification and session states) is one shared shape;
//   - every time is an int64 of nanoseconds, not a pointer to a
//     metav1.Time;
//   - the player's own strings but its name and uid are packed in one
//     string (pack.go): one allocation, with no header per string.
//
// The name and uid stay strings of their own: readers keep them (as map
// keys of their memory), and a substring of the packed string would keep
// all of it.
type User struct {
	readOnlyMeta
	name  string
	uid   types.UID
	shape *shape
	// data packs resourceVersion, identity id, sessionId, kuid,
	// consent.challengeId, then the lists challengeIds, verification
	// records (id, state, time) and inFlightEvents (pack.go).
	data string
	// annotations are the kid.dev/ ones (nil for nearly every player).
	annotations map[string]string
	// Times, in nanoseconds since the Unix epoch; 0 is none.
	created, deleted, consentTime, synced, permissionsChanged, permissionsRead, sessionDeleted, erasedAt, lastEventTime int64
	accountDeleted, personalData                                                                                        bool
	// idLabelsStale: the player's id labels, which the shape does not
	// keep, missed one of its ids (IDLabelsStale).
	idLabelsStale bool
}

// shape is what many players share: one copy for all players of a product
// in one state.
type shape struct {
	namespace, product string
	labels             map[string]string
	owners             []metav1.OwnerReference
	finalizers         []string
	identityKind       kidv1.IdentityKind
	consent            kidv1.ConsentState
	verification       kidv1.VerificationState
	session            kidv1.SessionState
}

// key is equal for equal shapes.
func (s *shape) key() string {
	var b strings.Builder
	for _, part := range []string{s.namespace, s.product, labelsKey(s.labels), ownersKey(s.owners), strings.Join(s.finalizers, "\x00"),
		string(s.identityKind), string(s.consent), string(s.verification), string(s.session)} {
		b.WriteString(part)
		b.WriteString("\x00\x01")
	}
	return b.String()
}

// compact is the User of a KidUser: its skeleton's fields, nothing else.
// Its labels are without the id labels (splitIDLabels); stale says they
// missed one of its ids.
func compact(u *kidv1.KidUser, shapes *shared[*shape], stale bool) *User {
	st := &u.Status
	s := &shape{
		namespace: intern(u.Namespace), product: intern(u.Spec.ProductRef.Name),
		labels: u.Labels, owners: u.OwnerReferences, finalizers: u.Finalizers,
		identityKind: u.Spec.Identity.Kind, consent: st.Consent.State,
		verification: st.Verification.State, session: st.Session.State,
	}
	internTo(&s.identityKind)
	internTo(&s.consent)
	internTo(&s.verification)
	internTo(&s.session)
	c := &User{
		name: u.Name, uid: u.UID, shape: shapes.get(s.key(), s),
		annotations: kidAnnotations(u.Annotations),
		created:     nanos(&u.CreationTimestamp), deleted: nanos(u.DeletionTimestamp),
		consentTime: nanos(st.Consent.Time), synced: nanos(st.Session.SyncedAt),
		permissionsChanged: nanos(st.Session.PermissionsChangedAt), permissionsRead: nanos(st.Session.PermissionsReadAt),
		sessionDeleted: nanos(st.Session.DeletedAt), erasedAt: nanos(st.ErasedAt), lastEventTime: nanos(st.LastEventTime),
		accountDeleted: st.AccountDeleted, personalData: st.PersonalData != nil,
		idLabelsStale: stale,
	}
	// A session's id is its identity's, and a consent's challenge is
	// usually the user's first: each is kept once.
	var p packer
	p.str(u.ResourceVersion)
	p.str(u.Spec.Identity.ID)
	p.same(st.SessionID, u.Spec.Identity.ID)
	p.str(st.KUID)
	p.same(st.Consent.ChallengeID, first(st.ChallengeIDs))
	p.strs(st.ChallengeIDs)
	p.length(len(st.Verification.Records))
	for _, r := range st.Verification.Records {
		p.str(r.ID)
		p.str(string(r.State))
		p.time(nanos(r.Time))
	}
	p.strs(st.InFlightEvents)
	c.data = string(p)
	return c
}

// first is the first of l, or "".
func first(l []string) string {
	if len(l) == 0 {
		return ""
	}
	return l[0]
}

// nanos is a time as User keeps it.
func nanos(t *metav1.Time) int64 {
	if t == nil || t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// View is a KidUser to read Users into. A View holds one user at a time:
// each Of overwrites what the last returned, so a pass over many users
// allocates nothing per user. What Of returns is the cache's, read only, and
// shares its strings with it.
type View struct {
	u     kidv1.KidUser
	times [9]metav1.Time
	recs  []metav1.Time
}

// Of reads c into the view and returns it as a KidUser skeleton.
func (v *View) Of(c *User) *kidv1.KidUser {
	u := &v.u
	challenges, records, inFlight := u.Status.ChallengeIDs[:0], u.Status.Verification.Records[:0], u.Status.InFlightEvents[:0]
	*u = kidv1.KidUser{}
	t := 0
	at := func(n int64) *metav1.Time {
		if n == 0 {
			return nil
		}
		v.times[t] = timeOf(n)
		t++
		return &v.times[t-1]
	}
	s := c.shape
	u.TypeMeta = metav1.TypeMeta{Kind: "KidUser", APIVersion: kidv1.GroupVersion.String()}
	u.Name, u.Namespace, u.UID = c.name, s.namespace, c.uid
	u.Labels, u.OwnerReferences, u.Finalizers, u.Annotations = s.labels, s.owners, s.finalizers, c.annotations
	u.ManagedFields = skeletonMarker
	if c.idLabelsStale {
		// Rare (a player between gaining an id and its label): the one
		// view that allocates.
		u.Annotations = make(map[string]string, len(c.annotations)+1)
		maps.Copy(u.Annotations, c.annotations)
		u.Annotations[staleIDLabels] = ""
	}
	if created := at(c.created); created != nil {
		u.CreationTimestamp = *created
	}
	u.DeletionTimestamp = at(c.deleted)
	u.Spec.ProductRef.Name, u.Spec.Identity.Kind = s.product, s.identityKind
	st := &u.Status
	st.Consent.State, st.Verification.State, st.Session.State = s.consent, s.verification, s.session
	st.Consent.Time = at(c.consentTime)
	st.Session.SyncedAt, st.Session.PermissionsChangedAt = at(c.synced), at(c.permissionsChanged)
	st.Session.PermissionsReadAt, st.Session.DeletedAt = at(c.permissionsRead), at(c.sessionDeleted)
	st.ErasedAt, st.LastEventTime = at(c.erasedAt), at(c.lastEventTime)
	st.AccountDeleted = c.accountDeleted
	if c.personalData {
		st.PersonalData = noPersonalData
	}
	r := unpacker{s: c.data}
	u.ResourceVersion = r.str()
	u.Spec.Identity.ID = r.str()
	session, sameSession := r.same()
	st.SessionID, st.KUID = or(session, sameSession, u.Spec.Identity.ID), r.str()
	consent, sameConsent := r.same()
	st.ChallengeIDs = r.strs(challenges)
	st.Consent.ChallengeID = or(consent, sameConsent, first(st.ChallengeIDs))
	n := r.length()
	if cap(v.recs) < n {
		v.recs = make([]metav1.Time, n)
	}
	for i := range n {
		rec := kidv1.VerificationRecord{ID: r.str(), State: kidv1.VerificationState(r.str())}
		if ns := r.time(); ns != 0 {
			v.recs[i] = timeOf(ns)
			rec.Time = &v.recs[i]
		}
		records = append(records, rec)
	}
	if n > 0 {
		st.Verification.Records = records
	}
	st.InFlightEvents = r.strs(inFlight)
	return u
}

// UserOf is the cached KidUser o as a KidUser: a User read into a view of
// its own, or o itself when it is a KidUser (a reader that keeps whole
// KidUsers: tests, a cache without Transform). Nil for anything else.
func UserOf(o any) *kidv1.KidUser {
	switch u := o.(type) {
	case *User:
		return new(View).Of(u)
	case *kidv1.KidUser:
		return u
	}
	return nil
}

// The getters the informer, its indexes and the event handlers ask for
// (metav1.Object and runtime.Object).

// GetNamespace is the user's namespace.
func (c *User) GetNamespace() string { return c.shape.namespace }

// GetName is the user's name.
func (c *User) GetName() string { return c.name }

// ProductOf is the namespace and spec.productRef.name of a cached KidUser
// o, a User or a whole KidUser, without building a view: for handlers
// that see every player (the players' counts). ok is false for anything
// else.
func ProductOf(o any) (namespace, product string, ok bool) {
	switch u := o.(type) {
	case *User:
		return u.shape.namespace, u.shape.product, true
	case *kidv1.KidUser:
		return u.Namespace, u.Spec.ProductRef.Name, true
	}
	return "", "", false
}

// GetUID is the user's uid.
func (c *User) GetUID() types.UID { return c.uid }

// GetResourceVersion is the user's resourceVersion.
func (c *User) GetResourceVersion() string { r := unpacker{s: c.data}; return r.str() }

// GetLabels are the user's labels (shared: read only).
func (c *User) GetLabels() map[string]string { return c.shape.labels }

// GetAnnotations are the user's kid.dev/ annotations.
func (c *User) GetAnnotations() map[string]string { return c.annotations }

// GetFinalizers are the user's finalizers (shared: read only).
func (c *User) GetFinalizers() []string { return c.shape.finalizers }

// GetOwnerReferences are the user's owner references (shared: read only).
func (c *User) GetOwnerReferences() []metav1.OwnerReference { return c.shape.owners }

// GetManagedFields is the skeleton marker (IsSkeleton).
func (c *User) GetManagedFields() []metav1.ManagedFieldsEntry { return skeletonMarker }

// GetCreationTimestamp is when the user was created.
func (c *User) GetCreationTimestamp() metav1.Time { return timeOf(c.created) }

// GetDeletionTimestamp is when the user's deletion was asked for, or nil.
func (c *User) GetDeletionTimestamp() *metav1.Time {
	if c.deleted == 0 {
		return nil
	}
	t := timeOf(c.deleted)
	return &t
}

// GetObjectKind is empty: a User is no kind a scheme knows.
func (c *User) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject is c itself: a User is read only.
func (c *User) DeepCopyObject() runtime.Object { return c }

// String names the user.
func (c *User) String() string { return c.shape.namespace + "/" + c.name }

// timeOf is a time User keeps, as a metav1.Time (UTC).
func timeOf(n int64) metav1.Time {
	if n == 0 {
		return metav1.Time{}
	}
	return metav1.Time{Time: time.Unix(0, n).UTC()}
}

// readOnlyMeta is the rest of metav1.Object for a User: the fields a User
// does not keep read as empty, and every setter changes nothing (nothing
// may change what the cache holds).
type readOnlyMeta struct{}

func (readOnlyMeta) GetGenerateName() string                      { return "" }
func (readOnlyMeta) GetGeneration() int64                         { return 0 }
func (readOnlyMeta) GetSelfLink() string                          { return "" }
func (readOnlyMeta) GetDeletionGracePeriodSeconds() *int64        { return nil }
func (readOnlyMeta) SetNamespace(string)                          {}
func (readOnlyMeta) SetName(string)                               {}
func (readOnlyMeta) SetGenerateName(string)                       {}
func (readOnlyMeta) SetUID(types.UID)                             {}
func (readOnlyMeta) SetResourceVersion(string)                    {}
func (readOnlyMeta) SetGeneration(int64)                          {}
func (readOnlyMeta) SetSelfLink(string)                           {}
func (readOnlyMeta) SetCreationTimestamp(metav1.Time)             {}
func (readOnlyMeta) SetDeletionTimestamp(*metav1.Time)            {}
func (readOnlyMeta) SetDeletionGracePeriodSeconds(*int64)         {}
func (readOnlyMeta) SetLabels(map[string]string)                  {}
func (readOnlyMeta) SetAnnotations(map[string]string)             {}
func (readOnlyMeta) SetFinalizers([]string)                       {}
func (readOnlyMeta) SetOwnerReferences([]metav1.OwnerReference)   {}
func (readOnlyMeta) SetManagedFields([]metav1.ManagedFieldsEntry) {}
