//go:build faults && linux

package faults

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/kid"
	"github.com/kid-operator/kid-operator/internal/kidsim"
)

// countingTarget is a kidsim target that takes each webhook-id once, and
// logs every POST it received: its webhook-id, the KidEvent named in its
// body, and when.
type countingTarget struct {
	*httptest.Server
	target *kidsim.Target
	mu     sync.Mutex
	posts  []post
}

// post is one request the target received.
type post struct {
	id, event string
	at        time.Time
}

func newCountingTarget() *countingTarget {
	t := &countingTarget{target: &kidsim.Target{Dedupe: true}}
	t.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The time is taken before the answer, so before the run's
		// status can record it.
		at := time.Now()
		body, _ := io.ReadAll(r.Body)
		var in struct {
			Event struct {
				Name string `json:"name"`
			} `json:"event"`
		}
		_ = json.Unmarshal(body, &in)
		t.mu.Lock()
		t.posts = append(t.posts, post{id: r.Header.Get("webhook-id"), event: in.Event.Name, at: at})
		t.mu.Unlock()
		r.Body = io.NopCloser(bytesReader(body))
		t.target.ServeHTTP(w, r)
	}))
	DeferCleanup(t.Close)
	return t
}

// effects checks that each of the events had its effect exactly once (one
// webhook-id taken per event) and returns how many deliveries were repeats
// of a webhook-id already taken.
func (t *countingTarget) effects(g Gomega, events []string) (repeats int) {
	taken := t.target.Taken()
	t.mu.Lock()
	defer t.mu.Unlock()
	eventOf := map[string]string{}
	for _, p := range t.posts {
		eventOf[p.id] = p.event
	}
	perEvent := map[string]int{}
	for id, n := range taken {
		perEvent[eventOf[id]]++
		repeats += n - 1
	}
	for _, e := range events {
		g.Expect(perEvent[e]).To(Equal(1), "effects of event %s", e)
	}
	g.Expect(perEvent).To(HaveLen(len(events)), "effects of events that should have none")
	return repeats
}

// repeatsOnlyAfterStops checks each POST the target received against the
// stops of the processes that run the actions and against what the ledger
// saw. The operator delivers at least once: a POST is sent again only when
// the process that sent it stopped before recording its run Succeeded. So a
// webhook-id is POSTed again only with a stop between the two POSTs, and no
// more often than there were stops; and no POST arrives after its run was
// seen Succeeded. It returns the repeats.
func (t *countingTarget) repeatsOnlyAfterStops(g Gomega, l *eventLedger, stopped []time.Time) (repeats int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	byID := map[string][]post{}
	for _, p := range t.posts {
		byID[p.id] = append(byID[p.id], p)
		r, ok := l.record(p.event)
		g.Expect(ok && !r.notified.IsZero() && p.at.After(r.notified)).To(BeFalse(),
			"webhook-id %s (event %s) POSTed at %s, %s after its run was seen Succeeded",
			p.id, p.event, p.at.Format(time.StampMicro), p.at.Sub(r.notified))
	}
	for id, ps := range byID {
		repeats += len(ps) - 1
		g.Expect(len(ps)-1).To(BeNumerically("<=", len(stopped)), "webhook-id %s (event %s) POSTed %d times, with %d stops", id, ps[0].event, len(ps), len(stopped))
		for i := 1; i < len(ps); i++ {
			g.Expect(stopBetween(stopped, ps[i-1].at, ps[i].at)).To(BeTrue(),
				"webhook-id %s (event %s) POSTed again at %s, %s after the last, with no process stopped between",
				id, ps[i].event, ps[i].at.Format(time.StampMicro), ps[i].at.Sub(ps[i-1].at))
		}
	}
	return repeats
}

func stopBetween(stopped []time.Time, from, to time.Time) bool {
	for _, s := range stopped {
		if s.After(from) && s.Before(to) {
			return true
		}
	}
	return false
}

// notifyName is the KidAction notifyAction makes.
const notifyName = "notify"

// notifyAction is a KidAction that posts each Challenge.StateChange to url.
func notifyAction(ns, url string) {
	Expect(h.Client.Create(ctx, &kidv1.KidAction{
		ObjectMeta: metav1.ObjectMeta{Name: notifyName, Namespace: ns},
		Spec: kidv1.KidActionSpec{
			EventTypes: []string{kid.ChallengeStateChange},
			HTTP:       &kidv1.HTTPAction{URL: url, MaxAttempts: 10},
		},
	})).To(Succeed())
}

// challengeEvents names the Challenge.StateChange events in ns.
func challengeEvents(g Gomega, ns string) []string {
	var list kidv1.KidEventList
	g.Expect(h.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.Spec.EventType == kid.ChallengeStateChange {
			out = append(out, e.Name)
		}
	}
	return out
}
