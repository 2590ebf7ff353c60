package testenv

import (
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
)

// Grants expands RBAC rules into "group/resource:verb" (or "url:verb"), so
// that two roles can be compared whatever their rules' grouping and order.
func Grants(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		for _, v := range r.Verbs {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					out = append(out, g+"/"+res+":"+v)
				}
			}
			for _, u := range r.NonResourceURLs {
				out = append(out, u+":"+v)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
