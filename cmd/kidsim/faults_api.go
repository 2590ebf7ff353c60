package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// apiFaultFlags are the faults command's flags for the REST API's faults:
// k-ID's fixed-window limit, an endpoint's 5xx, latency or hang, the
// propagation delay and its answer, PENDING challenges, and a PASS without
// its sessionId.
type apiFaultFlags struct {
	windowLimit          int
	endpoint             string
	status               int
	latency              time.Duration
	hang                 bool
	calls                int
	propagationDelay     time.Duration
	propagationStatus    int
	challengesPending    bool
	statusWithoutSession bool
}

// apiFaultFlagNames are the flags that change an API fault; the api-* ones
// (but --api-endpoint) set the named endpoint's fault as a whole.
var (
	apiFaultFlagNames  = []string{"window-limit", "api-status", "api-latency", "api-hang", "api-calls", "propagation-delay", "propagation-status", "challenges-pending", "status-without-session"}
	endpointFaultFlags = []string{"api-status", "api-latency", "api-hang", "api-calls"}
)

func (a *apiFaultFlags) register(fl *pflag.FlagSet) {
	fl.IntVar(&a.windowLimit, "window-limit", 0, fmt.Sprintf("API calls a second per key, in whole seconds as k-ID counts them; over it 429 (0: off; k-ID allows %d in test, %d in live)", kidsim.TestRateLimit, kidsim.LiveRateLimit))
	fl.StringVar(&a.endpoint, "api-endpoint", kidsim.AllEndpoints, "the endpoint the --api-* flags set: session/get, challenge/get-status, age-verification/get-status, or * for all")
	fl.IntVar(&a.status, "api-status", 0, "answer the endpoint with this 5xx (500 with k-ID's INTERNAL_ERROR body, others without one); 0: none")
	fl.DurationVar(&a.latency, "api-latency", 0, "hold each answer of the endpoint this long (at most 1m)")
	fl.BoolVar(&a.hang, "api-hang", false, "never answer the endpoint: each call is held until its client times out")
	fl.IntVar(&a.calls, "api-calls", 0, "apply the endpoint's fault to this many calls only (0: every call until cleared)")
	fl.DurationVar(&a.propagationDelay, "propagation-delay", 0, "how long /session/get answers a new session as not found")
	fl.IntVar(&a.propagationStatus, "propagation-status", 404, "how the propagation delay answers: 404 (vendor guidance) or 400 NOT_FOUND (the docs)")
	fl.BoolVar(&a.challengesPending, "challenges-pending", false, "/challenge/get-status answers PENDING, not IN_PROGRESS, before the decision")
	fl.BoolVar(&a.statusWithoutSession, "status-without-session", false, "/challenge/get-status answers PASS without its sessionId")
}

// update adds the flags set to u.
func (a *apiFaultFlags) update(cmd *cobra.Command, u *kidsim.FaultsUpdate) {
	changed := cmd.Flags().Changed
	if changed("window-limit") {
		u.WindowLimit = &a.windowLimit
	}
	if slices.ContainsFunc(endpointFaultFlags, changed) {
		u.API = map[string]kidsim.APIFault{a.endpoint: {Status: a.status, Latency: a.latency, Hang: a.hang, Calls: a.calls}}
	}
	if changed("propagation-delay") {
		s := a.propagationDelay.String()
		u.PropagationDelay = &s
	}
	if changed("propagation-status") {
		u.PropagationStatus = &a.propagationStatus
	}
	if changed("challenges-pending") {
		u.ChallengesPending = &a.challengesPending
	}
	if changed("status-without-session") {
		u.StatusWithoutSession = &a.statusWithoutSession
	}
}

// describeAPIFaults is the faults command's line on the REST API.
func describeAPIFaults(got kidsim.Faults) string {
	window := "off"
	if got.WindowLimit > 0 {
		window = fmt.Sprintf("%d/s", got.WindowLimit)
	}
	open := "IN_PROGRESS"
	if got.ChallengesPending {
		open = "PENDING"
	}
	pass := "with"
	if got.StatusWithoutSession {
		pass = "without"
	}
	var faults []string
	for _, e := range slices.Sorted(maps.Keys(got.API)) {
		a := got.API[e]
		var what []string
		if a.Status != 0 {
			what = append(what, fmt.Sprintf("status %d", a.Status))
		}
		if a.Latency > 0 {
			what = append(what, "latency "+a.Latency.String())
		}
		if a.Hang {
			what = append(what, "hang")
		}
		if a.Calls > 0 {
			what = append(what, fmt.Sprintf("for %d call(s)", a.Calls))
		}
		faults = append(faults, e+" "+strings.Join(what, " "))
	}
	if len(faults) == 0 {
		faults = []string{"none"}
	}
	return fmt.Sprintf("api: window limit %s, propagation %s as %d, undecided challenges %s, PASS %s sessionId; endpoint faults: %s",
		window, got.PropagationDelay, got.PropagationStatus, open, pass, strings.Join(faults, ", "))
}
