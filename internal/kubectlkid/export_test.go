package kubectlkid

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// FindUser is findUser for the specs that watch which reads a lookup makes:
// the user found and how.
func FindUser(ctx context.Context, c client.Reader, ns string, products []string, id string) (*kidv1.KidUser, string, error) {
	m, err := findUser(ctx, c, ns, products, id)
	if err != nil {
		return nil, "", err
	}
	return m.user, m.how(id), nil
}

// SetCompletionBounds lowers the bounds of a player-name completion, so
// that a spec reaches them with a few players; restore puts them back.
func SetCompletionBounds(limit, page, pages int) (restore func()) {
	l, p, n := completionLimit, completionPage, completionPages
	completionLimit, completionPage, completionPages = limit, page, pages
	return func() { completionLimit, completionPage, completionPages = l, p, n }
}
