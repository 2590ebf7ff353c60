package controllers

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/cachemem"
	"github.com/kid-operator/kid-operator/internal/fold"
)

// KidUserReconciler keeps the KidUsers of one player together and enforces
// erasure:
//   - a user that stands in for a player (known by a challenge, a
//     verification or a kuid) is merged into the stronger user that holds its
//     id, and deleted (a kuid's own record is kept, since one kuid can have
//     several sessions over time);
//   - once a user is erased (Session.Delete, Account.Delete), the stored
//     events about it that still hold personal data are deleted;
//   - with the product's k-ID API configured, the session is synced and a
//     pending challenge or verification is polled, as the schedule says
//     (kiduser_schedule.go, kiduser_sessionsync.go, kiduser_recovery.go),
//     by a second controller, kiduser-api, whose workers are the
//     operator's readers of k-ID (ReadConcurrency);
//   - a user is deleted when the product's retention.users says so
//     (kiduser_retention.go).
//
// It records no Kubernetes Event per player: see KidEventReconciler.
type KidUserReconciler struct {
	client.Client
	// APIClients are the products' k-ID API clients; nil turns session
	// sync and recovery off.
	APIClients *APIClients
	// Clock is the controller's time (the schedule of session syncs and
	// polls, retention, the memory of deleted users). SetupWithManager
	// sets the real clock when it is nil; tests pass a fake one.
	Clock clock.PassiveClock
	// APIReader reads a stored event back, around the cache, when a polled
	// event is a duplicate (to add what the poll's copy carries). Nil
	// means Client.
	APIReader client.Reader
	// MaxConcurrentReconciles defaults to 4: linking, erasure and
	// retention wait on the API server only.
	MaxConcurrentReconciles int
	// ReadConcurrency is how many users may read k-ID at once, every
	// product together: the workers of the kiduser-api controller, apart
	// from the four above, since each holds its worker for a call's round
	// trip. 0 means DefaultReadConcurrency.
	ReadConcurrency int
	// SweepInterval is how often the sweep looks at every cached user and
	// enqueues those due before the next sweep (kiduser_sweep.go); 0
	// means DefaultUserSweep.
	SweepInterval time.Duration
	// Users reads the manager's cache of KidUser skeletons (the lookups by
	// id, the users of a product); Client reads every KidUser live. Unset,
	// Client is read as the cache (specs that drive a reconciler by hand
	// over one client).
	Users cachemem.UserCache

	// informers is the manager's cache, which the sweep walks.
	informers cache.Cache
	sweep     userSweep
	// started is when this replica's controllers started (Unix
	// nanoseconds, on Clock): the anchor of the resync after a restart
	// (resyncDue).
	started atomic.Int64
	polls   pollMemory
	deleted deletedUsers
	// loads counts what a resync round of each product costs
	// (kiduser_resync.go).
	loads resyncLoads
	// erasures remembers the sessions suspected of being deleted
	// (kiduser_erasure.go).
	erasures erasureMemory
}

// DefaultReadConcurrency is the default of ReadConcurrency. Reads per second
// are at most the calls in flight over k-ID's round trip: 32 keep up 320 a
// second at 100 ms, well above the default live rate (100/s).
const DefaultReadConcurrency = 32

// SetupWithManager registers the controllers. The kiduser controller
// watches status too (links appear in status), and a change to one user
// also wakes the stand-ins that hold one of its ids. With APIClients set,
// the kiduser-api controller reads k-ID for the same users on workers of
// its own.
func (r *KidUserReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.MaxConcurrentReconciles == 0 {
		r.MaxConcurrentReconciles = 4
	}
	if r.ReadConcurrency == 0 {
		r.ReadConcurrency = DefaultReadConcurrency
	}
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.SweepInterval == 0 {
		r.SweepInterval = DefaultUserSweep
	}
	r.informers = mgr.GetCache()
	r.sweep.kick = make(chan struct{}, 1)
	// One sweep for both controllers, while this replica leads.
	if err := mgr.Add(manager.RunnableFunc(r.runSweeps)); err != nil {
		return err
	}
	err := ctrl.NewControllerManagedBy(mgr).
		// At a start, only the users with something due now.
		For(&kidv1.KidUser{}, builder.WithPredicates(r.startFilter(false))).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles, NewQueue: newTimedQueue}).
		Watches(&kidv1.KidUser{}, handler.EnqueueRequestsFromMapFunc(r.standIns), builder.WithPredicates(changesOnly())).
		WatchesRawSource(r.sweepSource(false)).
		Named("kiduser").Complete(quietRaces(r))
	if err != nil || r.APIClients == nil {
		return err
	}
	// What each player adds to its product's status.api.
	r.polls.activity = &r.APIClients.activity
	// The controllers start when this replica leads: the resync after a
	// restart is spread from then.
	if err := mgr.Add(manager.RunnableFunc(func(context.Context) error {
		r.startedAt()
		return nil
	})); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&kidv1.KidUser{}, builder.WithPredicates(r.startFilter(true))).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.ReadConcurrency, NewQueue: newTimedQueue}).
		WatchesRawSource(r.sweepSource(true)).
		// The products' resync loads, from the cache's own notifications.
		Watches(&kidv1.KidUser{}, r.countLoads()).
		// A person resumed a product's erasures: its held players read
		// their sessions again.
		WatchesRawSource(source.Channel(r.APIClients.UserWakes(), &handler.EnqueueRequestForObject{})).
		// A product's calls may go out again (its breaker closed, its
		// key was accepted): its paused users are asked at once, after
		// any change waiting (enqueueLow).
		WatchesRawSource(source.Channel(r.APIClients.Resumes(), enqueueLow(r.pausedUsersOf))).
		// A product's receiver spooled events: every session is due.
		WatchesRawSource(source.Channel(r.APIClients.Rereads(), enqueueLow(r.usersOfProduct))).
		Named("kiduser-api").Complete(quietRaces(reconcile.Func(r.reconcileReads)))
}

// startedAt is when this replica's controllers started.
func (r *KidUserReconciler) startedAt() time.Time {
	r.started.CompareAndSwap(0, r.Clock.Now().UnixNano())
	return time.Unix(0, r.started.Load())
}

// usersOfProduct maps a product to its users.
func (r *KidUserReconciler) usersOfProduct(ctx context.Context, o client.Object) []reconcile.Request {
	return r.usersOf(ctx, o, func(*kidv1.KidUser) bool { return true })
}

// pausedUsersOf maps a product whose calls may go out again to the users
// that wait for it: those whose last pass found the calls could not go out
// (pollState.paused), and those with no read scheduled (no pass since the
// start, or none while the product had no spec.api). A user whose pass
// scheduled its next read is left to that schedule (its timer, or the
// sweep's). Waking every player cost a live GET each: at 250,000, a
// quarter of an hour of reconciles after each breaker's close.
func (r *KidUserReconciler) pausedUsersOf(ctx context.Context, o client.Object) []reconcile.Request {
	return r.usersOf(ctx, o, func(u *kidv1.KidUser) bool {
		s := r.polls.get(u)
		return s.paused || s.wakeAt.IsZero()
	})
}

// usersOf maps a product to those of its cached users that keep accepts.
func (r *KidUserReconciler) usersOf(ctx context.Context, o client.Object, keep func(*kidv1.KidUser) bool) []reconcile.Request {
	var out []reconcile.Request
	err := r.users().EachOfProduct(ctx, o.GetNamespace(), o.GetName(), func(u *kidv1.KidUser) {
		if keep(u) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(u)})
		}
	})
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing the users of a product")
		return nil
	}
	return out
}

// users reads the cache of KidUser skeletons: Users, or Client when unset.
func (r *KidUserReconciler) users() cachemem.UserCache { return userCache(r.Users, r.Client) }

// standIns maps a session's user to the stand-ins holding one of its ids.
// They are found through the id index, not by their names: a stand-in the
// game registered (a KidUser it created for a challenge it started) may
// have any name.
func (r *KidUserReconciler) standIns(ctx context.Context, o client.Object) []reconcile.Request {
	u := cachemem.UserOf(o)
	if u == nil || u.Spec.Identity.Kind != kidv1.IdentitySession {
		return nil
	}
	var out []reconcile.Request
	for _, key := range u.IDKeys()[1:] {
		users, err := r.users().Holding(ctx, u.Namespace, key)
		if err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "listing stand-ins by id")
			return nil
		}
		for _, s := range users {
			if s.Identity.Kind != kidv1.IdentitySession {
				out = append(out, reconcile.Request{NamespacedName: s.NamespacedName})
			}
		}
	}
	return out
}

// Reconcile links and erases one user.
func (r *KidUserReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	// A user the cache no longer holds is gone, and one whose skeleton
	// shows nothing to do (kiduser_idle.go) has nothing: no read of it.
	idle, next := false, time.Duration(0)
	cached, err := r.users().Peek(ctx, req.NamespacedName, func(s *kidv1.KidUser) { idle, next = r.idleWork(ctx, s) })
	if err != nil || !cached {
		return ctrl.Result{}, err
	}
	if idle {
		return ctrl.Result{RequeueAfter: r.timer(next)}, nil
	}
	user := &kidv1.KidUser{}
	if err := r.Get(ctx, req.NamespacedName, user); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.deleted.has(user.UID, r.Clock.Now()) {
		// Merged and deleted already; the cache has not seen it go.
		return ctrl.Result{}, nil
	}
	if user.Spec.Identity.Kind != kidv1.IdentitySession {
		merged, err := r.mergeIntoHolders(ctx, user)
		if err != nil || merged {
			return ctrl.Result{}, err
		}
	}
	if err := r.labelIDs(ctx, user); err != nil {
		return ctrl.Result{}, err
	}
	if user.Status.ErasedAt != nil {
		waiting, err := r.eraseEvents(ctx, user)
		if err != nil {
			return ctrl.Result{}, err
		}
		_, expiry, err := r.expireUser(ctx, user)
		next := r.timer(expiry)
		if waiting {
			// Not a time the sweep knows (dueOf): a short timer, while
			// the erasure waits.
			next = soonest(next, erasureRecheck)
		}
		return ctrl.Result{RequeueAfter: next}, err
	}
	gone, expiry, err := r.expireUser(ctx, user)
	if err != nil || gone {
		return ctrl.Result{}, err
	}
	bound, err := r.boundStandIn(ctx, user)
	return ctrl.Result{RequeueAfter: r.timer(soonest(bound, expiry))}, err
}

// reconcileReads is the kiduser-api controller's reconcile: the user's
// business with k-ID (reconcileAPI), which holds its worker for each call's
// round trip. It runs beside Reconcile, on the same user; both write status
// with an optimistic lock, and what one changes wakes the other.
func (r *KidUserReconciler) reconcileReads(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	gone := func() {
		r.polls.forget(req.NamespacedName)
		r.erasures.forget(req.NamespacedName)
	}
	// A user the cache no longer holds is gone, and one for which nothing
	// is asked of k-ID (kiduser_idle.go) needs no read either.
	idle := false
	cached, err := r.users().Peek(ctx, req.NamespacedName, func(s *kidv1.KidUser) { idle = r.idleReads(ctx, s) })
	if err != nil || !cached {
		if err == nil {
			gone()
		}
		return ctrl.Result{}, err
	}
	if idle {
		return ctrl.Result{}, nil
	}
	user := &kidv1.KidUser{}
	if err := r.Get(ctx, req.NamespacedName, user); err != nil {
		if apierrors.IsNotFound(err) {
			gone()
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.deleted.has(user.UID, r.Clock.Now()) {
		return ctrl.Result{}, nil
	}
	next, err := r.reconcileAPI(ctx, user)
	if err == nil {
		// What the sweep reads (dueOf) when the wait is past its interval.
		r.polls.woke(user, r.Clock.Now(), next)
	}
	return ctrl.Result{RequeueAfter: r.timer(next), Priority: ptr.To(requeuePriority(r.polls.get(user)))}, err
}

// slotPriority is the queue priority of a user that waits for the slot it
// booked with its product's rate limiter: above a change's (0) and the
// sweep's backlog (handler.LowPriority). A slot taken more than staleSlot
// late is booked again at the back of its lane, so a slot that waited
// behind a backlog in the queue was lost: after a restart over 50,000
// overdue sessions, the resync read 3 sessions in 10 s at a rate of 100
// while 43,000 users were reconciled for the first time (`make
// bench-reads`). Slots come at most at the products' rates, so they hold
// nothing else back for long.
const slotPriority = 10

// requeuePriority is the priority of a reconcile's requeue: slotPriority
// for a user holding a slot; otherwise the low priority of periodic work,
// like the sweep's (a change comes back through the watch at the default
// priority).
func requeuePriority(s pollState) int {
	if !s.slotAt.IsZero() {
		return slotPriority
	}
	return handler.LowPriority
}

// mergeIntoHolders merges a stand-in into the stronger users holding its id.
// It reports whether the stand-in was merged away (deleted). The cache names
// the holders; each is read live (a GET per holder), since what is merged
// into it is written back.
func (r *KidUserReconciler) mergeIntoHolders(ctx context.Context, standIn *kidv1.KidUser) (bool, error) {
	key := kidv1.UserIDKey(standIn.Spec.ProductRef.Name, standIn.Spec.Identity.Kind, standIn.Spec.Identity.ID)
	rank := standIn.Spec.Identity.Kind.Strength()
	users, err := r.users().HoldingLive(ctx, r.Client, standIn.Namespace, key, func(u cachemem.UserRef) bool { return u.Identity.Kind.Strength() > rank })
	if err != nil {
		return false, err
	}
	holders := make([]*kidv1.KidUser, 0, len(users))
	for i := range users {
		holders = append(holders, &users[i])
	}
	if len(holders) == 0 {
		return false, nil
	}
	slices.SortFunc(holders, func(a, b *kidv1.KidUser) int { return strongerFirst(*a, *b) })
	if standIn.Spec.Identity.Kind != kidv1.IdentityAccount {
		// A challenge or verification belongs to one player.
		holders = holders[:1]
	}

	from := &standIn.Status
	for _, h := range holders {
		before := h.DeepCopy()
		h.Status = *fold.Merge(&h.Status, from)
		if len(h.Status.EventCounts) > fold.MaxEventCounts/2 {
			if h.Status.EventCounts, err = r.compactCounts(ctx, h, standIn); err != nil {
				return false, err
			}
		}
		setUserConditions(h)
		if apiequality.Semantic.DeepEqual(before.Status, h.Status) {
			continue
		}
		if err := r.Status().Patch(ctx, h, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
			return false, fmt.Errorf("merging into user: %w", err)
		}
	}
	if standIn.Spec.Identity.Kind == kidv1.IdentityAccount {
		return false, nil
	}
	// Delete only the version that was merged: a fold that raced us
	// changed the resourceVersion, and the retry merges it again.
	rv := standIn.ResourceVersion
	if err := r.Delete(ctx, standIn, client.Preconditions{UID: &standIn.UID, ResourceVersion: &rv}); client.IgnoreNotFound(err) != nil {
		return false, fmt.Errorf("deleting merged user: %w", err)
	}
	r.deleted.add(standIn.UID, r.Clock.Now())
	return true, nil
}

// erasureRecheck is when an erased user is looked at again while an event
// about it that kept personal data is not finished (its runs pending, or
// not folded yet, as far as the cache shows). The KidEvent controller
// deletes such an event when it settles, but its cache may not show the
// erasure yet, as this one may not show the event settled: without a
// second look both would skip it, and its personal data would stay until
// the retention sweep.
const erasureRecheck = 30 * time.Second

// compactCounts folds the event counts of h's origins that are gone (stand-ins
// merged and deleted) into one entry of h's own, so that a player many
// stand-ins were merged into stays within the CRD's bound on eventCounts:
// past it every merge would be refused (422) and retried without end, and
// the stand-in never deleted. An origin is live when it is h, the stand-in
// being merged, or a user the cache shows holding one of h's ids (a
// stand-in not deleted yet, which may be merged again): a user whose count
// h holds was read from the cache to be merged, so the cache shows it
// until it is gone.
func (r *KidUserReconciler) compactCounts(ctx context.Context, h, standIn *kidv1.KidUser) ([]kidv1.EventCount, error) {
	live := map[string]bool{string(h.UID): true, string(standIn.UID): true}
	for _, key := range h.IDKeys() {
		users, err := r.users().Holding(ctx, h.Namespace, key)
		if err != nil {
			return nil, err
		}
		for _, u := range users {
			live[string(u.UID)] = true
		}
	}
	return fold.CompactCounts(h.Status.EventCounts, string(h.UID), func(uid string) bool { return live[uid] }), nil
}

// eraseEvents deletes the finished events about an erased user that still
// hold personal data (possible only where the product's privacy settings
// allowed keeping it). It reports whether such an event was left because
// it is not finished yet, so that the user is looked at again.
func (r *KidUserReconciler) eraseEvents(ctx context.Context, user *kidv1.KidUser) (waiting bool, err error) {
	seen := map[string]bool{}
	for _, key := range user.IDKeys() {
		events, err := cachemem.EventsNaming(ctx, r, user.Namespace, key)
		if err != nil {
			return false, err
		}
		for i := range events {
			e := &events[i]
			if !e.Spec.PersonalData || seen[e.Name] {
				continue
			}
			seen[e.Name] = true
			if !e.Status.Finished() {
				// Not folded yet, or its runs pending: the KidEvent
				// controller deletes it once it has folded it into this
				// erased user, or its runs settled, if its cache shows the
				// erasure by then; the recheck covers the case it does not.
				waiting = true
				continue
			}
			if err := r.Delete(ctx, e); client.IgnoreNotFound(err) != nil {
				return false, fmt.Errorf("erasing event: %w", err)
			}
			erasedEventsTotal.Inc()
		}
	}
	return waiting, nil
}

// boundStandIn drops the personal data of a stand-in that nothing linked to
// a session within the product's retention (retention.maxAge since its last
// event): a verification's date of birth must not outlive the events it came
// from when no Session.Delete or Account.Delete can ever reach it. It
// returns when to look again.
func (r *KidUserReconciler) boundStandIn(ctx context.Context, user *kidv1.KidUser) (time.Duration, error) {
	if user.Spec.Identity.Kind == kidv1.IdentitySession || user.Status.PersonalData == nil {
		return 0, nil
	}
	product := &kidv1.KidProduct{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: user.Namespace, Name: user.Spec.ProductRef.Name}, product); err != nil {
		return 0, client.IgnoreNotFound(err)
	}
	since := user.CreationTimestamp.Time
	if t := user.Status.LastEventTime; t != nil && t.After(since) {
		since = t.Time
	}
	if wait := since.Add(retentionOf(product).maxAge).Sub(r.Clock.Now()); wait > 0 {
		return wait, nil
	}
	before := user.DeepCopy()
	user.Status.PersonalData = nil
	if err := r.Status().Patch(ctx, user, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return 0, fmt.Errorf("dropping an unlinked stand-in's personal data: %w", err)
	}
	standInsBoundTotal.Inc()
	return 0, nil
}

// labelIDs gives a user whose id labels miss an id it holds one label per
// id it holds (kidv1.IDLabel) and no other id label, so that kubectl kid
// finds a player by any id with one label-selected list (design §5,
// "Lookups"). A user the fold creates carries the labels of its first
// event's ids already (newUser), so this writes only for a user that
// gained an id since (a later challenge, a kuid from k-ID's API, a
// stand-in merged in), one the game registered, or one stored before the
// labels existed. A label of an id the user does not hold is no reason
// to write (kidv1.IDLabelsCover): a created user holds its ids only once
// its first status write lands, and a label write that removed them
// meanwhile would be undone by the next. The patch takes no optimistic
// lock: only this controller changes a user's id labels after its create,
// one reconcile of a user at a time, and each write of the user wakes it
// to compare again, so a patch made from an older read is corrected by the
// next.
func (r *KidUserReconciler) labelIDs(ctx context.Context, user *kidv1.KidUser) error {
	ids := user.HeldIDs()
	if kidv1.IDLabelsCover(user.Labels, ids) {
		return nil
	}
	before := user.DeepCopy()
	user.Labels = kidv1.WithIDLabels(user.Labels, ids)
	if err := r.Patch(ctx, user, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("labelling the ids of user %s: %w", user.Name, err)
	}
	idLabelWritesTotal.Inc()
	return nil
}
