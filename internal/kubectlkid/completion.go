package kubectlkid

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// Shell completion goes through cobra: `kubectl-kid completion bash|zsh|fish`
// writes a script for the binary run on its own, and kubectl (1.26 and
// later) completes `kubectl kid ...` by running the executable
// kubectl_complete-kid on the PATH (hack/kubectl_complete-kid, installed
// next to the plugin by make install-plugin), which asks the plugin's hidden
// __complete command. The functions below answer for product and player
// names, read from the cluster with the flags typed so far (-n, --context).

// The bounds of a player-name completion. A product may hold 250,000
// players: completion reads names only (metadata), one product's at a time
// through the spec.productRef.name field selector, completionPage per call,
// and stops at completionLimit matches or after completionPages calls.
// Beyond that, type more of the name, or use `kubectl kid user <id>` with
// an id.
var (
	completionLimit = 50
	completionPage  = 50
	completionPages = 20
)

// completeProductFlag completes the --product flag of cmd with product
// names.
func completeProductFlag(cmd *cobra.Command, o *Options) {
	_ = cmd.RegisterFlagCompletionFunc("product", func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return o.completeProducts(cmd.Context(), toComplete)
	})
}

// productArg completes a command's one argument with product names.
func productArg(o *Options) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return o.completeProducts(cmd.Context(), toComplete)
	}
}

// userArg completes a command's one argument with KidUser names (of
// --product, if given).
func userArg(o *Options, product *string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return o.completeUsers(cmd.Context(), *product, toComplete)
	}
}

func (o *Options) completeProducts(ctx context.Context, toComplete string) ([]string, cobra.ShellCompDirective) {
	s, err := o.connect()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	names, err := productNames(ctx, s.client, s.namespace)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, toComplete) {
			out = append(out, n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func (o *Options) completeUsers(ctx context.Context, product, toComplete string) ([]string, cobra.ShellCompDirective) {
	s, err := o.connect()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	products := []string{product}
	if product == "" {
		if products, err = productNames(ctx, s.client, s.namespace); err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
	}
	var out []string
	for _, p := range products {
		// A player's name starts with its product's: only the products
		// the prefix may still name are read.
		if !strings.HasPrefix(p+"-", toComplete) && !strings.HasPrefix(toComplete, p+"-") {
			continue
		}
		names, err := userNames(ctx, s.client, s.namespace, p, toComplete, completionLimit-len(out))
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		if out = append(out, names...); len(out) >= completionLimit {
			break
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// userNames returns up to limit names of the product's KidUsers that start
// with prefix, within the bounds above. Names come in the API server's
// order (by name); a prefix naming the identity's kind as well (as
// <product>-session-) narrows the list to that kind.
func userNames(ctx context.Context, c client.Reader, ns, product, prefix string, limit int) ([]string, error) {
	fields := client.MatchingFields{kidv1.UserProductField: product}
	for _, kind := range idKinds {
		if strings.HasPrefix(prefix, product+"-"+idKindWord(kind)+"-") {
			fields[kidv1.UserIdentityKindField] = string(kind)
		}
	}
	var out []string
	cont := ""
	for range completionPages {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(kidv1.GroupVersion.WithKind("KidUserList"))
		if err := c.List(ctx, list, client.InNamespace(ns), fields, client.Limit(int64(completionPage)), client.Continue(cont)); err != nil {
			return nil, err
		}
		for _, u := range list.Items {
			if strings.HasPrefix(u.Name, prefix) {
				if out = append(out, u.Name); len(out) >= limit {
					return out, nil
				}
			}
		}
		if cont = list.Continue; cont == "" {
			break
		}
	}
	return out, nil
}

// idKindWord is the word of an identity kind in KidUser names
// (kidv1.UserName: <product>-<word>-<digest>).
func idKindWord(kind kidv1.IdentityKind) string {
	return strings.Split(kidv1.UserName("p", kind, ""), "-")[1]
}
