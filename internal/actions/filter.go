// Package actions runs KidActions: matching an event against an action's
// products, event types and CEL filter, and carrying out its http or resource
// effect. It decides nothing about retries' bookkeeping; the KidEvent
// controller records each run in the event's status.
package actions

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"github.com/google/cel-go/cel"
	"k8s.io/apimachinery/pkg/types"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// Input is what a filter, a body template and a resource template see.
type Input struct {
	// Event: name, type, product, subject, data, receivedAt, signedAt.
	Event map[string]any `json:"event"`
	// User: the KidUser status after the fold (empty for events folded into
	// no user).
	User map[string]any `json:"user"`
}

// NewInput builds the input of an event and its user's status.
func NewInput(e *kidv1.KidEvent, user *kidv1.KidUserStatus) (*Input, error) {
	var data any = map[string]any{}
	if e.Spec.Data != nil {
		if err := json.Unmarshal(e.Spec.Data.Raw, &data); err != nil {
			return nil, fmt.Errorf("decoding event data: %w", err)
		}
	}
	subject, err := toMap(e.Spec.Subject)
	if err != nil {
		return nil, err
	}
	in := &Input{
		Event: map[string]any{
			"name":       e.Name,
			"type":       e.Spec.EventType,
			"product":    e.Spec.ProductRef.Name,
			"subject":    subject,
			"data":       data,
			"receivedAt": e.Spec.ReceivedAt.UTC().Format("2006-01-02T15:04:05Z"),
		},
		User: map[string]any{},
	}
	if user != nil {
		if in.User, err = toMap(user); err != nil {
			return nil, err
		}
	}
	return in, nil
}

func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	return m, json.Unmarshal(b, &m)
}

// Filters compiles CEL filters once per KidAction generation and keeps them.
type Filters struct {
	env  *cel.Env
	mu   sync.Mutex
	byID map[types.UID]compiled
}

type compiled struct {
	generation int64
	program    cel.Program
	err        error
}

// NewFilters returns an empty filter cache.
func NewFilters() *Filters {
	env, err := cel.NewEnv(
		cel.Variable("event", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("user", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		panic(fmt.Sprintf("building the CEL environment: %v", err))
	}
	return &Filters{env: env, byID: map[types.UID]compiled{}}
}

// Compile returns the action's compiled filter (nil when it has none), or the
// compiler's message when the expression is invalid or not boolean.
func (f *Filters) Compile(a *kidv1.KidAction) (cel.Program, error) {
	if a.Spec.Filter == "" {
		return nil, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.byID[a.UID]; ok && c.generation == a.Generation {
		return c.program, c.err
	}
	c := compiled{generation: a.Generation}
	ast, iss := f.env.Compile(a.Spec.Filter)
	switch {
	case iss.Err() != nil:
		c.err = iss.Err()
	case ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType:
		c.err = fmt.Errorf("filter must be a boolean expression, not %s", ast.OutputType())
	default:
		c.program, c.err = f.env.Program(ast)
	}
	f.byID[a.UID] = c
	return c.program, c.err
}

// Forget drops a deleted action's program.
func (f *Filters) Forget(uid types.UID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.byID, uid)
}

// Matches reports whether the action applies to the event: its product and
// type are listed (or the lists are empty) and its filter is true. An
// evaluation error (say, a field the event lacks) is a no-match, returned so
// that it can be recorded.
func (f *Filters) Matches(a *kidv1.KidAction, e *kidv1.KidEvent, in *Input) (bool, error) {
	if len(a.Spec.Products) > 0 && !slices.Contains(a.Spec.Products, e.Spec.ProductRef.Name) {
		return false, nil
	}
	if len(a.Spec.EventTypes) > 0 && !slices.Contains(a.Spec.EventTypes, e.Spec.EventType) {
		return false, nil
	}
	prg, err := f.Compile(a)
	if err != nil || prg == nil {
		return err == nil, err
	}
	out, _, err := prg.Eval(map[string]any{"event": in.Event, "user": in.User})
	if err != nil {
		return false, fmt.Errorf("evaluating filter: %w", err)
	}
	ok, isBool := out.Value().(bool)
	if !isBool {
		return false, fmt.Errorf("filter returned %T, not a bool", out.Value())
	}
	return ok, nil
}
