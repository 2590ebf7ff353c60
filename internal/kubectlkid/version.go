package kubectlkid

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kid-operator/kid-operator/internal/version"
)

// newVersionCommand prints the plugin's own version and commit, as make
// build stamped them; it needs no cluster. The operator's is its
// kid_build_info metric, or its image's tag.
func newVersionCommand(o *Options) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version and the commit this plugin was built from",
		Example: `  kubectl kid version
  kubectl kid version -o json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			info := version.Get()
			switch output {
			case "":
				_, err := fmt.Fprintln(o.Out, info)
				return err
			case "json":
				enc := json.NewEncoder(o.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			return fmt.Errorf("--output %q: want json or nothing", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "json, or nothing for one line")
	return cmd
}
