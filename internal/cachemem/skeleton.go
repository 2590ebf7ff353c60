package cachemem

import (
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// Skeleton is what the manager's cache keeps of a KidUser (a User), as a
// KidUser: what every reader of the cache sees. Its readers are the id
// index (KidUser.IDKeys), the event handlers and predicates that receive
// KidUsers from the informer (the stand-ins a session's user wakes, the
// products' resync loads, the permission changes a read of a session
// wakes), the lookups of UserCache, and the "is anything due for this user"
// computation of the KidUser controller. Every full read of a KidUser is
// live (operator.go: client.CacheOptions.DisableFor), so no reader ever
// sees a skeleton where it expects a player.
//
// The skeleton keeps, and only keeps:
//
//	metadata: name, namespace, uid, resourceVersion, creationTimestamp,
//	          deletionTimestamp, labels but the id labels (whether those
//	          cover the ids: IDLabelsStale), ownerReferences, finalizers,
//	          and the annotations under kid.dev/ (requested-at); its
//	          managedFields are the skeleton marker (IsSkeleton)
//	spec:     productRef, identity (all of it)
//	status:   sessionId, kuid, challengeIds           (the ids: IDKeys)
//	          verification.state,
//	          verification.records[].{id, state, time} (ids, resync loads,
//	                                                     revocation rechecks)
//	          consent.{state, challengeId, time}      (pending recovery,
//	                                                   a newer consent)
//	          session.{state, syncedAt, permissionsChangedAt,
//	                   permissionsReadAt, deletedAt}  (session sync)
//	          accountDeleted, erasedAt                (erasure)
//	          lastEventTime                           (retention)
//	          personalData: present or nil, never its values (a stand-in's
//	                        bound; the skeleton holds no personal data)
//	          inFlightEvents                          (a fold's retry)
//
// Dropped are the generation, the conditions, the session's permissions and
// what k-ID reported about it (summary, age status, jurisdiction, status,
// etag), the verification records' method, age, category and reason,
// lastEventRef, observedEvents and eventCounts. Its times are in UTC. A
// field added to KidUserStatus is dropped until User keeps it
// (TestSkeletonKeepsTheNamedFields lists them).
func Skeleton(u *kidv1.KidUser) *kidv1.KidUser {
	u = u.DeepCopy()
	stale := splitIDLabels(u)
	return new(View).Of(compact(u, newShared[*shape](), stale))
}

// staleIDLabels is the annotation a skeleton carries when its player's id
// labels (kidv1.IDLabel) did not cover every id it held: a skeleton keeps
// no id label (each player's are its own, and would leave no label set
// for players to share), only whether they miss one. The kiduser controller
// then labels the player (IDLabelsStale). No object read from the API
// server carries it (kidAnnotations drops it).
const staleIDLabels = "kid.dev/cache-id-labels-stale"

// splitIDLabels takes the id labels off u and reports whether they miss
// an id u holds.
func splitIDLabels(u *kidv1.KidUser) (stale bool) {
	stale = !kidv1.IDLabelsCover(u.Labels, u.HeldIDs())
	for k := range u.Labels {
		if kidv1.IsIDLabel(k) {
			// A copy without them: the map may be shared with the
			// decoder's caller.
			u.Labels = kidv1.WithIDLabels(u.Labels, nil)
			break
		}
	}
	return stale
}

// IDLabelsStale reports whether the user's id labels (kidv1.IDLabel)
// miss an id it holds (KidUser.HeldIDs; kidv1.IDLabelsCover): for a
// skeleton, as the cache found them when it stored the player.
func IDLabelsStale(u *kidv1.KidUser) bool {
	if IsSkeleton(u) {
		_, stale := u.Annotations[staleIDLabels]
		return stale
	}
	return !kidv1.IDLabelsCover(u.Labels, u.HeldIDs())
}

// noPersonalData is every skeleton's personalData when its player has
// some: one shared empty value, so the cache says that there is personal
// data without holding any.
var noPersonalData = &kidv1.PersonalData{}

// skeletonMarker is every skeleton's managedFields: one shared slice, which
// no object read from the API server carries (the API server names its own
// managers), and which a deep copy keeps. A write of a skeleton, or of a
// copy of one, is refused by RefuseSkeletons.
var skeletonMarker = []metav1.ManagedFieldsEntry{{
	// A well-formed entry, so that fakes of the API server take it.
	Manager: "kid.dev/cache-skeleton", Operation: metav1.ManagedFieldsOperationUpdate,
	APIVersion: kidv1.GroupVersion.String(), FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1("{}"),
}}

// IsSkeleton reports whether obj is a skeleton from the manager's cache, or
// a copy of one.
func IsSkeleton(obj client.Object) bool {
	return slices.ContainsFunc(obj.GetManagedFields(), func(m metav1.ManagedFieldsEntry) bool {
		return m.Manager == skeletonMarker[0].Manager
	})
}

// kidAnnotations keeps the annotations under kid.dev/, which the
// controllers read (kid.dev/requested-at); a game's own, and kubectl's
// last-applied-configuration (a copy of the whole object), are dropped.
func kidAnnotations(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		if strings.HasPrefix(k, "kid.dev/") && k != staleIDLabels {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
