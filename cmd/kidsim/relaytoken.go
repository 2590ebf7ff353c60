package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kid-operator/kid-operator/webhookserver/relaytoken"
)

// relayToken prints a relay token, as a game's backend mints one for a
// player's page (webhookserver/relaytoken):
//
//	kidsim relay-token --secret S --product ns/name --challenge ID [--ttl 1h]
func relayToken(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("relay-token", flag.ContinueOnError)
	fs.SetOutput(out)
	var secret, product, challenge, verification, session string
	var ttl time.Duration
	fs.StringVar(&secret, "secret", os.Getenv("KID_RELAY_SECRET"), "a key of the product's spec.browser.tokenSecretRef Secret (default $KID_RELAY_SECRET)")
	fs.StringVar(&product, "product", "", "the KidProduct, as namespace/name")
	fs.StringVar(&challenge, "challenge", "", "the token's subject: a challenge id")
	fs.StringVar(&verification, "verification", "", "the token's subject: a verification id")
	fs.StringVar(&session, "session", "", "the token's subject: a session id")
	fs.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid (at most 24h)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("relay-token takes no arguments, got %q", fs.Args())
	}
	if secret == "" {
		return errors.New("--secret (or KID_RELAY_SECRET) is required")
	}
	if product == "" {
		return errors.New("--product namespace/name is required")
	}
	var subjects []relaytoken.Subject
	for _, s := range []relaytoken.Subject{
		{Kind: relaytoken.KindChallenge, ID: challenge},
		{Kind: relaytoken.KindVerification, ID: verification},
		{Kind: relaytoken.KindSession, ID: session},
	} {
		if s.ID != "" {
			subjects = append(subjects, s)
		}
	}
	if len(subjects) != 1 {
		return errors.New("exactly one of --challenge, --verification and --session is required")
	}
	if ttl <= 0 || ttl > relaytoken.MaxTTL {
		return fmt.Errorf("--ttl must be more than 0 and at most %s", relaytoken.MaxTTL)
	}
	tok, err := relaytoken.Mint([]byte(secret), product, subjects[0], time.Now().Add(ttl))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}
