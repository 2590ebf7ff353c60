package actions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
	"github.com/kid-operator/kid-operator/internal/outbound"
)

// These tests are the attacks of a KidAction author on the operator and on
// the other tenants it serves: each tries to exceed a bound and shows it
// refused, bounded or harmless.

// nestedAll is a filter of depth loops of ten: 10^depth iterations.
func nestedAll(depth int) string {
	expr := "true"
	for i := depth; i > 0; i-- {
		expr = fmt.Sprintf("[0,1,2,3,4,5,6,7,8,9].all(v%d, %s)", i, expr)
	}
	return expr
}

func TestExpensiveFiltersAreRefusedOrStopped(t *testing.T) {
	in, err := NewInput(event(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, depth := range []int{6, 7, 9} {
		t.Run(fmt.Sprintf("depth %d is InvalidFilter or stops within its budget in under a second", depth), func(t *testing.T) {
			g := NewWithT(t)
			f := NewFilters()
			a := action(nestedAll(depth))
			start := time.Now()
			_, compileErr := f.Compile(a)
			ok, err := f.Matches(context.Background(), a, event(), in)
			g.Expect(time.Since(start)).To(BeNumerically("<", time.Second))
			g.Expect(ok).To(BeFalse())
			if compileErr != nil {
				g.Expect(compileErr).To(MatchError(ContainSubstring("filter is too expensive")))
				return
			}
			if time.Since(start) >= FilterTimeout && errors.Is(err, context.DeadlineExceeded) {
				// A machine busy enough (CI beside a benchmark) reaches
				// the wall-clock bound first; on any other the cost
				// limit must stop it.
				return
			}
			g.Expect(err).To(MatchError(ContainSubstring("cost limit exceeded")))
		})
	}

	t.Run("a loop nested in loops over the data is InvalidFilter at compile time", func(t *testing.T) {
		g := NewWithT(t)
		_, err := NewFilters().Compile(action(`event.data.a.all(x, event.data.a.all(y, event.data.a.all(z, x == y && y == z)))`))
		g.Expect(err).To(MatchError(ContainSubstring("filter is too expensive")))
	})

	t.Run("a filter that walks the data once compiles", func(t *testing.T) {
		g := NewWithT(t)
		_, err := NewFilters().Compile(action(`has(event.data.items) && event.data.items.exists(i, i.id == "x")`))
		g.Expect(err).NotTo(HaveOccurred())
	})

	t.Run("an evaluation stops when its context is done", func(t *testing.T) {
		g := NewWithT(t)
		// Depth 5 is within both budgets; only the deadline stops it.
		f := NewFilters()
		a := action(nestedAll(5))
		_, err := f.Compile(a)
		g.Expect(err).NotTo(HaveOccurred())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		ok, err := f.Matches(ctx, a, event(), in)
		g.Expect(ok).To(BeFalse())
		g.Expect(err).To(MatchError(context.Canceled))
	})
}

func TestFiltersForgetDeletedActions(t *testing.T) {
	g := NewWithT(t)
	f := NewFilters()
	a := action(`true`)
	_, err := f.Compile(a)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.Len()).To(Equal(1))
	f.Forget(types.NamespacedName{Namespace: a.Namespace, Name: a.Name})
	g.Expect(f.Len()).To(Equal(0))

	// A new action of the same name is a new object: never its
	// predecessor's program.
	_, _ = f.Compile(a)
	b := action(`event.data.status ==`)
	b.UID = "uid-2"
	_, err = f.Compile(b)
	g.Expect(err).To(HaveOccurred())
}

func TestTemplatesThatCouldRunAwayAreRefused(t *testing.T) {
	cases := []struct {
		name, tmpl, want string
	}{
		{"range over a billion", `{{range 1000000000}}x{{end}}`, "range is not allowed"},
		{"range inside if", `{{if true}}{{range .event.data}}x{{end}}{{end}}`, "range is not allowed"},
		{"range inside with's else", `{{with .event.nope}}a{{else}}{{range 10}}x{{end}}{{end}}`, "range is not allowed"},
		{"range inside else with", `{{with .event.nope}}a{{else with .event.type}}{{range 10}}x{{end}}{{end}}`, "range is not allowed"},
		{"define", `{{define "x"}}{{template "x"}}{{end}}a`, "define and block are not allowed"},
		{"template", `{{template "x"}}`, "template and block are not allowed"},
		{"block", `{{block "x" .}}y{{end}}`, "not allowed"},
		{"a printf width of a megabyte", `{{printf "%999999999d" 1}}`, "printf width and precision are at most 64"},
		{"a printf width in a parenthesised pipeline", `{{len (printf "%999999d" 1)}}`, "printf width and precision are at most 64"},
		{"a printf width from an argument", `{{printf "%*d" 999999 1}}`, "is not allowed"},
		{"a printf verb that expands a string", `{{printf "%x" .event.type}}`, "is not allowed"},
		{"call", `{{call .event.type}}`, `function "call" is not allowed`},
		{"js, which expands sixfold", `{{js (js (js .event.type))}}`, `function "js" is not allowed`},
		{"print", `{{print .event .event}}`, `function "print" is not allowed`},
	}
	in, err := NewInput(event(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name+" is InvalidTemplate, in a body or a resource", func(t *testing.T) {
			g := NewWithT(t)
			a := action("")
			a.Spec.HTTP.BodyTemplate = tc.tmpl
			g.Expect(CheckTemplates(a)).To(MatchError(ContainSubstring(tc.want)))
			start := time.Now()
			_, err := Body(context.Background(), a.Spec.HTTP, "kid_1", in)
			g.Expect(err).To(MatchError(ContainSubstring(tc.want)), "a run refuses it too")
			g.Expect(time.Since(start)).To(BeNumerically("<", time.Second))

			r := resourceAction(`{"apiVersion":"v1","kind":"ConfigMap","data":{"k":` + jsonString(tc.tmpl) + `}}`)
			g.Expect(CheckTemplates(r)).To(MatchError(ContainSubstring(tc.want)))
			_, err = Render(context.Background(), r, event(), in)
			g.Expect(err).To(MatchError(ContainSubstring(tc.want)))
		})
	}
}

func TestTemplateOutputIsCapped(t *testing.T) {
	e := event()
	e.Spec.Data = &apiextensionsv1.JSON{Raw: []byte(`{"big":"` + strings.Repeat("a", 60<<10) + `"}`)}
	in, err := NewInput(e, nil)
	if err != nil {
		t.Fatal(err)
	}
	big := `{{.event.data.big}}`
	cases := []struct{ name, tmpl string }{
		{"a value written twice", big + big},
		{"a value written eight hundred times (a 16 KiB template)", strings.Repeat(big, 800)},
		{"json of json of the event", `{{json (json (json .event))}}{{json (json (json .event))}}`},
		{"a printf of a long value eight hundred times", `{{printf "` + strings.Repeat("%s", 800) + `"` + strings.Repeat(" .event.data.big", 800) + `}}`},
		{"a printf of a printf held in variables", `{{$a := printf "%s%s" .event.data.big .event.data.big}}{{$b := printf "%s%s" $a $a}}{{$b}}`},
		{"a printf of an object", `{{printf "%v" .event}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name+" is cut at 64 KiB", func(t *testing.T) {
			g := NewWithT(t)
			a := &kidv1.HTTPAction{BodyTemplate: tc.tmpl}
			g.Expect(CheckTemplates(&kidv1.KidAction{Spec: kidv1.KidActionSpec{HTTP: a}})).To(Succeed(), "allowed: only its output is too large")
			start := time.Now()
			b, err := Body(context.Background(), a, "kid_1", in)
			g.Expect(time.Since(start)).To(BeNumerically("<", time.Second))
			g.Expect(b).To(BeEmpty())
			g.Expect(err).To(HaveOccurred())
			if !strings.Contains(tc.name, "object") {
				g.Expect(errors.Is(err, ErrRenderTooLarge)).To(BeTrue(), "%v", err)
			}
		})
	}

	t.Run("the fields of one resource share the cap", func(t *testing.T) {
		g := NewWithT(t)
		var fields []string
		for i := range 3 {
			fields = append(fields, fmt.Sprintf(`"k%d":"{{.event.data.big}}"`, i))
		}
		r := resourceAction(`{"apiVersion":"v1","kind":"ConfigMap","data":{` + strings.Join(fields, ",") + `}}`)
		_, err := Render(context.Background(), r, e, in)
		g.Expect(errors.Is(err, ErrRenderTooLarge)).To(BeTrue(), "%v", err)
	})

	t.Run("a reasonable template renders", func(t *testing.T) {
		g := NewWithT(t)
		b, err := Body(context.Background(), &kidv1.HTTPAction{BodyTemplate: `{{printf "%s-%-8s|%.2f" .event.type "x" 1.5}} {{if eq .event.data.big ""}}empty{{else}}{{len .event.data.big}}{{end}}`}, "kid_1", in)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(string(b)).To(Equal("Challenge.StateChange-x       |1.50 61440"))
	})
}

func TestRenderStopsWhenTheAttemptTimesOut(t *testing.T) {
	g := NewWithT(t)
	in, err := NewInput(event(), nil)
	g.Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Body(ctx, &kidv1.HTTPAction{BodyTemplate: `{{.event.type}}`}, "kid_1", in)
	g.Expect(err).To(MatchError(context.Canceled))
}

func TestHTTPTimeoutIsClamped(t *testing.T) {
	g := NewWithT(t)
	g.Expect(Timeout(&kidv1.HTTPAction{})).To(Equal(DefaultHTTPTimeout))
	g.Expect(Timeout(&kidv1.HTTPAction{Timeout: &metav1.Duration{Duration: 5 * time.Second}})).To(Equal(5 * time.Second))
	g.Expect(Timeout(&kidv1.HTTPAction{Timeout: &metav1.Duration{Duration: time.Hour}})).To(Equal(MaxHTTPTimeout))
}

func TestAnAttemptIsBoundedByItsTimeout(t *testing.T) {
	g := NewWithT(t)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	in, err := NewInput(event(), nil)
	g.Expect(err).NotTo(HaveOccurred())
	a := &kidv1.HTTPAction{URL: srv.URL, Timeout: &metav1.Duration{Duration: 300 * time.Millisecond}}
	start := time.Now()
	out := Deliver(context.Background(), loopbackClient(), a, "kid_1", in, nil, time.Now())
	g.Expect(time.Since(start)).To(BeNumerically("<", time.Second))
	g.Expect(out.Err).To(MatchError("POST failed: timed out"))
	g.Expect(out.Permanent).To(BeFalse(), "a slow target is retried")
}

// loopbackClient is the outbound client with loopback allowed, as an
// administrator allows an in-cluster range.
func loopbackClient() *http.Client {
	return outbound.New(outbound.Options{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
}

// hitCounter is a loopback server that counts its requests and answers with
// a body that must never be repeated.
func hitCounter(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "internal-secret-answer")
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestPostRefusesInternalAddressesWithoutNamingThem(t *testing.T) {
	internal, hits := hitCounter(t)
	_, port, _ := net.SplitHostPort(internal.Listener.Addr().String())
	cases := []struct{ name, url string }{
		{"a loopback server is refused", internal.URL + "/admin"},
		{"the cloud metadata service is refused", "http://169.254.169.254/latest/meta-data/"},
		{"loopback written as IPv4-mapped IPv6 is refused", "http://[::ffff:127.0.0.1]:" + port + "/"},
	}
	for _, tc := range cases {
		t.Run(tc.name+" with a message that names no address", func(t *testing.T) {
			g := NewWithT(t)
			a := &kidv1.HTTPAction{URL: tc.url, Timeout: &metav1.Duration{Duration: 2 * time.Second}}
			start := time.Now()
			out := Post(context.Background(), outbound.New(outbound.Options{}), a, "kid_1", []byte(`{}`), []byte("s"), time.Now())
			g.Expect(time.Since(start)).To(BeNumerically("<", time.Second), "refused before any dial")
			g.Expect(out.Err).To(HaveOccurred())
			g.Expect(errors.Is(out.Err, outbound.ErrAddressRefused)).To(BeTrue())
			g.Expect(out.Permanent).To(BeTrue())
			g.Expect(out.Err.Error()).To(ContainSubstring("refused by the outbound guard"))
			g.Expect(out.Err.Error()).NotTo(Or(ContainSubstring("127.0.0.1"), ContainSubstring("169.254"), ContainSubstring(port), ContainSubstring("::ffff")))
		})
	}
	NewWithT(t).Expect(hits.Load()).To(BeZero())
}

func TestPostNeverFollowsRedirects(t *testing.T) {
	second, hits := hitCounter(t)
	_, secondPort, _ := net.SplitHostPort(second.Listener.Addr().String())
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		for name, to := range map[string]string{"another loopback handler": second.URL + "/internal", "the cloud metadata service": "http://169.254.169.254/latest/meta-data/iam/"} {
			t.Run(fmt.Sprintf("a %d to %s fails for good without following it", code, name), func(t *testing.T) {
				g := NewWithT(t)
				first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("Location", to)
					w.WriteHeader(code)
					_, _ = io.WriteString(w, "redirect-body-secret")
				}))
				defer first.Close()
				a := &kidv1.HTTPAction{URL: first.URL}
				out := Post(context.Background(), loopbackClient(), a, "kid_1", []byte(`{}`), []byte("s"), time.Now())
				g.Expect(out.Status).To(Equal(code))
				g.Expect(out.Permanent).To(BeTrue(), "a redirect is a configuration to fix, not a failure to retry")
				g.Expect(out.Err).To(MatchError(ContainSubstring("a redirect, which kid-operator does not follow")))
				g.Expect(out.Err.Error()).NotTo(Or(ContainSubstring(secondPort), ContainSubstring("169.254"),
					ContainSubstring("redirect-body-secret"), ContainSubstring("internal-secret-answer"), ContainSubstring("/internal")))
			})
		}
	}
	NewWithT(t).Expect(hits.Load()).To(BeZero(), "the redirect's target is never called")

	t.Run("a 3xx handed back by a client that does not refuse it is permanent too", func(t *testing.T) {
		g := NewWithT(t)
		first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Location", second.URL)
			w.WriteHeader(http.StatusSeeOther)
		}))
		defer first.Close()
		c := first.Client()
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		out := Post(context.Background(), c, &kidv1.HTTPAction{URL: first.URL}, "kid_1", []byte(`{}`), nil, time.Now())
		g.Expect(out.Permanent).To(BeTrue())
		g.Expect(out.Err).To(MatchError(ContainSubstring("303, a redirect")))
		g.Expect(hits.Load()).To(BeZero())
	})
}

func TestPostErrorsNameNoAddress(t *testing.T) {
	g := NewWithT(t)
	// A closed port on an allowed address: the transport's own message
	// would say "dial tcp 127.0.0.1:PORT: connect: connection refused".
	l, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	addr := l.Addr().String()
	g.Expect(l.Close()).To(Succeed())
	out := Post(context.Background(), loopbackClient(), &kidv1.HTTPAction{URL: "http://" + addr + "/"}, "kid_1", []byte(`{}`), nil, time.Now())
	g.Expect(out.Err).To(MatchError("POST failed: connection refused"))
	g.Expect(out.Permanent).To(BeFalse())
}

func resourceAction(tmpl string) *kidv1.KidAction {
	return &kidv1.KidAction{
		ObjectMeta: metav1.ObjectMeta{Name: "make", Namespace: "games"},
		Spec:       kidv1.KidActionSpec{Resource: &kidv1.ResourceAction{Template: apiextensionsv1.JSON{Raw: []byte(tmpl)}}},
	}
}

func jsonString(s string) string {
	b, _ := boundedJSON(s, MaxRenderedBytes)
	return b
}
