package kubectlkid

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/inbox"
)

type eraseOptions struct {
	*Options
	product string
	yes     bool
	timeout time.Duration
}

func newEraseCommand(o *Options) *cobra.Command {
	e := &eraseOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "erase <player-id>",
		Short: "Erase a player's personal data for a request that reached you another way than k-ID",
		Long: `Erase runs the erasure of k-ID's own Session.Delete (for a player with a
session) or Account.Delete (when the id given is a kuid, or the player has no
session): it stores that event with source "manual", so the controllers fold it
and run the product's actions exactly as for k-ID's. The player's KidUser keeps
its ids and states and drops its personal data; the events that kept personal
data about it are deleted. It asks for confirmation unless --yes, then waits
until the KidUser shows erasedAt.`,
		Example: `  kubectl kid erase 61965ef8-d33c-441a-aa9b-080fa38fbd16
  kubectl kid erase 53c9f249-7d3c-4b55-9a2e-1f0c2b8e9a10 --product my-game --yes --timeout 5m`,
		Args:              cobra.ExactArgs(1),
		RunE:              func(cmd *cobra.Command, args []string) error { return e.run(cmd.Context(), args[0]) },
		ValidArgsFunction: userArg(o, &e.product),
	}
	cmd.Flags().StringVar(&e.product, "product", "", "look in this KidProduct only (default: every product of the namespace)")
	cmd.Flags().BoolVarP(&e.yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().DurationVar(&e.timeout, "timeout", 2*time.Minute, "how long to wait for the erasure (1s..1h)")
	completeProductFlag(cmd, o)
	return cmd
}

func (e *eraseOptions) run(ctx context.Context, id string) error {
	if err := checkProduct(e.product); err != nil {
		return err
	}
	if err := checkTimeout(e.timeout); err != nil {
		return err
	}
	s, err := e.connect()
	if err != nil {
		return err
	}
	var products []string
	if e.product != "" {
		products = []string{e.product}
	}
	m, err := findUser(ctx, s.client, s.namespace, products, id)
	if err != nil {
		return err
	}
	u := m.user
	if u.Status.ErasedAt != nil {
		fmt.Fprintf(e.Out, "KidUser %s was already erased at %s: nothing to do.\n", u.Name, stamp(u.Status.ErasedAt))
		return nil
	}
	req, what, err := erasureOf(m)
	if err != nil {
		return err
	}
	product := &kidv1.KidProduct{}
	if err := s.client.Get(ctx, client.ObjectKey{Namespace: u.Namespace, Name: u.Spec.ProductRef.Name}, product); err != nil {
		return fmt.Errorf("reading KidProduct %s: %w", u.Spec.ProductRef.Name, err)
	}
	fmt.Fprintf(e.Out, "Erasing KidUser %s (product %s) as k-ID's %s would.\n", u.Name, product.Name, what)
	if !e.yes {
		if err := e.confirm("Its personal data cannot be recovered. Continue?"); err != nil {
			return err
		}
	}
	if err := e.store(ctx, s, product, req); err != nil {
		return err
	}
	return e.wait(ctx, s, products, id, u.Name)
}

// erasureOf chooses the event: Account.Delete when the id given is a kuid
// (every player of that account is erased, and a session linked to it
// later learns of it), else Session.Delete of the player's session, else
// Account.Delete of its kuid. A stand-in known only by a challenge or a
// verification has neither: k-ID has no erasure for it.
func erasureOf(m *match) (inbox.Erasure, string, error) {
	u := m.user
	switch {
	case m.kind == kidv1.IdentityAccount || (m.kind == "" && u.Spec.Identity.Kind == kidv1.IdentityAccount):
		kuid := u.Status.KUID
		if kuid == "" {
			kuid = u.Spec.Identity.ID
		}
		return inbox.Erasure{KUID: kuid}, "Account.Delete of kuid " + kuid, nil
	case u.Status.SessionID != "":
		return inbox.Erasure{SessionID: u.Status.SessionID}, "Session.Delete of session " + u.Status.SessionID, nil
	case u.Status.KUID != "":
		return inbox.Erasure{KUID: u.Status.KUID}, "Account.Delete of kuid " + u.Status.KUID, nil
	}
	return inbox.Erasure{}, "", fmt.Errorf("KidUser %s is known only by its %s %s, with no session or kuid: k-ID has no erasure event for it (its personal data is dropped after the product's retention.maxAge)",
		u.Name, idWord[u.Spec.Identity.Kind], u.Spec.Identity.ID)
}

// store writes the manual event through the inbox, as every channel does.
// An event already there (k-ID's own, or an earlier request) is the same
// fact: its erasure is awaited all the same.
func (e *eraseOptions) store(ctx context.Context, s *session, product *kidv1.KidProduct, req inbox.Erasure) error {
	event, err := inbox.BuildErasure(product, req, e.Clock.Now())
	if err != nil {
		return err
	}
	err = inbox.ClientStore(s.client, s.client)(ctx, product, event)
	switch {
	case apierrors.IsAlreadyExists(err):
		fmt.Fprintf(e.Out, "kidevent/%s already exists (k-ID's own, or an earlier request).\n", event.Name)
	case err != nil:
		return fmt.Errorf("storing the %s event: %w", event.Spec.EventType, err)
	default:
		fmt.Fprintf(e.Out, "kidevent/%s created (%s, source manual).\n", event.Name, event.Spec.EventType)
	}
	return nil
}

// wait polls the player until it shows erasedAt, following it should it be
// merged into another meanwhile, then says what personal data is left.
func (e *eraseOptions) wait(ctx context.Context, s *session, products []string, id, name string) error {
	fmt.Fprintf(e.Out, "Waiting up to %s for the erasure...\n", e.timeout)
	var erased *kidv1.KidUser
	err := poll(ctx, 500*time.Millisecond, e.timeout, func(ctx context.Context) (bool, error) {
		u := &kidv1.KidUser{}
		err := s.client.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: name}, u)
		if apierrors.IsNotFound(err) {
			m, ferr := findUser(ctx, s.client, s.namespace, products, id)
			if ferr != nil {
				return false, nil
			}
			u, name = m.user, m.user.Name
		} else if err != nil {
			return false, err
		}
		if u.Status.ErasedAt == nil {
			return false, nil
		}
		erased = u
		return true, nil
	})
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("KidUser %s shows no erasedAt after %s: is the operator running? (kubectl kid user %s shows its events)", name, e.timeout, id)
	}
	if err != nil {
		return err
	}
	// The operator deletes the events that kept personal data right after
	// the erasure, except those with a pending action run (until it
	// settles): wait for the first kind, report the second.
	var pending int
	err = poll(ctx, 500*time.Millisecond, e.timeout, func(ctx context.Context) (bool, error) {
		var settled int
		var err error
		settled, pending, err = eventsWithPersonalData(ctx, s.client, erased)
		return settled == 0, err
	})
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("KidUser %s was erased at %s, but events with personal data about it remain after %s", erased.Name, stamp(erased.Status.ErasedAt), e.timeout)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.Out, "KidUser %s erased at %s: personal data %s", erased.Name, stamp(erased.Status.ErasedAt), personalData(erased.Status.PersonalData))
	if pending > 0 {
		fmt.Fprintf(e.Out, "; %d event(s) with a pending action run still hold personal data, deleted once their runs settle", pending)
	} else {
		fmt.Fprint(e.Out, "; no event holds personal data about it")
	}
	fmt.Fprintln(e.Out, ".")
	return nil
}

// eventsWithPersonalData counts the player's events that still keep
// personal data: those whose runs are all settled, and those with a pending
// run.
func eventsWithPersonalData(ctx context.Context, c client.Reader, u *kidv1.KidUser) (settled, pending int, err error) {
	events, err := userEvents(ctx, c, u)
	if err != nil {
		return 0, 0, err
	}
	for _, ev := range events {
		switch {
		case !ev.Spec.PersonalData:
		case slices.ContainsFunc(ev.Status.Actions, func(r kidv1.ActionRunStatus) bool { return r.Phase == kidv1.RunPending }):
			pending++
		default:
			settled++
		}
	}
	return settled, pending, nil
}
