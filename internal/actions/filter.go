// Package actions runs KidActions: matching an event against an action's
// products, event types and CEL filter, and carrying out its http, resource
// or cloudEvent effect. It decides nothing about retries' bookkeeping; the KidEvent
// controller records each run in the event's status.
package actions

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
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
	// UserName is the name of the KidUser that User describes, "" for
	// none: a CloudEvent's subject. Filters and templates do not see it.
	UserName string `json:"-"`
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

// Bounds of a filter. An action's author is a namespace user, and its filter
// runs in the operator for every event of the namespace: it must not cost the
// operator (or the other tenants it serves) more than a small, fixed share.
const (
	// FilterCostLimit is the runtime cost (CEL's unit, roughly one simple
	// operation) after which an evaluation stops with an error. A filter
	// that reads a few fields costs tens; one that walks a list of the
	// event's data costs thousands.
	FilterCostLimit = 1_000_000
	// FilterEstimateLimit is the largest worst-case cost, estimated at
	// compile time, that a filter may have; above it the filter is invalid
	// (InvalidFilter) before it ever runs. As in Kubernetes' own CEL
	// validation rules it is ten times the runtime limit: the estimate
	// assumes every input at its largest, so it refuses only expressions
	// that explode (loops nested in loops), and the runtime limit stops the
	// rest on the inputs that are actually too large.
	FilterEstimateLimit = 10 * FilterCostLimit
	// FilterTimeout bounds one evaluation in wall-clock time, a second
	// guard beside the cost limit (a cost unit is not a fixed time).
	FilterTimeout = 250 * time.Millisecond
	// filterInterruptEvery is how many comprehension iterations pass
	// between two checks of the deadline.
	filterInterruptEvery = 100
	// inputSizeEstimate is the size assumed, for the compile-time estimate,
	// of any list, map or string in `event` or `user` whose size CEL cannot
	// know. k-ID's payloads hold a few fields and short lists, and the
	// receiver takes at most 64 KiB by default; 1024 is far above any real
	// list yet small enough that a loop nested in loops shows in the
	// estimate.
	inputSizeEstimate = 1024
)

// Filters compiles CEL filters once per KidAction generation and keeps them,
// keyed by the action's namespace and name, so that a deleted action's program
// can be forgotten when only its key is known (a NotFound in a reconcile).
type Filters struct {
	env  *cel.Env
	mu   sync.Mutex
	byID map[types.NamespacedName]compiled
}

type compiled struct {
	uid        types.UID
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
	return &Filters{env: env, byID: map[types.NamespacedName]compiled{}}
}

// Compile returns the action's compiled filter (nil when it has none), or the
// compiler's message when the expression is invalid, not boolean, or may cost
// more than FilterEstimateLimit.
func (f *Filters) Compile(a *kidv1.KidAction) (cel.Program, error) {
	if a.Spec.Filter == "" {
		return nil, nil
	}
	key := types.NamespacedName{Namespace: a.Namespace, Name: a.Name}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.byID[key]; ok && c.uid == a.UID && c.generation == a.Generation {
		return c.program, c.err
	}
	c := compiled{uid: a.UID, generation: a.Generation}
	c.program, c.err = f.compile(a.Spec.Filter)
	f.byID[key] = c
	return c.program, c.err
}

func (f *Filters) compile(expr string) (cel.Program, error) {
	ast, iss := f.env.Compile(expr)
	if iss.Err() != nil {
		return nil, iss.Err()
	}
	if ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType {
		return nil, fmt.Errorf("filter must be a boolean expression, not %s", ast.OutputType())
	}
	est, err := f.env.EstimateCost(ast, boundedInput{})
	if err != nil {
		return nil, fmt.Errorf("estimating the filter's cost: %w", err)
	}
	if est.Max > FilterEstimateLimit {
		return nil, fmt.Errorf("filter is too expensive: its worst case is estimated at %d cost units, the limit is %d (avoid nesting loops such as all/exists/map over lists)",
			est.Max, FilterEstimateLimit)
	}
	return f.env.Program(ast,
		cel.CostLimit(FilterCostLimit),
		cel.InterruptCheckFrequency(filterInterruptEvery),
	)
}

// boundedInput is the size estimator of the compile-time cost estimate: any
// list, map or string whose size CEL cannot know holds at most
// inputSizeEstimate elements. It gives no call costs of its own.
type boundedInput struct{}

func (boundedInput) EstimateSize(checker.AstNode) *checker.SizeEstimate {
	return &checker.SizeEstimate{Min: 0, Max: inputSizeEstimate}
}

func (boundedInput) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// Forget drops a deleted action's program.
func (f *Filters) Forget(key types.NamespacedName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.byID, key)
}

// Len is the number of actions whose programs are kept (for tests and
// metrics).
func (f *Filters) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.byID)
}

// Matches reports whether the action applies to the event: its product and
// type are listed (or the lists are empty) and its filter is true. An
// evaluation error (say, a field the event lacks, or a filter that exceeds
// its cost limit or FilterTimeout) is a no-match, returned so that it can be
// recorded.
func (f *Filters) Matches(ctx context.Context, a *kidv1.KidAction, e *kidv1.KidEvent, in *Input) (bool, error) {
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
	ctx, cancel := context.WithTimeout(ctx, FilterTimeout)
	defer cancel()
	out, _, err := prg.ContextEval(ctx, map[string]any{"event": in.Event, "user": in.User})
	if err != nil {
		return false, fmt.Errorf("evaluating filter: %w", err)
	}
	ok, isBool := out.Value().(bool)
	if !isBool {
		return false, fmt.Errorf("filter returned %T, not a bool", out.Value())
	}
	return ok, nil
}
