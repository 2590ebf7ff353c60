package kidapi

import (
	"errors"
	"net/http"
	"sync/atomic"
)

// Key rotation (design.md §3, "The client"): a product's API Secret may hold
// two keys, the current one and the next. k-ID accepts one key at a time, and
// the switch happens at k-ID (Compliance Studio), not in the cluster, so the
// client cannot know in advance which of the two works. It sends the key in
// use; a 401 sends the same request once more with the other key, and when
// k-ID answers that one, the client keeps using it. A rotation is therefore:
// add the next key to the Secret, switch k-ID over, move the next key into
// the current one's place, remove the next.

// Which key a client sends.
const (
	CurrentKey = 0
	NextKey    = 1
)

// keySet is a client's keys and which of them k-ID last accepted.
type keySet struct {
	keys [2]string
	// nextInUse is set when the key in use is NextKey.
	nextInUse atomic.Bool
	// switched, if set, is told when the key in use changes.
	switched func(inUse int)
}

func newKeySet(current, next string, switched func(int)) *keySet {
	return &keySet{keys: [2]string{current, next}, switched: switched}
}

// rotating reports whether there is a second key to try.
func (k *keySet) rotating() bool { return k.keys[NextKey] != "" }

func (k *keySet) current() int {
	if k.nextInUse.Load() {
		return NextKey
	}
	return CurrentKey
}

// other is the key that is not i.
func other(i int) int { return 1 - i }

// accepted records that k-ID answered a request sent with key i: if it was
// not the key in use (since from), it is now.
func (k *keySet) accepted(from, i int) {
	if from == i || !k.nextInUse.CompareAndSwap(from == NextKey, i == NextKey) {
		return
	}
	if k.switched != nil {
		k.switched(i)
	}
}

// answeredWithKey reports whether an answer shows that k-ID accepted the key
// the request carried: any answer but a 401, a 429 (which k-ID may send
// before it looks at the key) and a 5xx or no answer at all (which say
// nothing of it).
func answeredWithKey(err error) bool {
	if err == nil || errors.Is(err, ErrNotModified) {
		return true
	}
	var e *Error
	return errors.As(err, &e) && e.HTTPStatus >= 400 && e.HTTPStatus < 500 && e.HTTPStatus != http.StatusUnauthorized && e.HTTPStatus != http.StatusTooManyRequests
}

// KeyInUse returns CurrentKey or NextKey: the key the client sends, which
// is the one k-ID last accepted (CurrentKey until k-ID refuses it).
func (c *Client) KeyInUse() int { return c.keys.current() }
