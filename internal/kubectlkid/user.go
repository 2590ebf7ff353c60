package kubectlkid

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

type userOptions struct {
	*Options
	product string
	output  string
}

func newUserCommand(o *Options) *cobra.Command {
	u := &userOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "user <id>",
		Short: "Show a player, found by any id: session, challenge, verification, kuid or KidUser name",
		Long: `Show a player: identity, consent, verifications, session, erasure, and the
events folded into it in order of k-ID's signing time, with each action run.

The id may be a session, challenge, verification or k-ID user (kuid) id, or a
KidUser name. A challenge or verification seen before the player's session is
followed to the session's user once the two were linked.`,
		Example: `  kubectl kid user 61965ef8-d33c-441a-aa9b-080fa38fbd16
  kubectl kid user 5b84b7a1-2b67-46e9-aafb-bd07387b2b8a -n games --product my-game
  kubectl kid user demo-session-cab355c1ee789e751505 -o yaml`,
		Args:              cobra.ExactArgs(1),
		RunE:              func(cmd *cobra.Command, args []string) error { return u.run(cmd.Context(), args[0]) },
		ValidArgsFunction: userArg(o, &u.product),
	}
	cmd.Flags().StringVar(&u.product, "product", "", "look in this KidProduct only (default: every product of the namespace)")
	cmd.Flags().StringVarP(&u.output, "output", "o", "", "json or yaml: print the KidUser and its KidEvents as a List instead")
	completeProductFlag(cmd, o)
	return cmd
}

func (u *userOptions) run(ctx context.Context, id string) error {
	if err := checkProduct(u.product); err != nil {
		return err
	}
	if err := checkOutput(u.output); err != nil {
		return err
	}
	s, err := u.connect()
	if err != nil {
		return err
	}
	var products []string
	if u.product != "" {
		products = []string{u.product}
	}
	m, err := findUser(ctx, s.client, s.namespace, products, id)
	if err != nil {
		return err
	}
	events, err := userEvents(ctx, s.client, m.user)
	if err != nil {
		return err
	}
	if u.output != "" {
		// The KidUser first, then its events by signing time.
		objs := []client.Object{m.user}
		for i := range events {
			objs = append(objs, &events[i])
		}
		return printList(u.Out, objs, u.output)
	}
	recent, err := recentEvents(ctx, s.client, m.user, events)
	if err != nil {
		return err
	}
	if err := describeUser(u.Out, m.user, m.how(id), events); err != nil {
		return err
	}
	return describeRecent(u.Out, recent)
}

// userEvents returns the events folded into u: those whose status.userRef
// names it, and those whose subject names one of its ids (which covers the
// events of stand-ins merged into it), by k-ID's signing time. They are
// read through KidEvent's selectable fields and verification labels, one
// selected list per id the user holds, never by listing the product's
// every event.
func userEvents(ctx context.Context, c client.Reader, u *kidv1.KidUser) ([]kidv1.KidEvent, error) {
	keys := u.IDKeys()
	found := map[string]*kidv1.KidEvent{}
	product := client.MatchingLabels{kidv1.ProductLabel: u.Spec.ProductRef.Name}
	for _, sel := range eventSelectors(u) {
		err := eachEvent(ctx, c, func(e *kidv1.KidEvent) {
			if e.Spec.ProductRef.Name != u.Spec.ProductRef.Name {
				return
			}
			if (e.Status.UserRef != nil && e.Status.UserRef.Name == u.Name) || namesAny(e, keys) {
				found[e.Name] = e.DeepCopy()
			}
		}, client.InNamespace(u.Namespace), product, sel)
		if err != nil {
			return nil, err
		}
	}
	out := make([]kidv1.KidEvent, 0, len(found))
	for _, e := range found {
		out = append(out, *e)
	}
	sort.SliceStable(out, func(i, j int) bool {
		ti, tj := signedAt(&out[i]), signedAt(&out[j])
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// eventSelectors select the events that may have been folded into u: the
// events naming it as their user, and those naming each id it holds.
func eventSelectors(u *kidv1.KidUser) []client.ListOption {
	sels := []client.ListOption{client.MatchingFields{kidv1.EventUserField: u.Name}}
	seen := map[string]bool{}
	add := func(kind kidv1.IdentityKind, id string) {
		if id == "" || seen[string(kind)+"/"+id] {
			return
		}
		seen[string(kind)+"/"+id] = true
		switch kind {
		case kidv1.IdentitySession:
			sels = append(sels, client.MatchingFields{kidv1.EventSessionField: id})
		case kidv1.IdentityChallenge:
			sels = append(sels, client.MatchingFields{kidv1.EventChallengeField: id})
		case kidv1.IdentityAccount:
			sels = append(sels, client.MatchingFields{kidv1.EventKUIDField: id})
		case kidv1.IdentityVerification:
			sels = append(sels, client.HasLabels{kidv1.VerificationLabel(id)})
		}
	}
	st := &u.Status
	add(u.Spec.Identity.Kind, u.Spec.Identity.ID)
	add(kidv1.IdentitySession, st.SessionID)
	add(kidv1.IdentityAccount, st.KUID)
	for _, ch := range st.ChallengeIDs {
		add(kidv1.IdentityChallenge, ch)
	}
	for _, r := range st.Verification.Records {
		add(kidv1.IdentityVerification, r.ID)
	}
	return sels
}

// namesAny reports whether the event's subject names one of keys (user id
// index values).
func namesAny(e *kidv1.KidEvent, keys []string) bool {
	p, s := e.Spec.ProductRef.Name, e.Spec.Subject
	ids := []struct {
		kind kidv1.IdentityKind
		id   string
	}{{kidv1.IdentitySession, s.SessionID}, {kidv1.IdentityChallenge, s.ChallengeID}, {kidv1.IdentityAccount, s.KUID}}
	for _, v := range s.VerificationIDs {
		ids = append(ids, struct {
			kind kidv1.IdentityKind
			id   string
		}{kidv1.IdentityVerification, v})
	}
	for _, id := range ids {
		if id.id != "" && slices.Contains(keys, kidv1.UserIDKey(p, id.kind, id.id)) {
			return true
		}
	}
	return false
}

// signedAt is when k-ID signed the event, or when it was received for an
// event k-ID did not sign (browser, manual): the fold's own order.
func signedAt(e *kidv1.KidEvent) time.Time {
	if e.Spec.SignedAt != nil {
		return e.Spec.SignedAt.Time
	}
	return e.Spec.ReceivedAt.Time
}

// describeUser writes the player as kubectl describe would.
func describeUser(out io.Writer, u *kidv1.KidUser, how string, events []kidv1.KidEvent) error {
	w := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	st := &u.Status
	line(w, 0, "Name", u.Name)
	line(w, 0, "Namespace", u.Namespace)
	line(w, 0, "Product", u.Spec.ProductRef.Name)
	line(w, 0, "Identity", string(u.Spec.Identity.Kind)+" "+u.Spec.Identity.ID)
	line(w, 0, "Found By", how)
	line(w, 0, "Session ID", orNone(st.SessionID))
	line(w, 0, "KUID", orNone(st.KUID))
	line(w, 0, "Challenges", orNone(strings.Join(st.ChallengeIDs, ", ")))
	line(w, 0, "Observed Events", strconv.FormatInt(st.ObservedEvents, 10))
	line(w, 0, "Created", stamp(&u.CreationTimestamp))

	section(w, "Consent")
	line(w, 1, "State", orNone(string(st.Consent.State)))
	line(w, 1, "Challenge", orNone(st.Consent.ChallengeID))
	line(w, 1, "Time", stamp(st.Consent.Time))

	section(w, "Verification")
	line(w, 1, "State", orNone(string(st.Verification.State)))
	if len(st.Verification.Records) == 0 {
		line(w, 1, "Records", "<none>")
	} else {
		section(w, "  Records")
		row(w, 2, "ID", "STATE", "METHOD", "AGE CATEGORY", "AGE", "REASON", "TIME")
		for _, r := range st.Verification.Records {
			row(w, 2, r.ID, string(r.State), orDash(r.Method), orDash(r.AgeCategory), ageRange(r.Age), orDash(r.Reason), stamp(r.Time))
		}
	}

	section(w, "Session")
	line(w, 1, "State", orNone(string(st.Session.State)))
	line(w, 1, "k-ID Status", orNone(st.Session.Status))
	line(w, 1, "Age Status", orNone(st.Session.AgeStatus))
	line(w, 1, "Jurisdiction", orNone(st.Session.Jurisdiction))
	line(w, 1, "Permissions Changed", stamp(st.Session.PermissionsChangedAt))
	line(w, 1, "Deleted At", stamp(st.Session.DeletedAt))
	line(w, 1, "Synced At", stamp(st.Session.SyncedAt))
	if len(st.Session.Permissions) == 0 {
		line(w, 1, "Permissions", "<none>")
	} else {
		section(w, "  Permissions ("+orNone(st.Session.PermissionsSummary)+")")
		row(w, 2, "NAME", "ENABLED", "MANAGED BY", "VERIFIED AGE")
		for _, p := range st.Session.Permissions {
			threshold := "-"
			if p.VerifiedAgeThreshold != nil {
				threshold = strconv.Itoa(int(*p.VerifiedAgeThreshold))
			}
			row(w, 2, p.Name, strconv.FormatBool(p.Enabled), orDash(p.ManagedBy), threshold)
		}
	}

	section(w, "Erasure")
	line(w, 1, "Account Deleted", strconv.FormatBool(st.AccountDeleted))
	line(w, 1, "Erased At", stamp(st.ErasedAt))
	line(w, 1, "Personal Data", personalData(st.PersonalData))

	section(w, "Conditions")
	if len(st.Conditions) == 0 {
		fmt.Fprintln(w, "  <none>")
	} else {
		row(w, 1, "TYPE", "STATUS", "REASON", "MESSAGE")
		for _, c := range st.Conditions {
			row(w, 1, c.Type, string(c.Status), c.Reason, c.Message)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return describeEvents(out, events)
}

// describeEvents writes the events of a player and, below, their action
// runs, each table aligned on its own.
func describeEvents(out io.Writer, events []kidv1.KidEvent) error {
	w := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(w, "Events (%d, by signing time):\n", len(events))
	if len(events) == 0 {
		fmt.Fprintln(w, "  <none>")
		return w.Flush()
	}
	row(w, 1, "SIGNED", "TYPE", "SOURCE", "PHASE", "SUBJECT", "EVENT")
	var runs [][]string
	for i := range events {
		e := &events[i]
		row(w, 1, signedAt(e).UTC().Format(time.RFC3339), e.Spec.EventType, string(e.Spec.Source), phase(e), orDash(e.Annotations[kidv1.SubjectAnnotation]), e.Name)
		for _, r := range e.Status.Actions {
			runs = append(runs, []string{e.Name, r.Name, r.Phase, strconv.Itoa(int(r.Attempts)), stampOrDash(r.NextAttemptAt), stampOrDash(r.CompletedAt), orDash(oneLine(r.LastError))})
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	w = tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "Action Runs:")
	if len(runs) == 0 {
		fmt.Fprintln(w, "  <none>")
		return w.Flush()
	}
	row(w, 1, "EVENT", "ACTION", "PHASE", "ATTEMPTS", "NEXT ATTEMPT", "COMPLETED", "LAST ERROR")
	for _, r := range runs {
		row(w, 1, r...)
	}
	return w.Flush()
}

// line writes "label:<tab>value" at an indentation level.
func line(w io.Writer, level int, label, value string) {
	fmt.Fprintf(w, "%s%s:\t%s\n", strings.Repeat("  ", level), label, value)
}

// section writes a heading; a line without a tab also ends the alignment
// of the lines above it.
func section(w io.Writer, title string) { fmt.Fprintf(w, "%s:\n", title) }

// row writes the cells of a table row at an indentation level.
func row(w io.Writer, level int, cells ...string) {
	fmt.Fprintf(w, "%s%s\n", strings.Repeat("  ", level), strings.Join(cells, "\t"))
}

func stamp(t *metav1.Time) string {
	if t == nil || t.IsZero() {
		return "<none>"
	}
	return t.UTC().Format(time.RFC3339)
}

func stampOrDash(t *metav1.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return stamp(t)
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// phase is the event's phase, Pending when the controller has not written
// one yet.
func phase(e *kidv1.KidEvent) string {
	if e.Status.Phase == "" {
		return string(kidv1.EventPending)
	}
	return string(e.Status.Phase)
}

func ageRange(a *kidv1.AgeRange) string {
	if a == nil || (a.Low == nil && a.High == nil) {
		return "-"
	}
	bound := func(v *int32) string {
		if v == nil {
			return "?"
		}
		return strconv.Itoa(int(*v))
	}
	if a.Low != nil && a.High != nil && *a.Low == *a.High {
		return bound(a.Low)
	}
	return bound(a.Low) + "-" + bound(a.High)
}

// personalData says which personal data the user keeps, never the values:
// this output is read over shoulders and pasted into tickets (-o yaml shows
// the values to whoever needs them).
func personalData(p *kidv1.PersonalData) string {
	if p == nil {
		return "none kept"
	}
	var kept []string
	if p.DateOfBirth != "" {
		kept = append(kept, "date of birth")
	}
	if p.ApproverEmail != "" {
		kept = append(kept, "approver email")
	}
	if len(kept) == 0 {
		return "none kept"
	}
	return strings.Join(kept, ", ") + " (the product's privacy settings keep them; -o yaml shows them)"
}
