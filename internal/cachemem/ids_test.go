package cachemem

import (
	"context"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/scheme"
)

// collidingSessions returns two session ids whose keys share a bucket.
func collidingSessions(t *testing.T) (string, string) {
	t.Helper()
	seen := map[string]string{}
	for i := range 100 * idBuckets {
		id := fmt.Sprintf("s-%d", i)
		b := idBucket(kidv1.UserIDKey("p", kidv1.IdentitySession, id))
		if other, ok := seen[b]; ok {
			return other, id
		}
		seen[b] = id
	}
	t.Fatal("no two ids share a bucket")
	return "", ""
}

func sessionUser(ns, id string) *kidv1.KidUser {
	return &kidv1.KidUser{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: kidv1.UserName("p", kidv1.IdentitySession, id)},
		Spec: kidv1.KidUserSpec{
			ProductRef: kidv1.LocalObjectReference{Name: "p"},
			Identity:   kidv1.UserIdentity{Kind: kidv1.IdentitySession, ID: id},
		},
	}
}

// A bucket holds other players' ids too: a lookup returns only the users
// that hold the id asked for, in the namespace asked for.
func TestHoldingIsExact(t *testing.T) {
	a, b := collidingSessions(t)
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).
		WithIndex(&kidv1.KidUser{}, kidv1.UserIDIndex, UserIDBuckets).
		WithObjects(sessionUser("one", a), sessionUser("one", b), sessionUser("two", a)).
		Build()
	ctx := context.Background()

	users := NewUserCache(c)
	got, err := users.Holding(ctx, "one", kidv1.UserIDKey("p", kidv1.IdentitySession, a))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Namespace != "one" || got[0].Identity.ID != a {
		t.Fatalf("holders of %s in one: %v", a, got)
	}

	none, err := users.Holding(ctx, "one", kidv1.UserIDKey("p", kidv1.IdentitySession, "nobody"))
	if err != nil || len(none) != 0 {
		t.Errorf("holders of an unknown id: %v, %v", none, err)
	}
}

func TestEventsNamingIsExact(t *testing.T) {
	a, b := collidingSessions(t)
	event := func(name, session string) client.Object {
		return &kidv1.KidEvent{
			ObjectMeta: metav1.ObjectMeta{Namespace: "one", Name: name},
			Spec:       kidv1.KidEventSpec{ProductRef: kidv1.LocalObjectReference{Name: "p"}, Subject: kidv1.EventSubject{SessionID: session}},
		}
	}
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).
		WithIndex(&kidv1.KidEvent{}, EventIDIndex, EventIDBuckets).
		WithObjects(event("ea", a), event("eb", b)).
		Build()
	got, err := EventsNaming(context.Background(), c, "one", kidv1.UserIDKey("p", kidv1.IdentitySession, b))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != "eb" {
		t.Errorf("events naming %s: %d, want eb alone", b, len(got))
	}
}
