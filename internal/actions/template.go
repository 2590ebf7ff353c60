package actions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// Templates (an http action's bodyTemplate, the string fields of a resource
// action's template) are written by a namespace user and rendered in the
// operator. Go's text/template can loop ({{range 1000000000}}), recurse
// ({{define}} with {{template}}) and amplify (a printf width, a value printed
// many times, a function result kept in a variable), so a template is held
// to a subset that renders in time and space linear in its own size, and
// what one render produces is bounded:
//
//   - a body template is at most MaxBodyTemplateBytes, a resource template
//     at most MaxResourceTemplateBytes;
//   - no range, define, template or block (break and continue only exist
//     inside range);
//   - only the functions in allowedFuncs; the two that build strings (json
//     and printf) are bounded, and every byte they return is charged to the
//     render's budget, whether it is written, kept in a variable or dropped;
//   - at most MaxRenderedBytes written, and at most RenderBudget produced
//     (written and returned by functions) in all by one render;
//   - the render stops when its context is done: every write and every
//     function call checks it.

// MaxRenderedBytes bounds what one render writes: a request body, or all the
// templated fields of one resource together. Past it the render fails, and
// the run with it (a permanent failure: the same input renders the same).
const MaxRenderedBytes = 64 << 10

// RenderBudget bounds every byte one render produces: what it writes and
// every string its functions return. A variable keeps what a function
// returned until the render ends, and {{$a := json .}} writes nothing, so
// without this bound a 16 KiB template could hold a thousand 64 KiB strings
// at once. Four times the output leaves room for the results a template
// compares, measures or writes.
const RenderBudget = 4 * MaxRenderedBytes

// MaxBodyTemplateBytes bounds an http action's bodyTemplate (the CRD's
// maxLength; checked in code too, for objects stored before it).
const MaxBodyTemplateBytes = 16 << 10

// MaxResourceTemplateBytes bounds a resource action's template, as JSON. The
// API server cannot check it: the template is schemaless, and CEL sees none
// of a schemaless object's fields. Parsing a template costs memory linear in
// its size, and every worker may parse one at once; a Job with its pod
// template fits in a few KiB.
const MaxResourceTemplateBytes = 32 << 10

// ErrRenderTooLarge is the cause of a render that would write more than
// MaxRenderedBytes or produce more than RenderBudget.
var ErrRenderTooLarge = fmt.Errorf("the render is too large: it may write %d bytes, and produce %d in all (output and function results, kept in variables or not)", MaxRenderedBytes, RenderBudget)

// printfMaxWidth bounds a printf width or precision: Go's fmt accepts up to a
// million, which pads one value to a megabyte.
const printfMaxWidth = 64

// Functions a template may call. producingFuncs build new strings, and are
// wrapped per render (render.funcs) so that their results are charged to its
// budget and they check its deadline. The others are text/template's
// builtins, which return booleans, numbers or their arguments and parts of
// them (index, slice), so they hold no memory a template's input does not
// already hold. Left out: call, print, println, html, js and urlquery, which
// a template over JSON data has no need of, and whose output (escaping
// expands up to sixfold, nested) is not bounded.
var (
	producingFuncs = []string{"json", "printf"}
	builtinFuncs   = []string{"and", "eq", "ge", "gt", "index", "le", "len", "lt", "ne", "not", "or", "slice"}
	allowedFuncs   = slices.Sorted(slices.Values(append(slices.Clone(builtinFuncs), producingFuncs...)))
)

// parseFuncs declare the producing functions for parsing; each render
// replaces them with its own (render.funcs).
var parseFuncs = template.FuncMap{
	"json":   func(any) (string, error) { return "", errors.New("json outside a render") },
	"printf": func(string, ...any) (string, error) { return "", errors.New("printf outside a render") },
}

// parseTemplate parses text and refuses what could make its rendering
// unbounded. Its errors are the InvalidTemplate messages.
func parseTemplate(name, text string) (*template.Template, error) {
	t, err := template.New(name).Option("missingkey=zero").Funcs(parseFuncs).Parse(text)
	if err != nil {
		return nil, err
	}
	for _, other := range t.Templates() {
		if other.Name() != name {
			return nil, fmt.Errorf("define and block are not allowed (found %q)", other.Name())
		}
	}
	if t.Tree == nil {
		return t, nil
	}
	return t, checkNode(t.Root)
}

// checkNode walks a parse tree, into every list, branch and pipeline.
func checkNode(n parse.Node) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := checkNode(c); err != nil {
				return err
			}
		}
	case *parse.ActionNode:
		return checkNode(n.Pipe)
	case *parse.IfNode:
		return checkBranch(&n.BranchNode)
	case *parse.WithNode:
		return checkBranch(&n.BranchNode)
	case *parse.RangeNode:
		return errors.New("range is not allowed: a template renders each field once, it does not loop (use json to write a list)")
	case *parse.TemplateNode:
		return errors.New("template and block are not allowed")
	case *parse.BreakNode, *parse.ContinueNode:
		return errors.New("break and continue are not allowed")
	case *parse.PipeNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Cmds {
			if err := checkNode(c); err != nil {
				return err
			}
		}
	case *parse.CommandNode:
		// A constant printf format is checked now, so that it is an
		// InvalidTemplate rather than a failed run; any other format is
		// checked when it is rendered.
		if len(n.Args) > 1 {
			if fn, ok := n.Args[0].(*parse.IdentifierNode); ok && fn.Ident == "printf" {
				if format, ok := n.Args[1].(*parse.StringNode); ok {
					if _, err := checkFormat(format.Text); err != nil {
						return err
					}
				}
			}
		}
		for _, arg := range n.Args {
			if err := checkNode(arg); err != nil {
				return err
			}
		}
	case *parse.ChainNode:
		return checkNode(n.Node)
	case *parse.IdentifierNode:
		if !slices.Contains(allowedFuncs, n.Ident) {
			return fmt.Errorf("function %q is not allowed (allowed: %s)", n.Ident, strings.Join(allowedFuncs, ", "))
		}
	}
	// Text, comments, fields, variables, dot and constants render in time
	// and space bounded by the template and its input. A variable holds
	// its input, a constant of the template, a builtin's result (which
	// adds no memory) or a producing function's (charged to the budget).
	return nil
}

func checkBranch(b *parse.BranchNode) error {
	if err := checkNode(b.Pipe); err != nil {
		return err
	}
	if err := checkNode(b.List); err != nil {
		return err
	}
	return checkNode(b.ElseList)
}

// render is one render's budget and deadline, shared by the templates of
// one object (the fields of a resource).
type render struct {
	ctx context.Context
	// written counts the bytes written, at most MaxRenderedBytes.
	written int
	// produced counts the bytes written and returned by functions, at
	// most RenderBudget.
	produced int
}

func newRender(ctx context.Context) *render { return &render{ctx: ctx} }

// charge counts n bytes produced. It fails once the budget is spent or the
// context is done.
func (r *render) charge(n int) error {
	if err := r.ctx.Err(); err != nil {
		return err
	}
	if n > RenderBudget-r.produced {
		return ErrRenderTooLarge
	}
	r.produced += n
	return nil
}

// call runs a producing function: it checks the deadline on entry and on
// exit, lets the function build at most what is left of the budget, and
// charges what it returned.
func (r *render) call(f func(limit int) (string, error)) (string, error) {
	if err := r.ctx.Err(); err != nil {
		return "", err
	}
	s, err := f(RenderBudget - r.produced)
	if err != nil {
		return "", err
	}
	return s, r.charge(len(s))
}

// funcs are the producing functions of this render.
func (r *render) funcs() template.FuncMap {
	return template.FuncMap{
		"json": func(v any) (string, error) {
			return r.call(func(limit int) (string, error) { return boundedJSON(v, limit) })
		},
		"printf": func(format string, args ...any) (string, error) {
			return r.call(func(limit int) (string, error) { return boundedPrintf(limit, format, args...) })
		},
	}
}

// output collects what one template of a render writes. text/template
// cannot be cancelled, but it writes often, and each write stops it once
// the budget is spent or the context is done.
type output struct {
	r   *render
	buf bytes.Buffer
}

func (w *output) Write(p []byte) (int, error) {
	if len(p) > MaxRenderedBytes-w.r.written {
		return 0, ErrRenderTooLarge
	}
	if err := w.r.charge(len(p)); err != nil {
		return 0, err
	}
	w.r.written += len(p)
	return w.buf.Write(p)
}

// execute renders t over data within r.
func (r *render) execute(t *template.Template, data any) ([]byte, error) {
	w := &output{r: r}
	if err := t.Funcs(r.funcs()).Execute(w, data); err != nil {
		return nil, err
	}
	return w.buf.Bytes(), nil
}

// CheckTemplates parses every template of the action (its bodyTemplate or
// dataTemplate, or the string fields of its resource template that hold
// "{{") and returns the first that is invalid or not allowed, for the
// InvalidTemplate condition.
func CheckTemplates(a *kidv1.KidAction) error {
	switch h := HTTPOf(a); {
	case h != nil && h.BodyTemplate != "":
		field := "bodyTemplate"
		if a.Spec.CloudEvent != nil {
			field = "dataTemplate"
		}
		if err := checkSize(field, h.BodyTemplate, MaxBodyTemplateBytes); err != nil {
			return err
		}
		if _, err := parseTemplate(field, h.BodyTemplate); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
	case a.Spec.Resource != nil:
		raw := a.Spec.Resource.Template.Raw
		if err := checkSize("template", raw, MaxResourceTemplateBytes); err != nil {
			return err
		}
		var obj any
		if err := json.Unmarshal(raw, &obj); err != nil {
			return fmt.Errorf("decoding template: %w", err)
		}
		return walkStrings(obj, func(s string) error {
			_, err := parseTemplate("field", s)
			if err != nil {
				return fmt.Errorf("template %s: %w", quoteShort(s), err)
			}
			return nil
		})
	}
	return nil
}

// checkSize refuses a template longer than limit.
func checkSize[T string | []byte](field string, template T, limit int) error {
	if len(template) > limit {
		return fmt.Errorf("%s is %d bytes, more than the %d allowed", field, len(template), limit)
	}
	return nil
}

// walkStrings calls f on every string value holding "{{".
func walkStrings(v any, f func(string) error) error {
	switch t := v.(type) {
	case map[string]any:
		for _, inner := range t {
			if err := walkStrings(inner, f); err != nil {
				return err
			}
		}
	case []any:
		for _, inner := range t {
			if err := walkStrings(inner, f); err != nil {
				return err
			}
		}
	case string:
		if strings.Contains(t, "{{") {
			return f(t)
		}
	}
	return nil
}

// quoteShort quotes a template for a message, cut to 64 bytes: a condition
// message names the field, it does not repeat it.
func quoteShort(s string) string {
	if len(s) > 64 {
		return fmt.Sprintf("%q…", s[:64])
	}
	return fmt.Sprintf("%q", s)
}

// boundedJSON is the json function: the value as JSON, at most limit bytes.
// Its input is the event's data or an earlier result, so the work is
// bounded by them before the check.
func boundedJSON(v any, limit int) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	if len(b) > limit {
		return "", ErrRenderTooLarge
	}
	return string(b), nil
}

// boundedPrintf is printf over strings, numbers and booleans, with verbs that
// do not expand a string (s, v, d, f, e, g, t; flags -, + and 0; a width
// and precision of at most printfMaxWidth). Its output is bounded by limit
// before it is built: a format with a thousand %s and a long value as each
// argument is refused, not formatted.
func boundedPrintf(limit int, format string, args ...any) (string, error) {
	verbs, err := checkFormat(format)
	if err != nil {
		return "", err
	}
	// Each verb adds at most its width, or a "%!v(MISSING)"-style note.
	bound := len(format) + verbs*(printfMaxWidth+16)
	for _, arg := range args {
		// A value in a "%!d(string=…)" or "%!(EXTRA …)" note costs a
		// little more than itself.
		const note = 32
		switch v := arg.(type) {
		case string:
			bound += len(v) + note
		case nil, bool:
			bound += note
		default:
			switch reflect.ValueOf(v).Kind() {
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
				reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
				reflect.Float32, reflect.Float64:
				// The longest number fmt writes: a float64 with %f,
				// 309 digits and the precision.
				bound += 512
			default:
				return "", fmt.Errorf("printf formats strings, numbers and booleans, not %T: use json for objects and lists", arg)
			}
		}
	}
	if bound > limit {
		return "", ErrRenderTooLarge
	}
	return fmt.Sprintf(format, args...), nil
}

// checkFormat returns the number of verbs of a printf format, or why it is
// refused.
func checkFormat(format string) (int, error) {
	verbs := 0
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		i++
		if i < len(format) && format[i] == '%' {
			continue
		}
		verbs++
		// num is the width, then the precision; the flag 0 reads as a
		// leading zero of the width, which is harmless.
		num := 0
	spec:
		for ; i < len(format); i++ {
			c := format[i]
			switch {
			case c >= '0' && c <= '9':
				if num = num*10 + int(c-'0'); num > printfMaxWidth {
					return 0, fmt.Errorf("printf width and precision are at most %d", printfMaxWidth)
				}
			case c == '.':
				num = 0
			case c == '-' || c == '+':
			case strings.IndexByte("svdfegt", c) >= 0:
				break spec
			default:
				return 0, fmt.Errorf("printf verb or flag %q is not allowed (allowed: %%s %%v %%d %%f %%e %%g %%t, flags - + 0, width and precision up to %d)", c, printfMaxWidth)
			}
		}
	}
	return verbs, nil
}
