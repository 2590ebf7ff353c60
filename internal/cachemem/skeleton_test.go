package cachemem

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

// skeletonFields are the fields a skeleton keeps (Skeleton's doc comment),
// as JSON paths of their leaves; [] is any item of a list. The due
// computation of the KidUser controller, the event handlers and the id
// index read only these: a field they read that is missing here reads as
// empty from the cache.
var skeletonFields = []string{
	"apiVersion", "kind",
	"metadata.name", "metadata.namespace", "metadata.uid", "metadata.resourceVersion",
	"metadata.creationTimestamp", "metadata.deletionTimestamp",
	"metadata.labels.kid.dev/product", "metadata.ownerReferences[].apiVersion", "metadata.ownerReferences[].kind",
	"metadata.ownerReferences[].name", "metadata.ownerReferences[].uid", "metadata.finalizers[]",
	"metadata.annotations.kid.dev/requested-at",
	"metadata.managedFields[].manager", "metadata.managedFields[].operation", "metadata.managedFields[].apiVersion", "metadata.managedFields[].fieldsType", "metadata.managedFields[].fieldsV1", // the skeleton's marker
	"spec.productRef.name", "spec.identity.kind", "spec.identity.id",
	"status.sessionId", "status.kuid", "status.challengeIds[]",
	"status.consent.state", "status.consent.challengeId", "status.consent.time",
	"status.verification.state",
	"status.verification.records[].id", "status.verification.records[].state", "status.verification.records[].time",
	"status.session.state", "status.session.syncedAt", "status.session.permissionsChangedAt",
	"status.session.permissionsReadAt", "status.session.deletedAt",
	"status.accountDeleted", "status.erasedAt", "status.lastEventTime",
	"status.personalData", // present, empty: never a value
	"status.inFlightEvents[]",
}

// fullPlayer is the bench's player with every other field a KidUser can
// carry set too: personal data, a deleted session, an erasure, a game's and
// kubectl's annotations, a finalizer, a deletion.
func fullPlayer(t testing.TB) *kidv1.KidUser {
	t.Helper()
	u := decode(t, playerJSON(t, 1))
	now := metav1.Now()
	u.Annotations = map[string]string{
		kidv1.RequestedAtAnnotation:                        "ev-1",
		"kubectl.kubernetes.io/last-applied-configuration": `{"spec":{}}`,
		"game.example/team":                                "red",
	}
	u.Finalizers = []string{"game.example/keep"}
	u.Labels = kidv1.WithIDLabels(u.Labels, u.HeldIDs())
	u.DeletionTimestamp = &now
	u.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kid-operator", Operation: metav1.ManagedFieldsOperationUpdate}}
	st := &u.Status
	st.PersonalData = &kidv1.PersonalData{DateOfBirth: "2012-01-01", ApproverEmail: "parent@example.com"}
	st.AccountDeleted = true
	st.ErasedAt = &now
	st.Session.DeletedAt = &now
	st.Session.PermissionsReadAt = &now
	st.Verification.Records[0].Reason = "a reason"
	return u
}

// leaves flattens an object's JSON to the paths of its non-empty leaves.
func leaves(t testing.TB, obj any) map[string]any {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if len(v) == 0 && prefix != "" {
				out[prefix] = v
			}
			for k, x := range v {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				walk(p, x)
			}
		case []any:
			for _, x := range v {
				walk(prefix+"[]", x)
			}
		default:
			out[prefix] = v
		}
	}
	walk("", m)
	return out
}

// The skeleton keeps exactly the fields its doc comment names, with the
// player's values, and no personal data.
func TestSkeletonKeepsTheNamedFields(t *testing.T) {
	u := fullPlayer(t)
	full := leaves(t, u)
	out, err := Transform()(fullPlayer(t))
	if err != nil {
		t.Fatal(err)
	}
	got := leaves(t, UserOf(out))
	paths := slices.Sorted(maps.Keys(got))
	want := slices.Clone(skeletonFields)
	slices.Sort(want)
	if !slices.Equal(paths, want) {
		t.Errorf("the skeleton's fields:\n got  %q\n want %q", paths, want)
	}
	for _, p := range paths {
		if strings.HasPrefix(p, "metadata.managedFields") || p == "status.personalData" {
			continue
		}
		if fmt.Sprint(got[p]) != fmt.Sprint(full[p]) {
			t.Errorf("%s: %v, the player's is %v", p, got[p], full[p])
		}
	}
	if s := UserOf(out); s.Status.PersonalData == nil || *s.Status.PersonalData != (kidv1.PersonalData{}) {
		t.Errorf("personal data in the skeleton: %+v", s.Status.PersonalData)
	}
	// And what it drops is most of the player.
	for _, p := range []string{"status.conditions[].message", "status.session.permissions[].name", "status.session.etag", "status.eventCounts[].count", "status.personalData.dateOfBirth"} {
		if _, ok := full[p]; !ok {
			t.Errorf("the full player lacks %s: the test's player is not full", p)
		}
	}
	t.Logf("the skeleton keeps %d of the player's %d leaves", len(got), len(full))
}

// A skeleton keeps none of its player's id labels (each player's are its
// own: kept, they would leave no label set for players to share), only
// whether they miss an id it holds, which IDLabelsStale answers alike for
// the player and its skeleton.
func TestSkeletonSaysWhetherTheIDLabelsMissAnID(t *testing.T) {
	labelled := fullPlayer(t)
	gained := fullPlayer(t)
	gained.Status.ChallengeIDs = append(gained.Status.ChallengeIDs, "c-later")
	bare := fullPlayer(t)
	bare.Labels = kidv1.WithIDLabels(bare.Labels, nil)
	extra := fullPlayer(t)
	extra.Labels[kidv1.IDLabel("c-let-go")] = ""
	// An object that carries the skeleton's annotation itself is no
	// skeleton: it says nothing.
	forged := fullPlayer(t)
	forged.Annotations[staleIDLabels] = ""

	tf := Transform()
	for _, c := range []struct {
		name  string
		u     *kidv1.KidUser
		stale bool
	}{{"labelled", labelled, false}, {"an id gained", gained, true}, {"no id label", bare, true}, {"a label of an id not held (a create before its status)", extra, false}, {"the annotation forged", forged, false}} {
		if got := IDLabelsStale(c.u); got != c.stale {
			t.Errorf("%s: the player's id labels stale %v, want %v", c.name, got, c.stale)
		}
		out, err := tf(c.u.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		s := UserOf(out)
		if got := IDLabelsStale(s); got != c.stale {
			t.Errorf("%s: the skeleton's id labels stale %v, want %v", c.name, got, c.stale)
		}
		if got := IDLabelsStale(Skeleton(c.u)); got != c.stale {
			t.Errorf("%s: Skeleton's id labels stale %v, want %v", c.name, got, c.stale)
		}
		for k := range s.Labels {
			if kidv1.IsIDLabel(k) {
				t.Errorf("%s: the skeleton keeps the id label %s", c.name, k)
			}
		}
	}
	// Players of a product share one label set, id labels or not.
	a, _ := tf(labelled.DeepCopy())
	other := fullPlayer(t)
	other.Status.KUID = "k-other"
	other.Labels = kidv1.WithIDLabels(other.Labels, other.HeldIDs())
	b, _ := tf(other)
	if la, lb := a.(*User).GetLabels(), b.(*User).GetLabels(); fmt.Sprintf("%p", la) != fmt.Sprintf("%p", lb) {
		t.Errorf("two players of a product keep label sets of their own: %v and %v", la, lb)
	}
}

// A skeleton, or a copy of one, is never written: the controllers' client
// refuses it, whatever the write.
func TestRefuseSkeletons(t *testing.T) {
	u := decode(t, playerJSON(t, 2))
	u.ResourceVersion = ""
	inner := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithStatusSubresource(&kidv1.KidUser{}).WithObjects(u.DeepCopy()).Build()
	c := RefuseSkeletons(inner)
	ctx := context.Background()
	live := &kidv1.KidUser{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(u), live); err != nil {
		t.Fatal(err)
	}
	out, _ := Transform()(live.DeepCopy())
	skel := UserOf(out)
	for name, write := range map[string]func(o *kidv1.KidUser) error{
		"update":        func(o *kidv1.KidUser) error { return c.Update(ctx, o) },
		"patch":         func(o *kidv1.KidUser) error { return c.Patch(ctx, o, client.MergeFrom(live)) },
		"status update": func(o *kidv1.KidUser) error { return c.Status().Update(ctx, o) },
		"status patch":  func(o *kidv1.KidUser) error { return c.Status().Patch(ctx, o, client.MergeFrom(live)) },
		"create":        func(o *kidv1.KidUser) error { x := o.DeepCopy(); x.Name += "-2"; return c.Create(ctx, x) },
	} {
		for what, o := range map[string]*kidv1.KidUser{"skeleton": skel, "copy": skel.DeepCopy()} {
			if err := write(o.DeepCopy()); err == nil || !strings.Contains(err.Error(), "skeleton") {
				t.Errorf("%s of a %s: %v, want refused", name, what, err)
			}
		}
	}
	stored := &kidv1.KidUser{}
	if err := inner.Get(ctx, client.ObjectKeyFromObject(u), stored); err != nil {
		t.Fatal(err)
	}
	if len(stored.Status.Session.Permissions) != 4 || len(stored.Status.Conditions) != 3 {
		t.Errorf("the stored player lost its status: %+v", stored.Status)
	}
	// A player read live is written as ever.
	live.Status.Session.Jurisdiction = "US-NY"
	if err := c.Status().Update(ctx, live); err != nil {
		t.Errorf("a live player's write: %v", err)
	}
}

// HoldingLive: the cache names the holders, the API server answers for
// them; one gone since is left out.
func TestHoldingLive(t *testing.T) {
	ctx := context.Background()
	a, b := sessionUser("one", "s-a"), sessionUser("one", "s-b")
	b.Status.ChallengeIDs = []string{"c-1"}
	a.Status.ChallengeIDs = []string{"c-1"}
	cached := fake.NewClientBuilder().WithScheme(scheme.Scheme).
		WithIndex(&kidv1.KidUser{}, kidv1.UserIDIndex, UserIDBuckets).
		WithObjects(a.DeepCopy(), b.DeepCopy()).Build()
	liveA := a.DeepCopy()
	liveA.Status.Session.Jurisdiction = "US-CA"
	live := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(liveA).Build()

	got, err := NewUserCache(cached).HoldingLive(ctx, live, "one", kidv1.UserIDKey("p", kidv1.IdentityChallenge, "c-1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != a.Name || got[0].Status.Session.Jurisdiction != "US-CA" {
		t.Errorf("holders read live: %+v", got)
	}
	// A reader that answers skeletons is not live.
	skel, _ := Transform()(liveA.DeepCopy())
	if _, err := NewUserCache(cached).HoldingLive(ctx, skeletonReader{UserOf(skel)}, "one", kidv1.UserIDKey("p", kidv1.IdentityChallenge, "c-1"), nil); err == nil {
		t.Error("a skeleton was read as a live player")
	}
	// Those not kept are not read.
	none, err := NewUserCache(cached).HoldingLive(ctx, skeletonReader{UserOf(skel)}, "one", kidv1.UserIDKey("p", kidv1.IdentityChallenge, "c-1"),
		func(UserRef) bool { return false })
	if err != nil || len(none) != 0 {
		t.Errorf("holders none of which is kept: %v, %v", none, err)
	}
	if _, err := NewUserCache(nil).Holding(ctx, "one", "x"); err == nil || apierrors.IsNotFound(err) {
		t.Errorf("a lookup without a cache: %v", err)
	}
}

func TestEachOfProduct(t *testing.T) {
	other := sessionUser("one", "s-other")
	other.Spec.ProductRef.Name = "q"
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).
		WithObjects(sessionUser("one", "s-1"), sessionUser("one", "s-2"), sessionUser("two", "s-3"), other).Build()
	var names []string
	if err := NewUserCache(c).EachOfProduct(context.Background(), "one", "p", func(u *kidv1.KidUser) { names = append(names, u.Spec.Identity.ID) }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"s-1", "s-2"}) {
		t.Errorf("users of p in one: %v", names)
	}
}

// skeletonReader answers every read with a copy of one skeleton, as the
// cache would.
type skeletonReader struct{ s *kidv1.KidUser }

func (r skeletonReader) Get(_ context.Context, _ client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	r.s.DeepCopyInto(obj.(*kidv1.KidUser))
	return nil
}

func (r skeletonReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return fmt.Errorf("not a list")
}

func TestPeek(t *testing.T) {
	u := sessionUser("one", "s-1")
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(u).Build()
	ctx := context.Background()
	var id string
	found, err := NewUserCache(c).Peek(ctx, client.ObjectKeyFromObject(u), func(s *kidv1.KidUser) { id = s.Spec.Identity.ID })
	if err != nil || !found || id != "s-1" {
		t.Errorf("peek at a cached user: %v, %v, %q", found, err, id)
	}
	found, err = NewUserCache(c).Peek(ctx, client.ObjectKey{Namespace: "one", Name: "gone"}, nil)
	if err != nil || found {
		t.Errorf("peek at a user not cached: %v, %v", found, err)
	}
}
