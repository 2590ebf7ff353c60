package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

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

// simFlagSet returns a flag set with --sim, and where its value lands.
func simFlagSet(name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	def := os.Getenv("KIDSIM_URL")
	if def == "" {
		def = defaultSim
	}
	return fs, fs.String("sim", def, "the running kidsim serve (default $KIDSIM_URL or "+defaultSim+")")
}

// parseArgs parses flags wherever they stand among the arguments, so that
// `approve ID --kuid K` works as well as `approve --kuid K ID`, and checks
// the number of arguments.
func parseArgs(fs *flag.FlagSet, args []string, want ...string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != len(want) {
		return nil, fmt.Errorf("%s wants %d argument(s): %s; got %d", fs.Name(), len(want), strings.Join(want, " "), len(positional))
	}
	return positional, nil
}

func newSimClient(base string) (*simClient, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--sim: want a URL such as %s, got %q", defaultSim, base)
	}
	return &simClient{base: strings.TrimSuffix(base, "/"), http: &http.Client{Timeout: 10 * time.Second}}, nil
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

func challengeCmd(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("challenge wants start, approve ID or deny ID")
	}
	fs, sim := simFlagSet("challenge " + args[0])
	var a kidsim.Approval
	var want []string
	switch args[0] {
	case "start":
	case "approve":
		fs.StringVar(&a.KUID, "kuid", "", "the player's kuid (default a new UUID)")
		fs.StringVar(&a.Email, "email", "", "the approver's email (default "+kidsim.DefaultApproverEmail+")")
		fs.StringVar(&a.DOB, "dob", "", "the player's date of birth, YYYY-MM-DD (default "+kidsim.DefaultDOB+")")
		fs.StringVar(&a.SessionID, "session", "", "the id of the session created (default a new UUID)")
		want = []string{"ID"}
	case "deny":
		want = []string{"ID"}
	default:
		return fmt.Errorf("unknown challenge command %q: want start, approve or deny", args[0])
	}
	pos, err := parseArgs(fs, args[1:], want...)
	if err != nil {
		return err
	}
	c, err := newSimClient(*sim)
	if err != nil {
		return err
	}
	var got kidsim.Challenge
	switch args[0] {
	case "start":
		if err := c.call(ctx, http.MethodPost, "/kidsim/challenges", nil, &got); err != nil {
			return err
		}
		fmt.Fprintf(out, "challenge %s started (%s)\n", got.ChallengeID, got.Status)
	case "approve":
		if err := c.call(ctx, http.MethodPost, "/kidsim/challenges/"+url.PathEscape(pos[0])+"/approve", a, &got); err != nil {
			return err
		}
		fmt.Fprintf(out, "challenge %s approved: session %s, kuid %s\n", got.ChallengeID, got.SessionID, got.KUID)
	case "deny":
		if err := c.call(ctx, http.MethodPost, "/kidsim/challenges/"+url.PathEscape(pos[0])+"/deny", nil, &got); err != nil {
			return err
		}
		fmt.Fprintf(out, "challenge %s denied (%s)\n", got.ChallengeID, got.Status)
	}
	return nil
}

func verificationCmd(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("verification wants start, pass ID, fail ID or revoke ID")
	}
	fs, sim := simFlagSet("verification " + args[0])
	var reason string
	want := []string{"ID"}
	switch args[0] {
	case "start":
		want = nil
	case "pass", "fail":
	case "revoke":
		fs.StringVar(&reason, "reason", "", "fraudulent-activity-detected (default) or provider-reported-error")
	default:
		return fmt.Errorf("unknown verification command %q: want start, pass, fail or revoke", args[0])
	}
	pos, err := parseArgs(fs, args[1:], want...)
	if err != nil {
		return err
	}
	c, err := newSimClient(*sim)
	if err != nil {
		return err
	}
	var got kidsim.Verification
	if args[0] == "start" {
		if err := c.call(ctx, http.MethodPost, "/kidsim/verifications", nil, &got); err != nil {
			return err
		}
		fmt.Fprintf(out, "verification %s started (%s)\n", got.ID, got.Status)
		return nil
	}
	var body any
	if args[0] == "revoke" {
		body = map[string]string{"reason": reason}
	}
	if err := c.call(ctx, http.MethodPost, "/kidsim/verifications/"+url.PathEscape(pos[0])+"/"+args[0], body, &got); err != nil {
		return err
	}
	switch {
	case args[0] == "revoke":
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

func sessionCmd(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("session wants permission SESSION NAME on|off, or delete SESSION")
	}
	fs, sim := simFlagSet("session " + args[0])
	var want []string
	switch args[0] {
	case "permission":
		want = []string{"SESSION", "NAME", "on|off"}
	case "delete":
		want = []string{"SESSION"}
	default:
		return fmt.Errorf("unknown session command %q: want permission or delete", args[0])
	}
	pos, err := parseArgs(fs, args[1:], want...)
	if err != nil {
		return err
	}
	c, err := newSimClient(*sim)
	if err != nil {
		return err
	}
	path := "/kidsim/sessions/" + url.PathEscape(pos[0])
	if args[0] == "delete" {
		if err := c.call(ctx, http.MethodDelete, path, nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(out, "session %s deleted\n", pos[0])
		return nil
	}
	var enabled bool
	switch pos[2] {
	case "on":
		enabled = true
	case "off":
	default:
		return fmt.Errorf("want on or off, got %q", pos[2])
	}
	var got kidsim.Session
	if err := c.call(ctx, http.MethodPost, path+"/permissions", map[string]any{"name": pos[1], "enabled": enabled}, &got); err != nil {
		return err
	}
	fmt.Fprintf(out, "session %s: %s %s (etag %s)\n", got.SessionID, pos[1], pos[2], got.Etag)
	return nil
}

func accountCmd(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] != "delete" {
		return errors.New("account wants delete KUID")
	}
	fs, sim := simFlagSet("account delete")
	pos, err := parseArgs(fs, args[1:], "KUID")
	if err != nil {
		return err
	}
	c, err := newSimClient(*sim)
	if err != nil {
		return err
	}
	var got struct {
		KUID            string `json:"kuid"`
		SessionsDeleted int    `json:"sessionsDeleted"`
	}
	if err := c.call(ctx, http.MethodDelete, "/kidsim/accounts/"+url.PathEscape(pos[0]), nil, &got); err != nil {
		return err
	}
	fmt.Fprintf(out, "account %s deleted (%d session(s))\n", got.KUID, got.SessionsDeleted)
	return nil
}

func faultsCmd(ctx context.Context, args []string, out io.Writer) error {
	fs, sim := simFlagSet("faults")
	deliveries := fs.String("deliveries", "", "drop, 5xx, timeout, or empty to deliver")
	delay := fs.Duration("delivery-delay", 0, "delay before each event's first attempt")
	rps := fs.Float64("rate-limit", 0, "requests a second per API key (0: off)")
	burst := fs.Int("burst", 0, "the burst of the rate limit (default the rate, rounded up)")
	retryAfter := fs.Duration("retry-after", 0, "the Retry-After of a 429 (whole seconds are sent)")
	apiKey := fs.String("api-key", "", "rotate the API key the fake accepts")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if set["burst"] && !set["rate-limit"] {
		return errors.New("--burst needs --rate-limit")
	}
	var u kidsim.FaultsUpdate
	if set["deliveries"] {
		if _, err := kidsim.ParseDeliveryFault(*deliveries); err != nil {
			return err
		}
		u.Deliveries = deliveries
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
		b := *burst
		if !set["burst"] {
			b = max(1, int(math.Ceil(*rps)))
		}
		u.RateLimit = &kidsim.RateLimit{RPS: *rps, Burst: b}
	}
	if set["api-key"] {
		u.APIKey = apiKey
	}
	c, err := newSimClient(*sim)
	if err != nil {
		return err
	}
	var got kidsim.Faults
	if len(set) == 0 || (len(set) == 1 && set["sim"]) {
		err = c.call(ctx, http.MethodGet, "/kidsim/faults", nil, &got)
	} else {
		err = c.call(ctx, http.MethodPut, "/kidsim/faults", u, &got)
	}
	if err != nil {
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
	fmt.Fprintf(out, "faults: deliveries %s, delivery delay %s, rate limit %s, retry-after %s\n", d, got.DeliveryDelay, rate, got.RetryAfter)
	if u.APIKey != nil {
		fmt.Fprintln(out, "API key rotated")
	}
	return nil
}
