package controllers_test

import (
	"encoding/json"
	"strconv"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
	"github.com/kid-operator/kid-operator/test/testenv"
)

// newProduct makes a namespace and a Ready product "demo" in it.
func newProduct(mutate func(*kidv1.KidProduct)) *testenv.Product {
	GinkgoHelper()
	p, err := h.NewReadyProduct(ctx, "demo", mutate)
	Expect(err).NotTo(HaveOccurred())
	return p
}

// send builds an event with the simulator and delivers it, signed, to the
// real receiver; it must be answered 200.
func send(p *testenv.Product, eventType string, f kidsim.Fields) {
	GinkgoHelper()
	body, err := kidsim.Build(eventType, f)
	Expect(err).NotTo(HaveOccurred())
	a := p.Sender().Deliver(ctx, body, nowTS(), kid.Sign)
	Expect(a.Status).To(Equal(200), a.String())
}

// user waits until the KidUser known by (kind, id) satisfies check.
func user(p *testenv.Product, kind kidv1.IdentityKind, id string, check func(Gomega, *kidv1.KidUser)) *kidv1.KidUser {
	GinkgoHelper()
	u := &kidv1.KidUser{}
	key := client.ObjectKey{Namespace: p.Namespace, Name: kidv1.UserName(p.Name, kind, id)}
	Eventually(func(g Gomega) {
		g.Expect(h.Client.Get(ctx, key, u)).To(Succeed())
		check(g, u)
	}).Should(Succeed())
	return u
}

func users(ns string) []kidv1.KidUser {
	GinkgoHelper()
	var list kidv1.KidUserList
	Expect(h.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	return list.Items
}

func events(ns string) []kidv1.KidEvent {
	GinkgoHelper()
	var list kidv1.KidEventList
	Expect(h.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	return list.Items
}

// allEventsFinished waits until every event of the namespace is finished.
func allEventsFinished(ns string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		for _, e := range events(ns) {
			g.Expect(e.Status.Finished()).To(BeTrue(), "%s is %q", e.Name, e.Status.Phase)
		}
	}).Should(Succeed())
}

// everythingJSON is what `kubectl get kid -A -o json` shows: every object of
// every kid.dev kind, in every namespace.
func everythingJSON() string {
	GinkgoHelper()
	var all []any
	for _, list := range []client.ObjectList{&kidv1.KidProductList{}, &kidv1.KidEventList{}, &kidv1.KidUserList{}, &kidv1.KidActionList{}} {
		Expect(h.Client.List(ctx, list)).To(Succeed())
		all = append(all, list)
	}
	b, err := json.Marshal(all)
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

// metricSum sums the series of a metric of the operator's registry (it runs
// in this process) that carry the given labels: a counter's or gauge's
// value, or a histogram's sum, and a histogram's count; found is false when
// no series carries them.
func metricSum(name string, labels map[string]string) (value float64, count uint64, found bool) {
	GinkgoHelper()
	families, err := ctrlmetrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			found = true
			switch {
			case m.GetCounter() != nil:
				value += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				value += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				value += m.GetHistogram().GetSampleSum()
				count += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return value, count, found
}

// reconciles is how many reconciles the named controller has finished, from
// controller-runtime's metrics.
func reconciles(controller string) float64 {
	GinkgoHelper()
	n, _, _ := metricSum("controller_runtime_reconcile_total", map[string]string{"controller": controller})
	return n
}

// nowTS is a signature timestamp for now, on the harness's clock.
func nowTS() string { return strconv.FormatInt(h.Clock.Now().Unix(), 10) }

// inParallel calls f for every index below n, on 16 goroutines, and
// returns when every call has: how the specs create hundreds of objects
// or deliveries without waiting for each round trip in turn.
func inParallel(n int, f func(i int)) {
	GinkgoHelper()
	work := make(chan int, n)
	for i := range n {
		work <- i
	}
	close(work)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			defer GinkgoRecover()
			for i := range work {
				f(i)
			}
		})
	}
	wg.Wait()
}
