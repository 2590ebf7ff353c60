package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kid-operator/kid-operator/internal/version"
)

// newVersionCommand prints the version and commit make build stamped in.
func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and the commit kidsim was built from",
		Args:  wantArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), version.Get())
			return err
		},
	}
}
