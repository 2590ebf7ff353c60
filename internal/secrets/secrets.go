// Package secrets reads the Secrets that KidProducts name, and only those.
//
// kid-operator keeps no informer on Secrets: caching every Secret of a
// cluster (or of a namespace) would hold credentials it has no business
// reading, cost memory in proportion to unrelated data, and need list and
// watch permission on all of them. Instead each Secret is read with a plain
// get when asked for, and kept in a small in-process cache for a short time
// (TTL), so that the receiver's hot path does not call the API server per
// delivery. The cache is bounded (least recently used entries go first) and
// keyed by namespace and name.
//
// Without a watch, a change to a Secret is seen when its entry expires, when
// a caller forces a re-read (Refresh, rate-limited per Secret so that a
// caller driven by untrusted input cannot hammer the API server), or when a
// caller asks for a fresher copy (GetWithin). Every read that finds a Secret
// different from the copy it replaces is reported to the OnChange listeners.
//
// Only Secrets labelled kid.dev/secret=true are used (kidv1.SecretLabel): a
// spec names a Secret of its namespace, and the label is its owner's
// consent that the operator use it. An unlabelled Secret is answered with a
// *NotLabelledError and its data is not kept.
package secrets

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// Defaults of Options.
const (
	// DefaultTTL is how long a read Secret is used before it is read
	// again: short enough that a rotation or a deletion takes effect
	// within it, long enough that a busy product costs the API server one
	// get per TTL rather than one per delivery.
	DefaultTTL = 15 * time.Second
	// DefaultMaxEntries bounds the cache: a product names one or two
	// Secrets, so this is a couple of thousand products.
	DefaultMaxEntries = 4096
	// DefaultMinRefreshInterval is the shortest time between two forced
	// re-reads of one Secret.
	DefaultMinRefreshInterval = time.Second
	// readTimeout bounds one get. The read is shared by every caller
	// waiting for it, so it does not end with the first caller's context.
	readTimeout = 10 * time.Second
	// LastGoodWait is how long a read may take before a caller that may
	// be served the last good copy (Options.LastGoodFor) is: counted from
	// the read's start, so that while the API server hangs, callers wait
	// at most this long each, and those arriving later not at all.
	LastGoodWait = time.Second
)

// Options configure a Cache.
type Options struct {
	// TTL is how long a read Secret is used; 0 means DefaultTTL.
	TTL time.Duration
	// MaxEntries bounds the number of Secrets kept; 0 means
	// DefaultMaxEntries.
	MaxEntries int
	// MinRefreshInterval is the shortest time between two forced re-reads
	// of one Secret; 0 means DefaultMinRefreshInterval.
	MinRefreshInterval time.Duration
	// Clock times the entries' age and the refresh limit; nil means the
	// real clock.
	Clock clock.PassiveClock
	// LastGoodFor is how long past the TTL the last copy a read returned
	// is still served when a new read fails or has not answered within
	// LastGoodWait: during an outage of the API server, deliveries are
	// still verified, with the keys as they were when it was last read.
	// 0 means never: a read that fails is the caller's error.
	LastGoodFor time.Duration
}

func (o *Options) setDefaults() {
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	if o.MinRefreshInterval <= 0 {
		o.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
}

// Secret is what the cache keeps of a Secret.
type Secret struct {
	// Data is the Secret's data. It is shared by every caller: never
	// modify it.
	Data map[string][]byte
	// ResourceVersion tells two versions of the Secret apart.
	ResourceVersion string
	// notLabelled is set for a Secret without the label: Data is then
	// empty, and callers get a *NotLabelledError.
	notLabelled bool
}

// NotLabelledError is the answer for a Secret that exists but does not carry
// the label kid.dev/secret=true: the operator does not use it.
type NotLabelledError struct {
	Name string
}

func (e *NotLabelledError) Error() string {
	return fmt.Sprintf("Secret %q is not labelled %s=%s, so kid-operator does not use it (kubectl label secret %s %s=%s)",
		e.Name, kidv1.SecretLabel, kidv1.SecretLabelValue, e.Name, kidv1.SecretLabel, kidv1.SecretLabelValue)
}

// IsNotLabelled reports whether err is, or wraps, a *NotLabelledError.
func IsNotLabelled(err error) bool {
	var e *NotLabelledError
	return errors.As(err, &e)
}

// Labelled reports whether a Secret carries the label that lets kid-operator
// use it.
func Labelled(s *corev1.Secret) bool {
	return s.Labels[kidv1.SecretLabel] == kidv1.SecretLabelValue
}

// Check returns a *NotLabelledError for a Secret without the label: for a
// caller that reads a Secret without the cache.
func Check(s *corev1.Secret) error {
	if !Labelled(s) {
		return &NotLabelledError{Name: s.Name}
	}
	return nil
}

// Cache reads Secrets with an uncached get and keeps them for a TTL. It is
// safe for concurrent use.
type Cache struct {
	reader client.Reader
	opts   Options

	mu        sync.Mutex
	entries   map[types.NamespacedName]*entry
	lru       *list.List // of *entry, most recently used first
	listeners []func(types.NamespacedName)
}

type entry struct {
	key  types.NamespacedName
	elem *list.Element
	// known is set once a read answered; secret is then the Secret, or
	// nil when it did not exist.
	known    bool
	secret   *Secret
	readAt   time.Time
	forcedAt time.Time
	// inflight is the read under way, which every caller asking for a
	// fresher copy meanwhile waits for.
	inflight *read
}

type read struct {
	done chan struct{}
	// started is when the read began, in real time (LastGoodWait).
	started time.Time
	secret  *Secret
	err     error
}

// New returns a cache that reads Secrets through reader, which must not be
// an informer cache (the manager's APIReader, or a client that does not
// cache Secrets).
func New(reader client.Reader, opts Options) *Cache {
	opts.setDefaults()
	return &Cache{reader: reader, opts: opts, entries: map[types.NamespacedName]*entry{}, lru: list.New()}
}

// TTL is how long a read Secret is used.
func (c *Cache) TTL() time.Duration { return c.opts.TTL }

// Get returns the Secret as read at most TTL ago. A Secret that does not
// exist is an error for which apierrors.IsNotFound is true, one without the
// label a *NotLabelledError; those answers are kept for the TTL too.
func (c *Cache) Get(ctx context.Context, key types.NamespacedName) (*Secret, error) {
	s, _, err := c.get(ctx, key, c.opts.TTL, false)
	return s, err
}

// GetWithin returns the Secret as read at most maxAge ago (and never older
// than the TTL): for a caller that re-checks on its own schedule.
func (c *Cache) GetWithin(ctx context.Context, key types.NamespacedName, maxAge time.Duration) (*Secret, error) {
	s, _, err := c.get(ctx, key, min(maxAge, c.opts.TTL), false)
	return s, err
}

// Refresh reads the Secret again whatever its age, unless it was forced to
// less than MinRefreshInterval ago: then it returns the copy it has, and
// false. It is for a caller that has reason to think the copy is out of
// date (a signature no key verifies) and whose reason may come from an
// attacker.
func (c *Cache) Refresh(ctx context.Context, key types.NamespacedName) (*Secret, bool, error) {
	return c.get(ctx, key, 0, true)
}

// OnChange registers f to be called, outside any lock and before the read
// answers, with the key of a Secret whose read found it different (created,
// changed or deleted) from the copy it replaced. The first read of a Secret
// reports nothing. f must not block.
func (c *Cache) OnChange(f func(types.NamespacedName)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.listeners = append(c.listeners, f)
}

// Len is the number of Secrets the cache holds.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Cached reports whether the cache holds an answer to a read of key: for a
// test that shows a Secret was never read.
func (c *Cache) Cached(key types.NamespacedName) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	return ok && e.known
}

// get returns the Secret read at most maxAge ago; force asks for a new read
// (rate-limited). The bool says whether the answer comes from a read made
// for this call (or joined by it).
func (c *Cache) get(ctx context.Context, key types.NamespacedName, maxAge time.Duration, force bool) (*Secret, bool, error) {
	c.mu.Lock()
	e := c.entry(key)
	now := c.opts.Clock.Now()
	if force {
		if !e.forcedAt.IsZero() && now.Sub(e.forcedAt) < c.opts.MinRefreshInterval {
			refreshesLimitedTotal.Inc()
			force = false
			maxAge = c.opts.TTL
			if e.known {
				s := e.secret
				c.mu.Unlock()
				return answer(key, s, false)
			}
		} else {
			e.forcedAt = now
		}
	}
	if !force && e.known && now.Sub(e.readAt) < maxAge {
		s := e.secret
		c.mu.Unlock()
		return answer(key, s, false)
	}
	// The copy held, if it may stand in for an answer that does not come.
	lastGood, haveLastGood := e.secret, e.known && c.opts.LastGoodFor > 0 && now.Sub(e.readAt) < c.opts.TTL+c.opts.LastGoodFor
	r := e.inflight
	if r == nil {
		r = &read{done: make(chan struct{}), started: time.Now()}
		e.inflight = r
		reason := "miss"
		if force {
			reason = "refresh"
		}
		apiReadsTotal.WithLabelValues(reason).Inc()
		// The read is shared by every caller waiting on this key, so it
		// must not end with the first caller's request: read bounds it.
		go c.read(e, r, now) //nolint:gosec // G118: see above
	}
	c.mu.Unlock()

	var fallback <-chan time.Time
	if haveLastGood {
		t := time.NewTimer(time.Until(r.started.Add(LastGoodWait)))
		defer t.Stop()
		fallback = t.C
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	case <-fallback:
		lastGoodServedTotal.WithLabelValues("slow").Inc()
		return answer(key, lastGood, false)
	}
	if r.err != nil {
		if haveLastGood {
			lastGoodServedTotal.WithLabelValues("error").Inc()
			return answer(key, lastGood, false)
		}
		return nil, false, r.err
	}
	return answer(key, r.secret, true)
}

// read gets the Secret from the API server and records the answer.
func (c *Cache) read(e *entry, r *read, started time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	var obj corev1.Secret
	err := c.reader.Get(ctx, e.key, &obj)
	var s *Secret
	switch {
	case err == nil && !Labelled(&obj):
		// Its owner did not consent: nothing of it is kept but its
		// version, so that labelling it is seen as a change.
		s = &Secret{ResourceVersion: obj.ResourceVersion, notLabelled: true}
	case err == nil:
		// Only the data is kept: not the labels, annotations (which may
		// hold a copy of the data) or managed fields.
		s = &Secret{Data: obj.Data, ResourceVersion: obj.ResourceVersion}
	case apierrors.IsNotFound(err):
		err = nil
	}

	c.mu.Lock()
	changed := false
	if err == nil {
		changed = e.known && !same(e.secret, s)
		e.known, e.secret, e.readAt = true, s, started
	}
	e.inflight = nil
	r.secret, r.err = s, err
	listeners := c.listeners
	c.mu.Unlock()

	// Before the waiters get the answer, so that whoever saw the change
	// knows it was reported.
	if changed {
		for _, f := range listeners {
			f(e.key)
		}
	}
	close(r.done)
}

// entry returns the key's entry, made the most recently used, creating it
// (and evicting the least recently used beyond MaxEntries) if need be.
// c.mu is held.
func (c *Cache) entry(key types.NamespacedName) *entry {
	if e, ok := c.entries[key]; ok {
		c.lru.MoveToFront(e.elem)
		return e
	}
	e := &entry{key: key}
	e.elem = c.lru.PushFront(e)
	c.entries[key] = e
	for c.lru.Len() > c.opts.MaxEntries {
		old := c.lru.Back().Value.(*entry)
		c.lru.Remove(old.elem)
		delete(c.entries, old.key)
	}
	return e
}

func answer(key types.NamespacedName, s *Secret, read bool) (*Secret, bool, error) {
	if s == nil {
		return nil, read, apierrors.NewNotFound(corev1.Resource("secrets"), key.Name)
	}
	if s.notLabelled {
		return nil, read, &NotLabelledError{Name: key.Name}
	}
	return s, read, nil
}

func same(a, b *Secret) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.ResourceVersion == b.ResourceVersion
}

var (
	apiReadsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_secret_api_reads_total",
		Help: "Gets of a Secret from the API server, by reason: miss (not cached, or older than asked for) or refresh (forced, e.g. by a signature no cached key verified).",
	}, []string{"reason"})

	refreshesLimitedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kid_secret_refreshes_limited_total",
		Help: "Forced re-reads of a Secret refused because the same Secret was re-read less than a second before (answered from the cache).",
	})

	lastGoodServedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kid_secret_last_good_served_total",
		Help: "Gets answered with the last good copy of a Secret, older than the TTL, because its read failed (reason=error) or had not answered within a second (reason=slow): the API server is unavailable.",
	}, []string{"reason"})
)

func init() {
	metrics.Registry.MustRegister(apiReadsTotal, refreshesLimitedTotal, lastGoodServedTotal)
}
