package operator_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/kid-operator/kid-operator/test/testenv"
)

func rulesOf(t *testing.T, path string) []rbacv1.PolicyRule {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), path))
	if err != nil {
		t.Fatal(err)
	}
	var role struct {
		Rules []rbacv1.PolicyRule `json:"rules"`
	}
	if err := yaml.Unmarshal(raw, &role); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return role.Rules
}

// leaderElection is what the manager needs in its own namespace only.
func leaderElection(g string) bool {
	return strings.HasPrefix(g, "coordination.k8s.io/leases:") || strings.HasPrefix(g, "/events:")
}

func TestTheNamespacedRoleGrantsWhatTheGeneratedClusterRoleGrants(t *testing.T) {
	g := NewWithT(t)
	cluster := slices.DeleteFunc(testenv.Grants(rulesOf(t, "config/rbac/role.yaml")), leaderElection)
	g.Expect(testenv.Grants(rulesOf(t, "config/rbac/namespaced/role.yaml"))).To(Equal(cluster),
		"config/rbac/namespaced/role.yaml must follow the markers (config/rbac/role.yaml), leader election aside")
	g.Expect(slices.ContainsFunc(testenv.Grants(rulesOf(t, "config/rbac/role.yaml")), leaderElection)).To(BeTrue())
	g.Expect(testenv.Grants(rulesOf(t, "config/namespaced/leader_election_role.yaml"))).To(Equal(
		slices.DeleteFunc(testenv.Grants(rulesOf(t, "config/rbac/role.yaml")), func(g string) bool { return !leaderElection(g) })))
}

func TestTheReceiverMayOnlyReadProductsWatchUsersGetSecretsAndCreateOrEnrichEvents(t *testing.T) {
	g := NewWithT(t)
	want := []string{
		"/secrets:get",
		"kid.dev/kidevents:create",
		// A later copy of a stored event adds what the stored one lacks
		// (the KidEvent's CEL rules allow nothing else).
		"kid.dev/kidevents:get", "kid.dev/kidevents:patch",
		"kid.dev/kidproducts:get", "kid.dev/kidproducts:list", "kid.dev/kidproducts:watch",
		// The browser status stream watches the users holding its subject
		// (a field selector; no get, no cache).
		"kid.dev/kidusers:list", "kid.dev/kidusers:watch",
	}
	g.Expect(testenv.Grants(rulesOf(t, "config/rbac/receiver_role.yaml"))).To(Equal(want))
	g.Expect(testenv.Grants(rulesOf(t, "config/rbac/namespaced/receiver_role.yaml"))).To(Equal(want))
}

func TestNoRoleListsOrWatchesSecrets(t *testing.T) {
	for _, path := range []string{"config/rbac/role.yaml", "config/rbac/receiver_role.yaml", "config/rbac/namespaced/role.yaml", "config/rbac/namespaced/receiver_role.yaml"} {
		for _, grant := range testenv.Grants(rulesOf(t, path)) {
			if strings.HasPrefix(grant, "/secrets:") && grant != "/secrets:get" {
				t.Errorf("%s grants %s", path, grant)
			}
		}
	}
}
