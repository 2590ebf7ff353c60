package actions

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// A resource action creates its object as a ServiceAccount of its own
// namespace, never as kid-operator: otherwise anyone who may write a
// KidAction could create whatever kid-operator may (a confused deputy), and
// kid-operator would need create rights on every kind any action might name.
// The namespace is always the action's, so an author reaches only the
// ServiceAccounts of a namespace they already write to, as a Pod's author
// does.

// ErrServiceAccountRequired is the failure of a resource action that names no
// ServiceAccount when the administrator set no default.
var ErrServiceAccountRequired = errors.New("spec.resource.serviceAccountName is required: kid-operator creates the object as that ServiceAccount of the action's namespace, and no default is configured (--default-action-service-account)")

// maxImpersonatingClients bounds the cache of clients: past it the cache
// starts again (the clients are cheap to rebuild; connections are pooled by
// client-go underneath).
const maxImpersonatingClients = 1024

// Impersonator hands out API clients that act as a ServiceAccount, one per
// (namespace, ServiceAccount), built once and kept.
type Impersonator struct {
	cfg  *rest.Config
	opts client.Options
	// defaultSA is the ServiceAccount of actions that name none; empty
	// means they must name one.
	defaultSA string

	mu      sync.Mutex
	clients map[string]client.Client
}

// NewImpersonator returns an Impersonator over the manager's rest.Config
// (whose identity needs impersonate on serviceaccounts), with the manager's
// scheme and RESTMapper in opts. defaultSA, if set, is the ServiceAccount of
// actions that name none.
func NewImpersonator(cfg *rest.Config, opts client.Options, defaultSA string) *Impersonator {
	return &Impersonator{cfg: rest.CopyConfig(cfg), opts: opts, defaultSA: defaultSA, clients: map[string]client.Client{}}
}

// ServiceAccount is the name of the ServiceAccount an action acts as (a
// resource action to create its object, a cloudEvent action to read its
// sink.ref): its own, else the default, else "" (required). A nil
// Impersonator has no default.
func (i *Impersonator) ServiceAccount(a *kidv1.KidAction) string {
	switch {
	case a.Spec.Resource != nil && a.Spec.Resource.ServiceAccountName != "":
		return a.Spec.Resource.ServiceAccountName
	case a.Spec.CloudEvent != nil && a.Spec.CloudEvent.ServiceAccountName != "":
		return a.Spec.CloudEvent.ServiceAccountName
	}
	if i == nil {
		return ""
	}
	return i.defaultSA
}

// ServiceAccountUser is the user name of a ServiceAccount.
func ServiceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// Client returns a client that acts as the ServiceAccount name of namespace.
// The API server adds the ServiceAccount's groups itself.
func (i *Impersonator) Client(namespace, name string) (client.Client, error) {
	if i == nil {
		return nil, errors.New("kid-operator runs without an impersonating client; resource actions and cloudEvent sink references are off")
	}
	user := ServiceAccountUser(namespace, name)
	i.mu.Lock()
	defer i.mu.Unlock()
	if c, ok := i.clients[user]; ok {
		return c, nil
	}
	cfg := rest.CopyConfig(i.cfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	c, err := client.New(cfg, i.opts)
	if err != nil {
		return nil, fmt.Errorf("building a client for ServiceAccount %s/%s: %w", namespace, name, err)
	}
	if len(i.clients) >= maxImpersonatingClients {
		clear(i.clients)
	}
	i.clients[user] = c
	return c, nil
}

// IsImpersonationForbidden reports whether err is the API server refusing
// kid-operator the impersonation itself (rather than refusing the
// ServiceAccount the request).
func IsImpersonationForbidden(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "cannot impersonate")
}

// ImpersonationError says that kid-operator may not act as the
// ServiceAccount, and what grants it.
func ImpersonationError(namespace, sa string) error {
	return fmt.Errorf("kid-operator may not act as ServiceAccount %s/%s: its ClusterRole needs impersonate on serviceaccounts (config/rbac/role.yaml)", namespace, sa)
}
