package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// deletedMemory is how long the KidUser controller remembers a user it
// deleted: far longer than the cache takes to see the delete.
const deletedMemory = time.Minute

// deletedUsers remembers the users this controller deleted until the cache
// has surely seen them go. A merge's own status write on the session user
// wakes the stand-in it is about to delete; without this memory the
// stand-in, still in the cache, is merged again and deleted a second time,
// a DELETE answered 404 for about one merge in eight when the controllers
// are behind (`make bench`, journeys).
type deletedUsers struct {
	mu    sync.Mutex
	uids  map[types.UID]struct{}
	queue []deletedUser // in the order deleted, to forget the oldest first
}

type deletedUser struct {
	uid types.UID
	at  time.Time
}

// add remembers uid, deleted at now, and forgets what is older than
// deletedMemory.
func (d *deletedUsers) add(uid types.UID, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.uids == nil {
		d.uids = map[types.UID]struct{}{}
	}
	d.forgetBefore(now.Add(-deletedMemory))
	d.uids[uid] = struct{}{}
	d.queue = append(d.queue, deletedUser{uid: uid, at: now})
}

// has says whether uid was deleted within deletedMemory of now.
func (d *deletedUsers) has(uid types.UID, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.forgetBefore(now.Add(-deletedMemory))
	_, ok := d.uids[uid]
	return ok
}

func (d *deletedUsers) forgetBefore(t time.Time) {
	n := 0
	for n < len(d.queue) && d.queue[n].at.Before(t) {
		delete(d.uids, d.queue[n].uid)
		n++
	}
	d.queue = d.queue[n:]
}
