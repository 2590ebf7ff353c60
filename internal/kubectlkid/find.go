package kubectlkid

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

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
// by its id label (holders), never by listing every player. Two players
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
// players and fails at 250,000): the operator labels each user with every
// id it holds (kidv1.IDLabel), so one list selecting that label finds
// them. A selector is no index in the API server: the list is a pass over
// the namespace's players in its watch cache (a read of them from etcd
// without it), so one list where field selectors took one per field and
// the events' lists for the ids a user holds only in a list: six or more
// at 250,000 players took 2 to 3.6 s (docs/benchmarks.md).
//
// Every user found is checked to hold id, as the controllers' index would:
// a label is a digest, and a user keeps the label of an id it let go until
// its labels are next written (kidv1.IDLabelsCover).
func holders(ctx context.Context, c client.Reader, ns string, products []string, id string) ([]match, error) {
	var list kidv1.KidUserList
	if err := c.List(ctx, &list, client.InNamespace(ns), client.HasLabels{kidv1.IDLabel(id)}); err != nil {
		return nil, fmt.Errorf("listing the KidUsers in %s holding %s: %w", ns, id, err)
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	var out []match
	for i := range list.Items {
		u := &list.Items[i]
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
