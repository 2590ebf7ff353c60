package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kid-operator/kid-operator/webhookserver/relaytoken"
)

// newRelayTokenCommand prints a relay token, as a game's backend mints one
// for a player's page (webhookserver/relaytoken):
//
//	kidsim relay-token --secret S --product ns/name --challenge ID [--ttl 1h]
func newRelayTokenCommand() *cobra.Command {
	var secret, product, challenge, verification, session string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:     "relay-token",
		Short:   "Print a relay token for a game's page",
		GroupID: groupWebhooks,
		Args:    wantArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok)
			return err
		},
	}
	fl := cmd.Flags()
	secretFlag(cmd, &secret, "secret", "KID_RELAY_SECRET", "a key of the product's spec.browser.tokenSecretRef Secret")
	fl.StringVar(&product, "product", "", "the KidProduct, as namespace/name")
	fl.StringVar(&challenge, "challenge", "", "the token's subject: a challenge id")
	fl.StringVar(&verification, "verification", "", "the token's subject: a verification id")
	fl.StringVar(&session, "session", "", "the token's subject: a session id")
	fl.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid (at most 24h)")
	return cmd
}
