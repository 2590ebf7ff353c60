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
// many times), so a template is held to a subset that renders in time and
// space linear in its own size, and its output is capped:
//
//   - no range, define, template or block (break and continue only exist
//     inside range);
//   - only the functions in allowedFuncs, of which the two that build strings
//     (json and printf) are bounded;
//   - at most MaxRenderedBytes written in all by one render, and the render
//     stops when its context is done.

// MaxRenderedBytes bounds what one render writes: a request body, or all the
// templated fields of one resource together. Past it the render fails, and
// the run with it (a permanent failure: the same input renders the same).
const MaxRenderedBytes = 64 << 10

// ErrRenderTooLarge is the cause of a render that would write more than
// MaxRenderedBytes.
var ErrRenderTooLarge = fmt.Errorf("rendered output exceeds %d bytes", MaxRenderedBytes)

// printfMaxWidth bounds a printf width or precision: Go's fmt accepts up to a
// million, which pads one value to a megabyte.
const printfMaxWidth = 64

// allowedFuncs are the functions a template may call: comparisons, logic,
// len, index and slice (which return booleans, numbers or parts of their
// input, so cannot amplify it) and the bounded json and printf. Left out:
// call, print, println, html, js and urlquery, which a template over JSON
// data has no need of, and whose output (escaping expands up to sixfold,
// nested) is not bounded.
var allowedFuncs = []string{"and", "eq", "ge", "gt", "index", "json", "le", "len", "lt", "ne", "not", "or", "printf", "slice"}

var funcs = template.FuncMap{
	"json":   boundedJSON,
	"printf": boundedPrintf,
}

// parseTemplate parses text and refuses what could make its rendering
// unbounded. Its errors are the InvalidTemplate messages.
func parseTemplate(name, text string) (*template.Template, error) {
	t, err := template.New(name).Option("missingkey=zero").Funcs(funcs).Parse(text)
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
	// and space bounded by the template and its input.
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

// boundedWriter takes at most *left bytes, shared by the renders of one
// object, and fails once the context is done: text/template cannot be
// cancelled, but it writes often, and each write stops it.
type boundedWriter struct {
	ctx  context.Context
	buf  bytes.Buffer
	left *int
}

func (w *boundedWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	if len(p) > *w.left {
		return 0, ErrRenderTooLarge
	}
	*w.left -= len(p)
	return w.buf.Write(p)
}

// execute renders t over data, charging what it writes to left.
func execute(ctx context.Context, t *template.Template, data any, left *int) ([]byte, error) {
	w := &boundedWriter{ctx: ctx, left: left}
	if err := t.Execute(w, data); err != nil {
		return nil, err
	}
	return w.buf.Bytes(), nil
}

// CheckTemplates parses every template of the action (its bodyTemplate, or
// the string fields of its resource template that hold "{{") and returns the
// first that is invalid or not allowed, for the InvalidTemplate condition.
func CheckTemplates(a *kidv1.KidAction) error {
	switch {
	case a.Spec.HTTP != nil && a.Spec.HTTP.BodyTemplate != "":
		if _, err := parseTemplate("bodyTemplate", a.Spec.HTTP.BodyTemplate); err != nil {
			return fmt.Errorf("bodyTemplate: %w", err)
		}
	case a.Spec.Resource != nil:
		var obj any
		if err := json.Unmarshal(a.Spec.Resource.Template.Raw, &obj); err != nil {
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

// boundedJSON is the json function: the value as JSON, at most
// MaxRenderedBytes. Its input is the event's data or an earlier result, so
// the work is bounded by them before the check.
func boundedJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	if len(b) > MaxRenderedBytes {
		return "", ErrRenderTooLarge
	}
	return string(b), nil
}

// boundedPrintf is printf over strings, numbers and booleans, with verbs that
// do not expand a string (s, v, d, f, e, g, t; flags -, + and 0; a width
// and precision of at most printfMaxWidth). Its output is bounded before it
// is built: a format with a thousand %s and a long value as each argument is
// refused, not formatted.
func boundedPrintf(format string, args ...any) (string, error) {
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
	if bound > MaxRenderedBytes {
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
