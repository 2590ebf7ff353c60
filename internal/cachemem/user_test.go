package cachemem

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

// storesOf is the manager's cache in small: one KidUser store with the
// namespace index and the user-id index, holding users as Transform keeps
// them.
func storesOf(t *testing.T, users ...*kidv1.KidUser) *Stores {
	t.Helper()
	store := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{
		toolscache.NamespaceIndex:    toolscache.MetaNamespaceIndexFunc,
		"field:" + kidv1.UserIDIndex: namespacedValues(UserIDBuckets),
	})
	tf := Transform()
	for _, u := range users {
		o, err := tf(u.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	s := &Stores{}
	s.add(store)
	return s
}

// Every reader of the stores sees each user as its skeleton.
func TestUserCacheReadsTheStores(t *testing.T) {
	ctx := context.Background()
	full := fullPlayer(t)
	full.DeletionTimestamp = nil
	other := sessionUser("bench", "s-other")
	other.Spec.ProductRef.Name = "q"
	elsewhere := sessionUser("two", "s-3")
	users := storesOf(t, full, other, elsewhere).Users()

	var peeked *kidv1.KidUser
	found, err := users.Peek(ctx, client.ObjectKeyFromObject(full), func(s *kidv1.KidUser) { peeked = s.DeepCopy() })
	if err != nil || !found {
		t.Fatalf("peek: %v, %v", found, err)
	}
	if want := Skeleton(full); !equality.Semantic.DeepEqual(peeked, want) {
		t.Errorf("peeked\n %+v\nwant the skeleton\n %+v", peeked, want)
	}
	if found, err := users.Peek(ctx, client.ObjectKey{Namespace: "bench", Name: "gone"}, nil); err != nil || found {
		t.Errorf("peek at a user not cached: %v, %v", found, err)
	}

	for _, key := range full.IDKeys() {
		refs, err := users.Holding(ctx, "bench", key)
		if err != nil || len(refs) != 1 || refs[0].Name != full.Name || refs[0].UID != full.UID {
			t.Errorf("holding %s: %+v, %v", key, refs, err)
		}
	}
	if refs, _ := users.Holding(ctx, "two", full.IDKeys()[0]); len(refs) != 0 {
		t.Errorf("a lookup in another namespace found %+v", refs)
	}

	var names []string
	if err := users.EachOfProduct(ctx, "bench", "bench", func(s *kidv1.KidUser) { names = append(names, s.Name) }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{full.Name}) {
		t.Errorf("users of bench in bench: %v", names)
	}
	names = nil
	if !users.Each(func(s *kidv1.KidUser) { names = append(names, s.Name) }) {
		t.Fatal("Each read no stores")
	}
	slices.Sort(names)
	if want := []string{full.Name, elsewhere.Name, other.Name}; !slices.Equal(names, slices.Sorted(slices.Values(want))) {
		t.Errorf("every user: %v", names)
	}
	if NewUserCache(nil).Each(func(*kidv1.KidUser) {}) {
		t.Error("a cache of whole KidUsers says it read stores")
	}
}

// A View reused for the next user shows that user only: nothing of the last
// one stays (a pass reads every player through one view).
func TestViewReusedShowsOneUser(t *testing.T) {
	tf := Transform()
	rich := fullPlayer(t)
	rich.Status.ChallengeIDs = []string{"c-1", "c-2"}
	rich.Status.Verification.Records = append(rich.Status.Verification.Records, kidv1.VerificationRecord{ID: "v-2", State: kidv1.VerificationFailed})
	plain := sessionUser("one", "s-plain")
	var v View
	for _, u := range []*kidv1.KidUser{rich, plain, rich, plain} {
		o, _ := tf(u.DeepCopy())
		if got, want := v.Of(o.(*User)), Skeleton(u); !equality.Semantic.DeepEqual(got, want) {
			t.Errorf("%s through a reused view:\n got  %+v\n want %+v", u.Name, got, want)
		}
	}
}

// Times keep their nanoseconds, and read back in UTC; a session's id and a
// consent's challenge that differ from the ids they usually repeat are
// kept too.
func TestUserKeepsTimesAndDistinctIDs(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("X", 3600))
	u := sessionUser("one", "s-1")
	u.CreationTimestamp = metav1.Time{Time: at}
	u.Status.LastEventTime = &metav1.Time{Time: at.Add(time.Second)}
	u.Status.SessionID = "s-other"
	u.Status.ChallengeIDs = []string{"c-1"}
	u.Status.Consent.ChallengeID = "c-2"
	s := Skeleton(u)
	if !s.CreationTimestamp.Equal(&u.CreationTimestamp) || s.CreationTimestamp.Location() != time.UTC ||
		!s.Status.LastEventTime.Equal(u.Status.LastEventTime) {
		t.Errorf("times: %v %v, want %v %v", s.CreationTimestamp, s.Status.LastEventTime, u.CreationTimestamp, u.Status.LastEventTime)
	}
	if s.Status.SessionID != "s-other" || s.Status.Consent.ChallengeID != "c-2" || s.Spec.Identity.ID != "s-1" {
		t.Errorf("ids: %q %q %q", s.Status.SessionID, s.Status.Consent.ChallengeID, s.Spec.Identity.ID)
	}
}

// A User is no KidUser: a client finds no kind for it, so it can never be
// written, and the controllers' client refuses it besides; its setters
// change nothing.
func TestUserCannotBeWritten(t *testing.T) {
	u := sessionUser("one", "s-1")
	inner := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithStatusSubresource(&kidv1.KidUser{}).WithObjects(u.DeepCopy()).Build()
	o, _ := Transform()(u.DeepCopy())
	c := o.(*User)
	ctx := context.Background()
	if err := inner.Update(ctx, c); err == nil {
		t.Error("a client wrote a User")
	}
	if err := RefuseSkeletons(inner).Status().Update(ctx, c); err == nil || !strings.Contains(err.Error(), "skeleton") {
		t.Errorf("the controllers' client: %v, want refused", err)
	}
	c.SetName("x")
	c.SetLabels(map[string]string{"a": "b"})
	if c.GetName() != u.Name || c.GetLabels()["a"] != "" {
		t.Errorf("a setter changed a User: %s %v", c.GetName(), c.GetLabels())
	}
	if c.DeepCopyObject() != c {
		t.Error("a User's copy is not itself")
	}
}
