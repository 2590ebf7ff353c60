package cachemem

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RefuseSkeletons wraps the controllers' client so that no write of a
// skeleton (or of a copy of one) ever reaches the API server: a skeleton
// lacks most of its player's status, and written back it would wipe it. The
// controllers read every KidUser they write live, so this refuses nothing
// they do; it is the lock on the door, should a change ever hand a cached
// user to a write. The cache's own User cannot be written at all (no scheme
// knows its type); what this guards is its views (View, UserOf, Skeleton),
// which are KidUsers, and their copies.
func RefuseSkeletons(c client.Client) client.Client { return guarded{c} }

type guarded struct{ client.Client }

func refuse(obj client.Object) error {
	if IsSkeleton(obj) {
		return fmt.Errorf("refusing to write %s/%s: it is the cache's skeleton of a KidUser, not the player (read it live)", obj.GetNamespace(), obj.GetName())
	}
	return nil
}

func (g guarded) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if err := refuse(obj); err != nil {
		return err
	}
	return g.Client.Create(ctx, obj, opts...)
}

func (g guarded) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	if err := refuse(obj); err != nil {
		return err
	}
	return g.Client.Update(ctx, obj, opts...)
}

func (g guarded) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if err := refuse(obj); err != nil {
		return err
	}
	return g.Client.Patch(ctx, obj, patch, opts...)
}

func (g guarded) Status() client.SubResourceWriter { return g.SubResource("status") }

func (g guarded) SubResource(sub string) client.SubResourceClient {
	return guardedSub{g.Client.SubResource(sub)}
}

type guardedSub struct{ client.SubResourceClient }

func (g guardedSub) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	if err := refuse(obj); err != nil {
		return err
	}
	return g.SubResourceClient.Update(ctx, obj, opts...)
}

func (g guardedSub) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	if err := refuse(obj); err != nil {
		return err
	}
	return g.SubResourceClient.Patch(ctx, obj, patch, opts...)
}
