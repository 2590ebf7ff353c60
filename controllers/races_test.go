package controllers

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

func TestALostWriteRaceIsRetriedQuietly(t *testing.T) {
	g := NewWithT(t)
	users := schema.GroupResource{Group: "kid.dev", Resource: "kidusers"}
	// A rate-limited retry, as after an error (quietRaces).
	retried := func(priority *int) reconcile.Result {
		return reconcile.Result{Requeue: true, Priority: priority} //nolint:staticcheck // what quietRaces returns
	}
	for _, c := range []struct {
		name      string
		res       reconcile.Result
		err       error
		want      reconcile.Result
		wantError bool
	}{
		{"a conflict, wrapped as the controllers return it", reconcile.Result{Priority: ptr.To(slotPriority)}, fmt.Errorf("writing synced session: %w", apierrors.NewConflict(users, "u", errors.New("the object has been modified"))), retried(ptr.To(slotPriority)), false},
		{"a user another worker made", reconcile.Result{}, fmt.Errorf("creating user: %w", apierrors.NewAlreadyExists(users, "u")), retried(nil), false},
		{"any other failure", reconcile.Result{}, fmt.Errorf("reading user: %w", apierrors.NewServiceUnavailable("etcd")), reconcile.Result{}, true},
		{"a success with a wait", reconcile.Result{RequeueAfter: time.Minute}, nil, reconcile.Result{RequeueAfter: time.Minute}, false},
	} {
		inner := reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return c.res, c.err })
		res, err := quietRaces(inner).Reconcile(context.Background(), reconcile.Request{})
		g.Expect(res).To(Equal(c.want), c.name)
		if c.wantError {
			g.Expect(err).To(MatchError(c.err), c.name)
		} else {
			g.Expect(err).NotTo(HaveOccurred(), c.name)
		}
	}
}
