package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// The commands in this file drive a running `kidsim serve` through its admin
// API, as a parent, a verification provider or a failing network would.

const defaultSim = "http://127.0.0.1:8090"

// simClient calls the admin API of a running fake.
type simClient struct {
	base string
	http *http.Client
}

// addSimFlag adds --sim to cmd and its subcommands, and returns where its
// value lands.
func addSimFlag(cmd *cobra.Command) *string {
	def := os.Getenv("KIDSIM_URL")
	if def == "" {
		def = defaultSim
	}
	return cmd.PersistentFlags().String("sim", def, "the running kidsim serve; $KIDSIM_URL sets the default")
}

// newGroupCommand returns a command that only holds subcommands. Without
// one it says what it wants (none); with an unknown one it lists them.
func newGroupCommand(use, short, none string, subs ...*cobra.Command) *cobra.Command {
	names := make([]string, len(subs))
	for i, c := range subs {
		names[i] = c.Name()
	}
	want := names[len(names)-1]
	if len(names) > 1 {
		want = strings.Join(names[:len(names)-1], ", ") + " or " + want
	}
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		GroupID: groupFake,
		// Any argument that is no subcommand reaches RunE, which names it.
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New(none)
			}
			return fmt.Errorf("unknown %s command %q: want %s", cmd.Name(), args[0], want)
		},
	}
	cmd.AddCommand(subs...)
	return cmd
}

func newSimClient(base string) (*simClient, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--sim: want a URL such as %s, got %q", defaultSim, base)
	}
	return &simClient{base: strings.TrimSuffix(base, "/"), http: &http.Client{Timeout: 10 * time.Second}}, nil
}

// simCall calls the admin API of the serve at sim (the --sim flag), for
// cmd.
func simCall(cmd *cobra.Command, sim, method, path string, body, out any) error {
	c, err := newSimClient(sim)
	if err != nil {
		return err
	}
	return c.call(cmd.Context(), method, path, body, out)
}

// call sends body (if any) as JSON and decodes the answer into out. An
// answer other than 2xx is an error carrying the admin API's message.
func (c *simClient) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("calling kidsim serve: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading the answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(raw))
		}
		return fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, http.StatusText(resp.StatusCode), e.Error)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}

func newChallengeCommand() *cobra.Command {
	var sim *string
	var a kidsim.Approval
	approve := &cobra.Command{
		Use:   "approve ID",
		Short: "Approve a challenge as the trusted adult: creates a session, delivers PASS",
		Args:  wantArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var got kidsim.Challenge
			if err := simCall(cmd, *sim, http.MethodPost, "/kidsim/challenges/"+url.PathEscape(args[0])+"/approve", a, &got); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "challenge %s approved: session %s, kuid %s\n", got.ChallengeID, got.SessionID, got.KUID)
			return nil
		},
	}
	approve.Flags().StringVar(&a.KUID, "kuid", "", "the player's kuid (default a new UUID)")
	approve.Flags().StringVar(&a.Email, "email", "", "the approver's email (default "+kidsim.DefaultApproverEmail+")")
	approve.Flags().StringVar(&a.DOB, "dob", "", "the player's date of birth, YYYY-MM-DD (default "+kidsim.DefaultDOB+")")
	approve.Flags().StringVar(&a.SessionID, "session", "", "the id of the session created (default a new UUID)")
	cmd := newGroupCommand("challenge", "Start, approve or deny a challenge (a parent's consent)", "challenge wants start, approve ID or deny ID",
		&cobra.Command{
			Use:   "start",
			Short: "Start a challenge: delivers IN_PROGRESS",
			Args:  wantArgs(),
			RunE: func(cmd *cobra.Command, _ []string) error {
				var got kidsim.Challenge
				if err := simCall(cmd, *sim, http.MethodPost, "/kidsim/challenges", nil, &got); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "challenge %s started (%s)\n", got.ChallengeID, got.Status)
				return nil
			},
		},
		approve,
		&cobra.Command{
			Use:   "deny ID",
			Short: "Deny a challenge: delivers FAIL",
			Args:  wantArgs("ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				var got kidsim.Challenge
				if err := simCall(cmd, *sim, http.MethodPost, "/kidsim/challenges/"+url.PathEscape(args[0])+"/deny", nil, &got); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "challenge %s denied (%s)\n", got.ChallengeID, got.Status)
				return nil
			},
		},
	)
	sim = addSimFlag(cmd)
	return cmd
}

func newVerificationCommand() *cobra.Command {
	var sim *string
	// decide passes, fails or revokes a verification and prints the outcome.
	decide := func(verb string, body any) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			var got kidsim.Verification
			if err := simCall(cmd, *sim, http.MethodPost, "/kidsim/verifications/"+url.PathEscape(args[0])+"/"+verb, body, &got); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case verb == "revoke":
				fmt.Fprintf(out, "verification %s revoked: %s\n", got.ID, got.RevokedReason)
			case got.Status == "PASS":
				age := ""
				if got.Age != nil {
					age = fmt.Sprintf(", age %d", got.Age.Low)
					if got.Age.High != got.Age.Low {
						age = fmt.Sprintf(", age %d-%d", got.Age.Low, got.Age.High)
					}
				}
				fmt.Fprintf(out, "verification %s passed: %s%s, %s\n", got.ID, got.Method, age, got.AgeCategory)
			default:
				fmt.Fprintf(out, "verification %s failed: %s\n", got.ID, got.FailureReason)
			}
			return nil
		}
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a passed verification: delivers Verification.Revoke",
		Args:  wantArgs("ID"),
	}
	reason := revoke.Flags().String("reason", "", "fraudulent-activity-detected (default) or provider-reported-error")
	revoke.RunE = func(cmd *cobra.Command, args []string) error {
		return decide("revoke", map[string]string{"reason": *reason})(cmd, args)
	}
	cmd := newGroupCommand("verification", "Start, pass, fail or revoke an age verification", "verification wants start, pass ID, fail ID or revoke ID",
		&cobra.Command{
			Use:   "start",
			Short: "Start a verification (PENDING)",
			Args:  wantArgs(),
			RunE: func(cmd *cobra.Command, _ []string) error {
				var got kidsim.Verification
				if err := simCall(cmd, *sim, http.MethodPost, "/kidsim/verifications", nil, &got); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "verification %s started (%s)\n", got.ID, got.Status)
				return nil
			},
		},
		&cobra.Command{Use: "pass ID", Short: "Pass a verification: delivers Verification.Result PASS", Args: wantArgs("ID"), RunE: decide("pass", nil)},
		&cobra.Command{Use: "fail ID", Short: "Fail a verification: delivers Verification.Result FAIL", Args: wantArgs("ID"), RunE: decide("fail", nil)},
		revoke,
	)
	sim = addSimFlag(cmd)
	return cmd
}

func newSessionCommand() *cobra.Command {
	var sim *string
	cmd := newGroupCommand("session", "Change a session's permission, or delete the session", "session wants permission SESSION NAME on|off, or delete SESSION",
		&cobra.Command{
			Use:   "permission SESSION NAME on|off",
			Short: "Turn a permission of a session on or off, as a parent does: delivers Session.ChangePermissions",
			Args:  wantArgs("SESSION", "NAME", "on|off"),
			RunE: func(cmd *cobra.Command, args []string) error {
				var enabled bool
				switch args[2] {
				case "on":
					enabled = true
				case "off":
				default:
					return fmt.Errorf("want on or off, got %q", args[2])
				}
				var got kidsim.Session
				if err := simCall(cmd, *sim, http.MethodPost, "/kidsim/sessions/"+url.PathEscape(args[0])+"/permissions", map[string]any{"name": args[1], "enabled": enabled}, &got); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "session %s: %s %s (etag %s)\n", got.SessionID, args[1], args[2], got.Etag)
				return nil
			},
		},
		&cobra.Command{
			Use:   "delete SESSION",
			Short: "Delete a session: delivers Session.Delete",
			Args:  wantArgs("SESSION"),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := simCall(cmd, *sim, http.MethodDelete, "/kidsim/sessions/"+url.PathEscape(args[0]), nil, nil); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "session %s deleted\n", args[0])
				return nil
			},
		},
	)
	sim = addSimFlag(cmd)
	return cmd
}

func newAccountCommand() *cobra.Command {
	var sim *string
	cmd := newGroupCommand("account", "Delete a player's account", "account wants delete KUID",
		&cobra.Command{
			Use:   "delete KUID",
			Short: "Delete a player's account and sessions: delivers Account.Delete",
			Args:  wantArgs("KUID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				var got struct {
					KUID            string `json:"kuid"`
					SessionsDeleted int    `json:"sessionsDeleted"`
				}
				if err := simCall(cmd, *sim, http.MethodDelete, "/kidsim/accounts/"+url.PathEscape(args[0]), nil, &got); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "account %s deleted (%d session(s))\n", got.KUID, got.SessionsDeleted)
				return nil
			},
		},
	)
	sim = addSimFlag(cmd)
	return cmd
}

// faultFlags are the flags of faults that change a fault.
var faultFlags = []string{"deliveries", "delivery-delay", "rate-limit", "burst", "retry-after", "api-key"}

func newFaultsCommand() *cobra.Command {
	var deliveries string
	var delay, retryAfter time.Duration
	var rps float64
	var burst int
	var apiKey string
	var api apiFaultFlags
	cmd := &cobra.Command{
		Use:   "faults",
		Short: "Show the fake's faults, or set them",
		Long: `faults sets what goes wrong at the fake k-ID: its deliveries (dropped, failed
with 502 or timing out, on k-ID's retry schedule), a delay before each
event's first attempt, a rate limit of its API (429 with Retry-After: a token
bucket, or k-ID's own count of calls in each second), a new API key, and how
its REST API misbehaves: an endpoint's 5xx, latency or silence past the
client's timeout (--api-*), a new session's propagation delay answered as
404 or as 400, PENDING challenges, a PASS without its sessionId. Without a
flag it shows them.`,
		Example: `  kidsim faults --window-limit 10                  # k-ID's test limit
  kidsim faults --api-status 503 --api-calls 3     # the next 3 calls of every endpoint
  kidsim faults --api-endpoint session/get --api-hang
  kidsim faults --api-endpoint session/get --api-status 0   # clears it
  kidsim faults --propagation-delay 2s --propagation-status 400`,
		GroupID: groupFake,
		Args:    wantArgs(),
	}
	fl := cmd.Flags()
	fl.StringVar(&deliveries, "deliveries", "", "drop, 5xx, timeout, or empty to deliver")
	fl.DurationVar(&delay, "delivery-delay", 0, "delay before each event's first attempt")
	fl.Float64Var(&rps, "rate-limit", 0, "requests a second per API key (0: off)")
	fl.IntVar(&burst, "burst", 0, "the burst of the rate limit (default the rate, rounded up)")
	fl.DurationVar(&retryAfter, "retry-after", 0, "the Retry-After of a 429 (whole seconds are sent)")
	fl.StringVar(&apiKey, "api-key", "", "rotate the API key the fake accepts")
	api.register(fl)
	sim := addSimFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		set, changed := map[string]bool{}, false
		for _, name := range append(faultFlags, apiFaultFlagNames...) {
			set[name] = cmd.Flags().Changed(name)
			changed = changed || set[name]
		}
		if set["burst"] && !set["rate-limit"] {
			return errors.New("--burst needs --rate-limit")
		}
		var u kidsim.FaultsUpdate
		if set["deliveries"] {
			if _, err := kidsim.ParseDeliveryFault(deliveries); err != nil {
				return err
			}
			u.Deliveries = &deliveries
		}
		if set["delivery-delay"] {
			s := delay.String()
			u.DeliveryDelay = &s
		}
		if set["retry-after"] {
			s := retryAfter.String()
			u.RetryAfter = &s
		}
		if set["rate-limit"] {
			b := burst
			if !set["burst"] {
				b = max(1, int(math.Ceil(rps)))
			}
			u.RateLimit = &kidsim.RateLimit{RPS: rps, Burst: b}
		}
		if set["api-key"] {
			u.APIKey = &apiKey
		}
		api.update(cmd, &u)
		var got kidsim.Faults
		// Without a fault flag, faults shows them.
		method, body := http.MethodGet, any(nil)
		if changed {
			method, body = http.MethodPut, u
		}
		if err := simCall(cmd, *sim, method, "/kidsim/faults", body, &got); err != nil {
			return err
		}
		d := string(got.Deliveries)
		if d == "" {
			d = "delivered"
		}
		rate := "off"
		if got.RateLimit.RPS > 0 {
			rate = fmt.Sprintf("%g rps (burst %d)", got.RateLimit.RPS, got.RateLimit.Burst)
		}
		out := cmd.OutOrStdout()
		fmt.Fprintf(out, "faults: deliveries %s, delivery delay %s, rate limit %s, retry-after %s\n", d, got.DeliveryDelay, rate, got.RetryAfter)
		fmt.Fprintln(out, describeAPIFaults(got))
		if u.APIKey != nil {
			fmt.Fprintln(out, "API key rotated")
		}
		return nil
	}
	return cmd
}
