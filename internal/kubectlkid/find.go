package kubectlkid

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
)

// maxNameLen bounds an argument that may be an object name.
const maxNameLen = 253

// listPage is how many objects one list call asks for: a namespace may hold
// thousands of events, which are read a page at a time.
const listPage = 500

// idKinds are the kinds of id a player may be named by, strongest first
// (the order in which the controllers merge stand-ins into players).
var idKinds = []kidv1.IdentityKind{kidv1.IdentitySession, kidv1.IdentityChallenge, kidv1.IdentityVerification, kidv1.IdentityAccount}

// idWord is how an id of a kind is called in output.
var idWord = map[kidv1.IdentityKind]string{
	kidv1.IdentitySession:      "session id",
	kidv1.IdentityChallenge:    "challenge id",
	kidv1.IdentityVerification: "verification id",
	kidv1.IdentityAccount:      "kuid",
}

// match is a KidUser found by an id, and how it was found.
type match struct {
	user *kidv1.KidUser
	// kind of the id given, empty when the id was the KidUser's name.
	kind kidv1.IdentityKind
	// byName: found under the deterministic name of the id; else found
	// holding the id in its status.
	byName bool
}

// how says how the user was found, for the reader.
func (m *match) how(id string) string {
	switch {
	case m.kind == "":
		return "KidUser name"
	case m.byName:
		return fmt.Sprintf("%s %s (the name of the user known by it)", idWord[m.kind], id)
	case m.user.Spec.Identity.Kind != m.kind:
		// Linked: an event named both ids, and a stand-in known by this
		// one, if there was one, was merged into this user.
		return fmt.Sprintf("%s %s, held in status (linked to this %s user)", idWord[m.kind], id, strings.ToLower(string(m.user.Spec.Identity.Kind)))
	default:
		return fmt.Sprintf("%s %s, held in status", idWord[m.kind], id)
	}
}

// checkID bounds the id argument of user and erase.
func checkID(id string) error {
	switch {
	case id == "":
		return errors.New("the id is empty")
	case len(id) > maxNameLen:
		return fmt.Errorf("the id is %d bytes long: k-ID's ids have at most %d, KidUser names at most %d", len(id), kid.MaxIDLen, maxNameLen)
	}
	return nil
}

// findUser finds the player an id names in ns: a KidUser name, or a
// session, challenge, verification or k-ID user (kuid) id of one of the
// products (all of the namespace's when products is empty). A stand-in
// merged into a player is followed to that player: the deterministic names
// are tried first, then the strongest user holding the id is looked for
// through selectors (holders), never by listing every player. Two players
// equally strong holding the id is an error naming both.
func findUser(ctx context.Context, c client.Reader, ns string, products []string, id string) (*match, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	if len(products) == 0 {
		var err error
		if products, err = productNames(ctx, c, ns); err != nil {
			return nil, err
		}
		if len(products) == 0 {
			return nil, fmt.Errorf("namespace %s has no KidProduct", ns)
		}
	}
	if m, err := byUserName(ctx, c, ns, products, id); m != nil || err != nil {
		return m, err
	}
	if len(id) > kid.MaxIDLen {
		return nil, notFound(ns, id)
	}
	named, err := byIDNames(ctx, c, ns, products, id)
	if err != nil {
		return nil, err
	}
	if len(named) == 1 && named[0].user.Spec.Identity.Kind == kidv1.IdentitySession {
		// A session's user is the player itself: nothing is merged into
		// anything stronger.
		return &named[0], nil
	}
	held, err := holders(ctx, c, ns, products, id)
	if err != nil {
		return nil, err
	}
	for _, n := range named {
		// Found under its deterministic name says more than found holding
		// the id; a user created since the scan is a holder too.
		if i := slices.IndexFunc(held, func(h match) bool { return h.user.Name == n.user.Name }); i >= 0 {
			held[i] = n
		} else {
			held = append(held, n)
		}
	}
	return strongest(held, ns, id)
}

// byUserName returns the KidUser named id, if it is one of products'.
func byUserName(ctx context.Context, c client.Reader, ns string, products []string, id string) (*match, error) {
	u := &kidv1.KidUser{}
	err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: id}, u)
	switch {
	case apierrors.IsNotFound(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		// Not a KidUser's name (an id need not be a valid name at all).
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading KidUser %s: %w", id, err)
	case !slices.Contains(products, u.Spec.ProductRef.Name):
		return nil, nil
	}
	return &match{user: u}, nil
}

// byIDNames returns the users found under the deterministic names of the id,
// for each kind and product.
func byIDNames(ctx context.Context, c client.Reader, ns string, products []string, id string) ([]match, error) {
	var out []match
	for _, p := range products {
		for _, kind := range idKinds {
			u := &kidv1.KidUser{}
			err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: kidv1.UserName(p, kind, id)}, u)
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("reading the KidUser of %s %s: %w", idWord[kind], id, err)
			}
			out = append(out, match{user: u, kind: kind, byName: true})
		}
	}
	return out, nil
}

// holders returns the users of products in ns holding id (as their
// identity, session, kuid, a challenge or a verification), found without
// listing every player (design §5: that list takes 90 s at 100,000
// players and fails at 250,000):
//   - the users known by id, or holding it as their session, kuid or
//     consent's challenge: KidUser's selectable fields, one field-selected
//     list each;
//   - a user holding it only among status.challengeIds (its consent is
//     about another challenge) or status.verification.records (linked to
//     its session by a later copy of the event): a list is no selectable
//     field, so the events naming id (KidEvent's spec.subject.challengeId,
//     and its VerificationLabel) give the sessions and kuids they named,
//     and the users holding those are read by the same fields. Such an id
//     is found while one of the events naming it is kept: once the
//     product's retention or an erasure deleted them all, it is not, and
//     the player is found by its session id or kuid.
//
// Every user found is checked to hold id, as the controllers' index would.
//
// The lists go out together, in two rounds (the fields and the events,
// then the users of the sessions and kuids the events named): each is a
// scan of the namespace's players in the API server's watch cache, so a
// lookup takes about as long as the slowest list of each round rather
// than the sum of six or more (design §5, "Lookups"). Without the watch
// cache each is a scan of etcd instead, and together sends them one at a
// time (slowList).
func holders(ctx context.Context, c client.Reader, ns string, products []string, id string) ([]match, error) {
	var mu sync.Mutex
	users := map[string]*kidv1.KidUser{}
	byField := func(field, value string) func() error {
		return func() error {
			var list kidv1.KidUserList
			if err := c.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{field: value}); err != nil {
				return fmt.Errorf("listing KidUsers in %s by %s: %w", ns, field, err)
			}
			mu.Lock()
			defer mu.Unlock()
			for i := range list.Items {
				users[list.Items[i].Name] = &list.Items[i]
			}
			return nil
		}
	}
	var sessions, kuids []string
	var rounds listRounds
	var round []func() error
	for _, f := range []string{kidv1.UserIdentityIDField, kidv1.UserSessionField, kidv1.UserKUIDField, kidv1.UserConsentChallengeField} {
		round = append(round, byField(f, id))
	}
	round = append(round, func() error {
		var err error
		sessions, kuids, err = linkedIDs(ctx, c, ns, products, id)
		return err
	})
	if err := rounds.together(round); err != nil {
		return nil, err
	}
	round = nil
	for _, s := range sessions {
		round = append(round, byField(kidv1.UserSessionField, s))
	}
	for _, k := range kuids {
		round = append(round, byField(kidv1.UserKUIDField, k))
	}
	if err := rounds.together(round); err != nil {
		return nil, err
	}

	names := make([]string, 0, len(users))
	for name := range users {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []match
	for _, name := range names {
		u := users[name]
		p := u.Spec.ProductRef.Name
		if !slices.Contains(products, p) {
			continue
		}
		keys := u.IDKeys()
		for _, kind := range idKinds {
			if slices.Contains(keys, kidv1.UserIDKey(p, kind, id)) {
				out = append(out, match{user: u, kind: kind})
				break
			}
		}
	}
	return out, nil
}

// listsAtOnce bounds the lists a lookup has in flight: the second round
// makes one per session and kuid that the events naming the id name, which
// the namespace's events decide, and each is a scan of its players in the
// API server.
const listsAtOnce = 8

// slowList is how long a round's first list may take before the rest go
// one at a time. Served from the watch cache, a list of 175,000 players
// takes about a second. Without the watch cache, each is a read of every
// player from etcd. At 250,000 players, five at once held 15 GiB in etcd
// and 7.6 GiB in kube-apiserver, and the lookup took 15 minutes, where one
// at a time each failed at the API server's 60 s (`make bench-scale`).
const slowList = 2 * time.Second

// listRounds runs a lookup's rounds of lists. Its first list is a probe of
// what a list costs the API server: it runs alone. If it fails, nothing
// more is listed (a list that timed out would time out again). If it took
// slowList or more, every list after it goes one at a time, up to the
// first error. Otherwise the rest go together, listsAtOnce at a time, and
// so do later rounds, without a probe of their own: a list served from the
// watch cache is as fast in the second round as in the first.
type listRounds struct {
	// fast: the probe took less than slowList.
	fast bool
	// probed: the probe was made.
	probed bool
}

// together runs one round's lists and returns their errors, joined.
func (l *listRounds) together(fs []func() error) error {
	if len(fs) == 0 {
		return nil
	}
	rest := fs
	if !l.probed {
		start := time.Now()
		if err := fs[0](); err != nil {
			return err
		}
		l.probed, l.fast = true, time.Since(start) < slowList
		rest = fs[1:]
	}
	if !l.fast {
		for _, f := range rest {
			if err := f(); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, len(rest))
	slots := make(chan struct{}, listsAtOnce)
	var wg sync.WaitGroup
	for i, f := range rest {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			errs[i] = f()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// linkedIDs returns the sessions and kuids named by the events of products
// that name id as their challenge or one of their verifications: the ids
// through which a player holding id only in a list was linked to it.
func linkedIDs(ctx context.Context, c client.Reader, ns string, products []string, id string) (sessions, kuids []string, err error) {
	for _, sel := range []client.ListOption{
		client.MatchingFields{kidv1.EventChallengeField: id},
		client.HasLabels{kidv1.VerificationLabel(id)},
	} {
		var list kidv1.KidEventList
		if err := c.List(ctx, &list, client.InNamespace(ns), sel); err != nil {
			return nil, nil, fmt.Errorf("listing the KidEvents naming %s in %s: %w", id, ns, err)
		}
		for _, e := range list.Items {
			s := e.Spec.Subject
			if !slices.Contains(products, e.Spec.ProductRef.Name) || (s.ChallengeID != id && !slices.Contains(s.VerificationIDs, id)) {
				continue
			}
			if s.SessionID != "" && !slices.Contains(sessions, s.SessionID) {
				sessions = append(sessions, s.SessionID)
			}
			if s.KUID != "" && !slices.Contains(kuids, s.KUID) {
				kuids = append(kuids, s.KUID)
			}
		}
	}
	return sessions, kuids, nil
}

// strongest picks the player among the users holding an id: the strongest
// identity; a tie between different users is ambiguous.
func strongest(held []match, ns, id string) (*match, error) {
	if len(held) == 0 {
		return nil, notFound(ns, id)
	}
	sort.SliceStable(held, func(i, j int) bool {
		return held[i].user.Spec.Identity.Kind.Strength() > held[j].user.Spec.Identity.Kind.Strength()
	})
	best := held[0]
	var tied []string
	for _, h := range held {
		if h.user.Spec.Identity.Kind.Strength() == best.user.Spec.Identity.Kind.Strength() && h.user.Name != best.user.Name {
			tied = append(tied, h.user.Name)
		}
	}
	if len(tied) > 0 {
		return nil, fmt.Errorf("id %s names %d players in namespace %s: %s; pass a KidUser name or --product", id, len(tied)+1, ns, strings.Join(append([]string{best.user.Name}, tied...), ", "))
	}
	return &best, nil
}

func notFound(ns, id string) error {
	return fmt.Errorf("no KidUser in namespace %s is named %s or holds it as a session, challenge, verification or k-ID user id", ns, id)
}

// productNames lists the namespace's KidProducts.
func productNames(ctx context.Context, c client.Reader, ns string) ([]string, error) {
	var list kidv1.KidProductList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("listing KidProducts in %s: %w", ns, err)
	}
	names := make([]string, 0, len(list.Items))
	for _, p := range list.Items {
		names = append(names, p.Name)
	}
	return names, nil
}

// eachEvent calls f for every KidEvent the options select, a page at a time.
func eachEvent(ctx context.Context, c client.Reader, f func(*kidv1.KidEvent), opts ...client.ListOption) error {
	_, err := eachEventRV(ctx, c, f, opts...)
	return err
}
