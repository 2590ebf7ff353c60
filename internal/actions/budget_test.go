package actions

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// A template that writes nothing can still hold memory: {{$a := json .}}
// keeps its result until the render ends. These tests declare variables that
// would hold from 70 MiB to 1 GiB, and show each render refused or stopped
// within its budget, the process allocating less than 64 MiB meanwhile.

// heapDuring runs f and returns the bytes allocated while it ran (a bound on
// how much the heap could grow) and the largest growth of the heap in use
// seen by sampling it every millisecond.
func heapDuring(f func()) (allocated, peakGrowth uint64) {
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	f()
	close(stop)
	wg.Wait()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	peak = max(peak, after.HeapInuse)
	return after.TotalAlloc - before.TotalAlloc, peak - min(peak, before.HeapInuse)
}

// bigInput is an input whose JSON is about 60 KiB: under the 64 KiB a
// single json call may return, so that each declaration holds that much.
func bigInput(t *testing.T) *Input {
	e := event()
	e.Spec.Data = &apiextensionsv1.JSON{Raw: []byte(`{"big":"` + strings.Repeat("a", 60<<10) + `"}`)}
	in, err := NewInput(e, nil)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// declarations is a template of n declarations of the whole input's JSON:
// 14 bytes each.
func declarations(n int) string {
	return strings.Repeat(`{{$a:=json .}}`, n)
}

func TestVariablesAreChargedToTheRenderBudget(t *testing.T) {
	in := bigInput(t)
	const limit = 64 << 20

	t.Run("a 16 KiB body template that would hold 70 MiB in variables is stopped within its budget", func(t *testing.T) {
		g := NewWithT(t)
		tmpl := declarations(MaxBodyTemplateBytes / 14)
		a := &kidv1.HTTPAction{BodyTemplate: tmpl}
		g.Expect(CheckTemplates(&kidv1.KidAction{Spec: kidv1.KidActionSpec{HTTP: a}})).To(Succeed(), "allowed: only its render is too large")
		var err error
		allocated, peak := heapDuring(func() { _, err = Body(context.Background(), a, "kid_1", in) })
		t.Logf("allocated %d KiB, heap grew by at most %d KiB", allocated>>10, peak>>10)
		g.Expect(allocated).To(BeNumerically("<", limit))
		g.Expect(peak).To(BeNumerically("<", limit))
		g.Expect(errors.Is(err, ErrRenderTooLarge)).To(BeTrue(), "%v", err)
	})

	t.Run("a 32 KiB resource template that would hold 140 MiB in variables is stopped within its budget", func(t *testing.T) {
		g := NewWithT(t)
		r := resourceAction(`{"apiVersion":"v1","kind":"ConfigMap","data":{"k":"` + declarations(MaxResourceTemplateBytes/14-10) + `"}}`)
		g.Expect(len(r.Spec.Resource.Template.Raw)).To(BeNumerically("<=", MaxResourceTemplateBytes))
		g.Expect(CheckTemplates(r)).To(Succeed())
		var err error
		allocated, peak := heapDuring(func() { _, err = Render(context.Background(), r, event(), in) })
		t.Logf("allocated %d KiB, heap grew by at most %d KiB", allocated>>10, peak>>10)
		g.Expect(allocated).To(BeNumerically("<", limit))
		g.Expect(peak).To(BeNumerically("<", limit))
		g.Expect(errors.Is(err, ErrRenderTooLarge)).To(BeTrue(), "%v", err)
	})

	t.Run("a resource template that would hold 1 GiB in variables is InvalidTemplate, and a run renders nothing of it", func(t *testing.T) {
		g := NewWithT(t)
		n := (1 << 30) / (61 << 10)
		r := resourceAction(`{"apiVersion":"v1","kind":"ConfigMap","data":{"k":"` + declarations(n) + `"}}`)
		g.Expect(CheckTemplates(r)).To(MatchError(ContainSubstring("more than the 32768 allowed")))
		var err error
		allocated, peak := heapDuring(func() { _, err = Render(context.Background(), r, event(), in) })
		t.Logf("allocated %d KiB, heap grew by at most %d KiB", allocated>>10, peak>>10)
		g.Expect(err).To(MatchError(ContainSubstring("more than the 32768 allowed")))
		g.Expect(allocated).To(BeNumerically("<", limit))
		g.Expect(peak).To(BeNumerically("<", limit))
	})

	t.Run("the fields of one resource share the budget", func(t *testing.T) {
		g := NewWithT(t)
		// Each field's variables end with it, but what they produced
		// is charged to the one budget: five fields of one declaration
		// each produce 5 x 61 KiB.
		var fields []string
		for i := range 5 {
			fields = append(fields, `"k`+string(rune('0'+i))+`":"{{$a:=json .}}"`)
		}
		r := resourceAction(`{"apiVersion":"v1","kind":"ConfigMap","data":{` + strings.Join(fields, ",") + `}}`)
		_, err := Render(context.Background(), r, event(), in)
		g.Expect(errors.Is(err, ErrRenderTooLarge)).To(BeTrue(), "%v", err)
	})

	t.Run("a template that produces within the budget renders", func(t *testing.T) {
		g := NewWithT(t)
		b, err := Body(context.Background(), &kidv1.HTTPAction{BodyTemplate: `{{$a:=json .event}}{{$b:=printf "%s-%d" .event.type 7}}{"len":{{len $a}},"b":"{{$b}}"}`}, "kid_1", in)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(string(b)).To(MatchRegexp(`^\{"len":6\d{4},"b":"Challenge.StateChange-7"\}$`))
	})
}

func TestFunctionsCheckTheDeadline(t *testing.T) {
	in := bigInput(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// These templates write nothing, so no write can notice the deadline:
	// the functions must.
	for name, tmpl := range map[string]string{
		"json":   `{{$a := json .event}}`,
		"printf": `{{$a := printf "%s" .event.type}}`,
	} {
		t.Run(name+" stops a render whose context is done", func(t *testing.T) {
			g := NewWithT(t)
			_, err := Body(ctx, &kidv1.HTTPAction{BodyTemplate: tmpl}, "kid_1", in)
			g.Expect(err).To(MatchError(context.Canceled))
			r := resourceAction(`{"apiVersion":"v1","kind":"ConfigMap","data":{"k":` + jsonString(tmpl) + `}}`)
			_, err = Render(ctx, r, event(), in)
			g.Expect(err).To(MatchError(context.Canceled))
		})
	}
}

func TestEveryAllowedFunctionIsBuiltinOrCharged(t *testing.T) {
	g := NewWithT(t)
	// A function added to allowedFuncs must be one of text/template's
	// builtins, which produce no new strings, or a producing function that
	// each render wraps.
	wrapped := newRender(context.Background()).funcs()
	for _, name := range allowedFuncs {
		_, isWrapped := wrapped[name]
		g.Expect(isWrapped || slices.Contains(builtinFuncs, name)).To(BeTrue(), name)
	}
	for _, name := range producingFuncs {
		g.Expect(wrapped).To(HaveKey(name))
	}
}
