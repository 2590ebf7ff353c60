package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kidapi"
	"github.com/kid-operator/kid-operator/internal/secrets"
)

// APIClients holds one k-ID API client per product, shared by the KidProduct
// controller (which checks the key) and the KidUser controller (which syncs
// sessions and recovers missed events). A product's client, and with it its
// rate limiter, is rebuilt only when its API configuration or key changes,
// so the rate holds across reconciles.
type APIClients struct {
	// HTTP is the operator's one outbound client (timeouts, address guard).
	HTTP *http.Client
	// Secrets reads the products' API key Secrets (one get each, kept for
	// a short TTL). Nil reads them with the reader For is given.
	Secrets *secrets.Cache
	// AllowInsecureURLs lets a product's spec.api.baseURL be plain
	// http:// (the manager's --allow-insecure-api-urls: `make run` and
	// the tests, whose fake k-ID serves on loopback). Otherwise such a
	// product's APIReady is False, reason InsecureBaseURL, and nothing
	// sends its key.
	AllowInsecureURLs bool
	// AllowedHosts are the hosts beyond k-ID's own that a product's
	// spec.api.baseURL may name (the manager's --api-allow-hosts); nil
	// allows k-ID's only. Otherwise APIReady is False, reason
	// BaseURLNotAllowed, and the product's Secret is neither read nor sent.
	AllowedHosts *kidapi.AllowedHosts

	mu        sync.Mutex
	byProduct map[types.NamespacedName]*APIClient
	// wake tells the KidProduct controller that a product's API state
	// changed (k-ID refused its key, or its breaker opened), so APIReady
	// shows it at once.
	wake chan event.GenericEvent
	// resume tells the KidUser controller that a product's calls may go
	// out again (APIReady turned True), so its paused users are asked at
	// once rather than when their pause ends.
	resume chan event.GenericEvent
	// reread tells the KidUser controller that every session of a
	// product is due again (its receiver spooled events: apioutage.go).
	reread chan event.GenericEvent
	// erasures are the products' erasure breakers (erasure_breaker.go).
	erasures erasureBreakers
	// activity sums what the products' players did, for status.api
	// (apiactivity.go).
	activity apiActivity
	// outages are the products whose receiver spooled events
	// (apioutage.go).
	outages apiOutages
}

// NewAPIClients returns an empty set of clients that call k-ID through hc.
func NewAPIClients(hc *http.Client) *APIClients {
	s := &APIClients{HTTP: hc, byProduct: map[types.NamespacedName]*APIClient{}, wake: make(chan event.GenericEvent, 64), resume: make(chan event.GenericEvent, 64), reread: make(chan event.GenericEvent, 64), erasures: newErasureBreakers()}
	s.activity = newAPIActivity(s.wakeProduct)
	return s
}

// APIClient is one product's k-ID API client and what is known of its key.
type APIClient struct {
	*kidapi.Client
	fingerprint string
	// lanes book the product's reads in two lanes: urgent reads before
	// the resync backlog (kiduser_schedule.go).
	lanes *kidapi.Lanes
	// unauthorized is set when k-ID answered 401: calls stop until the
	// key changes or a probe succeeds.
	unauthorized atomic.Bool
	// probed is set once a call showed that k-ID accepts the key.
	probed atomic.Bool
	// lastProbe is when the key was last probed (Unix nanoseconds).
	lastProbe atomic.Int64
	// breaker pauses the product's reads while most of its calls fail
	// (apibreaker.go). A new client (a changed base URL, key, rate or
	// timeout) starts closed.
	breaker breaker
}

// Unauthorized reports whether k-ID refused the product's key.
func (c *APIClient) Unauthorized() bool { return c.unauthorized.Load() }

// Paused reports whether the product's breaker is open, and if so how long
// until its next probe and what failed.
func (c *APIClient) Paused(now time.Time) (bool, time.Duration, string) {
	return c.breaker.state(now)
}

// For returns the product's client. A missing Secret or key is an *errConfig
// the user must fix.
func (s *APIClients) For(ctx context.Context, r client.Reader, p *kidv1.KidProduct) (*APIClient, error) {
	api := p.Spec.API
	if api == nil {
		return nil, nil
	}
	// Where the key would go is checked before the Secret is read: a
	// refused URL reads nothing and sends nothing.
	base := kidapi.BaseURL(string(p.Spec.Environment), api.BaseURL)
	if err := s.refusedURL(p.Namespace, base); err != nil {
		return nil, err
	}
	data, err := readSecret(ctx, s.Secrets, r, types.NamespacedName{Namespace: p.Namespace, Name: api.SecretRef.Name})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &errConfig{reason: kidv1.SecretNotFoundReason, msg: fmt.Sprintf("API Secret %q not found; session sync and recovery are off", api.SecretRef.Name)}
		}
		if secrets.IsNotLabelled(err) {
			return nil, &errConfig{reason: kidv1.SecretNotLabelledReason, msg: "API " + err.Error() + "; session sync and recovery are off"}
		}
		return nil, fmt.Errorf("reading API secret: %w", err)
	}
	key, next := string(data[api.SecretRef.Key]), string(data[api.NextKeyName()])
	if key == "" {
		return nil, &errConfig{reason: kidv1.SecretKeyMissingReason, msg: fmt.Sprintf("API Secret %q has no key %q; session sync and recovery are off", api.SecretRef.Name, api.SecretRef.Key)}
	}
	name := client.ObjectKeyFromObject(p)
	rps, burst := api.RateLimit(p.Spec.Environment)
	cfg := kidapi.Config{
		BaseURL:    base,
		APIKey:     key,
		NextAPIKey: next,
		// k-ID accepted the other key: APIReady names it.
		KeySwitched: func(int) { s.wakeProduct(name) },
		Product:     name.String(),
		RPS:         float64(rps),
		Burst:       burst,
		Timeout:     api.CallTimeout(),
		HTTPClient:  s.HTTP,
	}
	sum := sha256.Sum256([]byte(cfg.BaseURL + "\x00" + key + "\x00" + next + "\x00" + strconv.Itoa(rps) + "/" + strconv.Itoa(burst) + "/" + cfg.Timeout.String()))
	fingerprint := hex.EncodeToString(sum[:])

	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.byProduct[name]; ok && c.fingerprint == fingerprint {
		return c, nil
	}
	c := &APIClient{Client: kidapi.New(cfg), fingerprint: fingerprint}
	c.lanes = kidapi.NewLanes(c.Client, cfg.RPS, cfg.Burst, nil)
	s.byProduct[name] = c
	return c, nil
}

// refusedURL says why the API key may not go to base, the base URL of a
// product of namespace ns; nil when it may.
func (s *APIClients) refusedURL(ns, base string) *errConfig {
	if !s.AllowInsecureURLs && !strings.HasPrefix(strings.ToLower(base), "https://") {
		return &errConfig{reason: kidv1.InsecureBaseURLReason, msg: "spec.api.baseURL is not https://: the API key would cross the network unencrypted, so it is never sent; session sync and recovery are off (plain http:// is for make run and tests, whose manager runs with --allow-insecure-api-urls)"}
	}
	if err := s.AllowedHosts.Check(ns, base); err != nil {
		return &errConfig{reason: kidv1.BaseURLNotAllowedReason, msg: err.Error() + "; the API key is neither read nor sent, and session sync and recovery are off"}
	}
	return nil
}

// MayReadKey reports whether the API key of p may be read: p has
// spec.api, and its base URL is one the key may go to. The Secret of a
// refused URL is never read, not even by the periodic recheck.
func (s *APIClients) MayReadKey(p *kidv1.KidProduct) bool {
	return p.Spec.API != nil && s.refusedURL(p.Namespace, kidapi.BaseURL(string(p.Spec.Environment), p.Spec.API.BaseURL)) == nil
}

// KeyName is the Secret key whose API key the client sends: spec.api's
// secretRef.key, or its next key (kidv1.APISpec.NextKeyName) once k-ID
// accepted that one instead.
func (c *APIClient) KeyName(api *kidv1.APISpec) string {
	if c.KeyInUse() == kidapi.NextKey {
		return api.NextKeyName()
	}
	return api.SecretRef.Key
}

// Forget drops a product's client (the product was deleted or lost its
// spec.api), and its series of the client's metrics.
func (s *APIClients) Forget(product types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byProduct[product]; ok {
		delete(s.byProduct, product)
		kidapi.Forget(product.String())
	}
}

// Refused records that k-ID answered 401 to a product's key and wakes the
// product, so that its APIReady condition says so.
func (s *APIClients) Refused(c *APIClient, product types.NamespacedName) {
	if c.unauthorized.Swap(true) {
		return
	}
	s.send(s.wake, product)
}

// Wakes is the channel the KidProduct controller watches.
func (s *APIClients) Wakes() <-chan event.GenericEvent { return s.wake }

// Succeeded counts a call k-ID answered in the product's breaker.
func (s *APIClients) Succeeded(c *APIClient, now time.Time) {
	c.breaker.record(now, false, "")
}

// Failed counts a failed call in the product's breaker (only failures that
// say something about the product: see failsProduct) and wakes the product
// when that opened it, so that APIReady says so.
func (s *APIClients) Failed(c *APIClient, product types.NamespacedName, now time.Time, err error) {
	if !failsProduct(err) || !c.breaker.record(now, true, describeFailure(err)) {
		return
	}
	s.send(s.wake, product)
}

// Resumed wakes the product's users: its calls may go out again.
func (s *APIClients) Resumed(product types.NamespacedName) { s.send(s.resume, product) }

// Resumes is the channel the KidUser controller watches.
func (s *APIClients) Resumes() <-chan event.GenericEvent { return s.resume }

// Rereads is the channel of products whose every session is to be read
// again, which the KidUser controller watches.
func (s *APIClients) Rereads() <-chan event.GenericEvent { return s.reread }

func (s *APIClients) send(ch chan event.GenericEvent, product types.NamespacedName) {
	p := &kidv1.KidProduct{}
	p.Namespace, p.Name = product.Namespace, product.Name
	select {
	case ch <- event.GenericEvent{Object: p}:
	default:
		// The controller is behind; its own requeue comes later.
	}
}

// UserWakes is the channel the KidUser controller watches: the users whose
// erasure the breaker held, when a person resumes erasures.
func (s *APIClients) UserWakes() <-chan event.GenericEvent { return s.erasures.wakeUsers }

// wakeProduct wakes a product's reconcile.
func (s *APIClients) wakeProduct(product types.NamespacedName) { s.send(s.wake, product) }

// probeInterval is how often a key k-ID refused is tried again, in case it
// was fixed at k-ID rather than in the Secret.
const probeInterval = 10 * time.Minute

// probeSessionID names no session: k-ID answers it with 400 NOT_FOUND when
// it accepts the key, and 401 when it does not. It is a read, so it is safe
// against the live environment.
const probeSessionID = "kid-operator-api-key-probe"

// errPaused is Probe's answer while the product's breaker waits for its
// next probe.
var errPaused = errors.New("the product's calls to k-ID are paused")

// Probe checks the key with one call, unless it is known to work or was
// refused less than probeInterval ago. It is also the probe of an open
// breaker: with the breaker open it calls only when the probe is due
// (errPaused otherwise), and an answer from k-ID closes the breaker. It
// returns nil when k-ID accepts the key, and the error of the call
// otherwise.
func (c *APIClient) Probe(ctx context.Context, now time.Time) error {
	open, until, _ := c.breaker.state(now)
	switch {
	case open && until > 0:
		return errPaused
	case open:
	case c.probed.Load() && !c.unauthorized.Load():
		return nil
	case c.unauthorized.Load():
		if last := c.lastProbe.Load(); last != 0 && now.Sub(time.Unix(0, last)) < probeInterval {
			return &kidapi.Error{HTTPStatus: http.StatusUnauthorized, Code: "UNAUTHORIZED", Message: "k-ID refused the API key"}
		}
	}
	c.lastProbe.Store(now.UnixNano())
	_, err := c.GetSession(ctx, probeSessionID, "")
	var apiErr *kidapi.Error
	switch {
	case err == nil, errors.As(err, &apiErr) && apiErr.HTTPStatus == http.StatusBadRequest:
		c.breaker.probed(now, true, "")
		c.unauthorized.Store(false)
		c.probed.Store(true)
		return nil
	case kidapi.IsUnauthorized(err):
		// k-ID answered: the breaker closes, and the refusal pauses the
		// product by itself.
		c.breaker.probed(now, true, "")
		c.unauthorized.Store(true)
	case failsProduct(err):
		c.breaker.probed(now, false, describeFailure(err))
	}
	return err
}
