package kubectlkid

import (
	"bytes"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// product is a Ready product with the conditions the KidProduct controller
// writes besides Ready.
func product(name string, conds ...metav1.Condition) kidv1.KidProduct {
	p := kidv1.KidProduct{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "games"}}
	p.Status.Conditions = append([]metav1.Condition{{Type: kidv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: kidv1.SucceededReason}}, conds...)
	return p
}

// The k-ID API breaker and the erasure breaker show on the product as
// conditions (controllers/apibreaker.go, kidproduct_erasures.go): check
// reads them there. Opening them takes minutes of failing calls, which
// the controllers' specs do (api_failures_test.go); here, what check makes
// of the conditions they write.
func TestCheckReadsTheBreakersFromTheProductsConditions(t *testing.T) {
	g := NewWithT(t)
	products := []kidv1.KidProduct{
		product("webhooks-only", metav1.Condition{Type: kidv1.APIReadyCondition, Status: metav1.ConditionFalse, Reason: kidv1.NotConfiguredReason}),
		product("fine", metav1.Condition{Type: kidv1.APIReadyCondition, Status: metav1.ConditionTrue, Reason: kidv1.APIReadyReason}),
		product("failing",
			metav1.Condition{Type: kidv1.APIReadyCondition, Status: metav1.ConditionFalse, Reason: kidv1.FailingReason, Message: "503 from /session/get"},
			metav1.Condition{Type: kidv1.ErasuresHeldCondition, Status: metav1.ConditionTrue, Reason: kidv1.NotFoundSurgeReason, Message: "12 of 40 sessions NOT_FOUND"}),
	}
	g.Expect(breakers(products[:2])).To(Equal("breaker closed for every product using it (1)"))
	g.Expect(breakers(products[:1])).To(Equal("no product uses k-ID's API (no spec.api)"))
	g.Expect(breakers(products)).To(Equal("breaker OPEN for failing (calls paused, one probe at a time)"))

	c := &checkOptions{pendingFor: time.Minute}
	h := &health{}
	var out bytes.Buffer
	g.Expect(c.writeProducts(&out, products, map[string]*backlog{}, time.Now(), h)).To(Succeed())
	g.Expect(out.String()).To(MatchRegexp(`(?m)^failing\s+True\s+False \(Failing\)\s+held\s+0\s+0$`))
	g.Expect(out.String()).To(MatchRegexp(`(?m)^fine\s+True\s+True\s+flowing\s+0\s+0$`))
	g.Expect(h.problems).To(Equal([]string{
		"product failing cannot use k-ID's API: APIReady False, Failing: 503 from /session/get",
		"product failing holds erasures learned from k-ID's API: True, NotFoundSurge: 12 of 40 sessions NOT_FOUND (resume with the kid.dev/resume-erasures annotation)",
	}), "NotConfigured is no problem: the product works on webhooks alone")
}
