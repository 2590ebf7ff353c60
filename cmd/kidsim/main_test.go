package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"

	. "github.com/onsi/gomega"
)

// asMain makes the test binary run kidsim's main instead of the tests, so
// that a test can see what a user's shell sees: the exit code and stderr.
const asMain = "KIDSIM_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestMistakesAreNamedAndNothingRuns(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"an unknown command", []string{"bogus"}, `^unknown command "bogus"; see 'kidsim --help'$`},
		{"a misspelt command gets a suggestion", []string{"snd"}, `unknown command "snd" \(did you mean send\?\)`},
		{"an unknown flag", []string{"send", "--bogus"}, `^send: unknown flag: --bogus; see 'kidsim send --help'$`},
		{"a single-dash long flag", []string{"send", "-url", "http://x"}, `^send: unknown shorthand flag: 'u' in -url`},
		{"a flag of the wrong type", []string{"faults", "--rate-limit", "fast"}, `^faults: invalid argument "fast" for "--rate-limit" flag`},
		{"a flag without its value", []string{"challenge", "approve", "--kuid"}, `^challenge approve: flag needs an argument: --kuid`},
		{"an unknown subcommand", []string{"challenge", "bogus"}, `^unknown challenge command "bogus": want start, approve or deny$`},
		{"a group without its subcommand", []string{"verification"}, `^verification wants start, pass ID, fail ID or revoke ID$`},
		{"an argument too many", []string{"examples", "extra"}, `^examples takes no arguments, got \["extra"\]$`},
		{"an argument too few", []string{"session", "permission", "s-1", "voice-chat"}, `^session permission wants 3 argument\(s\): SESSION NAME on\|off; got 2$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			var out bytes.Buffer
			err := run(context.Background(), tc.args, &out)
			g.Expect(err).To(MatchError(MatchRegexp(tc.want)))
			g.Expect(out.String()).To(BeEmpty(), "no usage dump, no partial run")
		})
	}
}

func TestNoCommandPrintsTheHelpAndFails(t *testing.T) {
	g := NewWithT(t)
	var out bytes.Buffer
	g.Expect(run(context.Background(), nil, &out)).To(MatchError("no command given"))
	g.Expect(out.String()).To(And(ContainSubstring("Sending webhooks:"), ContainSubstring("test-button"), ContainSubstring("faults")))
}

// The exit code is what scripts (and make) see.
func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		code     int
		stdout   string
		stderr   string
		noStdout bool
	}{
		{args: []string{"bogus"}, code: 1, stderr: `^kidsim: unknown command "bogus"; see 'kidsim --help'\n$`, noStdout: true},
		{args: []string{"send", "--bogus"}, code: 1, stderr: `^kidsim: send: unknown flag: --bogus`, noStdout: true},
		{args: []string{"send", "--url", "http://127.0.0.1:1/webhooks/a/b"}, code: 1, stderr: `^kidsim: --secret \(or KID_WEBHOOK_SECRET\) is required\n$`, noStdout: true},
		{args: []string{"--help"}, code: 0, stdout: `Usage:\n  kidsim \[flags\]\n  kidsim \[command\]`},
		{args: []string{"send", "-h"}, code: 0, stdout: `kidsim send \[flags\]`},
		{args: []string{"sign", "--secret", "your-secret", "--timestamp", "1700000000", "--file", "testdata/test-event.json"}, code: 0,
			stdout: `^X-Signature-Timestamp: 1700000000\nX-Signature-Hmac-Sha256: 15ae46eedc66bc07bb2a19ba5ebfdf8b360151ae022c1d12c1a5c84488634f0f\n$`},
	} {
		t.Run(tc.args[0]+" "+tc.args[len(tc.args)-1], func(t *testing.T) {
			g := NewWithT(t)
			cmd := exec.Command(os.Args[0], tc.args...)
			cmd.Env = append(os.Environ(), asMain+"=1", "KID_WEBHOOK_SECRET=")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else {
				g.Expect(err).NotTo(HaveOccurred())
			}
			g.Expect(code).To(Equal(tc.code), "stderr: %s", stderr.String())
			if tc.stderr != "" {
				g.Expect(stderr.String()).To(MatchRegexp(tc.stderr))
			} else {
				g.Expect(stderr.String()).To(BeEmpty())
			}
			if tc.noStdout {
				g.Expect(stdout.String()).To(BeEmpty())
			}
			if tc.stdout != "" {
				g.Expect(stdout.String()).To(MatchRegexp(tc.stdout))
			}
		})
	}
}
