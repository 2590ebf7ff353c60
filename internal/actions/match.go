package actions

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	kidv1 "github.com/kid-operator/kid-operator/api/v1alpha1"
)

// Bounds of one event's matching. Each filter is bounded (FilterCostLimit,
// FilterTimeout), but a namespace may hold any number of KidActions, and an
// event evaluates them all on one of the KidEvent controller's workers, which
// every namespace shares: without a bound on the whole, a tenant with hundreds
// of costly filters holds a worker for minutes per event.
const (
	// DefaultFilterBudget is the wall-clock time all of a namespace's
	// filters share for one event: four filters at FilterTimeout, or
	// thousands of ordinary ones (a few microseconds each).
	DefaultFilterBudget = time.Second
	// MinFilterBudget and MaxFilterBudget bound --action-filter-budget:
	// at least one filter's FilterTimeout, and at most what a shared
	// worker may be held by one event's filters.
	MinFilterBudget = FilterTimeout
	MaxFilterBudget = 10 * time.Second
	// DefaultMaxActions is how many of a namespace's KidActions, in name
	// order, an event evaluates; the rest are never evaluated, and say so
	// (their Ready is False, reason ActionLimitExceeded).
	DefaultMaxActions = 100
	// MaxMaxActions bounds --max-actions-per-namespace.
	MaxMaxActions = 1000
)

// MatchLimits bound the filters one event evaluates.
type MatchLimits struct {
	// Budget is the wall-clock time all the filters share; 0 means
	// DefaultFilterBudget.
	Budget time.Duration
	// MaxActions is how many actions, in name order, are evaluated; 0
	// means DefaultMaxActions.
	MaxActions int
}

func (l MatchLimits) withDefaults() MatchLimits {
	if l.Budget <= 0 {
		l.Budget = DefaultFilterBudget
	}
	if l.MaxActions <= 0 {
		l.MaxActions = DefaultMaxActions
	}
	return l
}

// Result is the outcome of one action's match.
type Result struct {
	Action  *kidv1.KidAction
	Matched bool
	// Err says why the filter could not decide (it does not compile, it
	// failed or exceeded its own limits): a no-match to record.
	Err error
}

// Matching is what an event's matching found: the actions evaluated, in
// name order, and the names of those it did not evaluate.
type Matching struct {
	Results []Result
	// OverLimit are the actions past MaxActions in name order: the same
	// ones for every event until the namespace's actions change.
	OverLimit []string
	// OutOfBudget are the actions left when the budget was spent, the one
	// whose filter it cut short first.
	OutOfBudget []string
	// Spent is the time the filters took.
	Spent time.Duration
}

// MatchAll matches an event against a namespace's actions, in name order,
// within lim: the first MaxActions only, and none once Budget is spent. An
// action whose filter the budget cut short is not evaluated, rather than
// failed: it did nothing wrong on its own.
func (f *Filters) MatchAll(ctx context.Context, list []kidv1.KidAction, e *kidv1.KidEvent, in *Input, lim MatchLimits) Matching {
	lim = lim.withDefaults()
	sorted := make([]*kidv1.KidAction, len(list))
	for i := range list {
		sorted[i] = &list[i]
	}
	slices.SortFunc(sorted, func(a, b *kidv1.KidAction) int { return strings.Compare(a.Name, b.Name) })
	var m Matching
	if len(sorted) > lim.MaxActions {
		for _, a := range sorted[lim.MaxActions:] {
			m.OverLimit = append(m.OverLimit, a.Name)
		}
		sorted = sorted[:lim.MaxActions]
	}
	start := time.Now()
	budget, cancel := context.WithTimeout(ctx, lim.Budget)
	defer cancel()
	for i, a := range sorted {
		if budget.Err() != nil {
			m.OutOfBudget = names(sorted[i:])
			break
		}
		ok, err := f.Matches(budget, a, e, in)
		if err != nil && errors.Is(budget.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			m.OutOfBudget = names(sorted[i:])
			break
		}
		m.Results = append(m.Results, Result{Action: a, Matched: ok, Err: err})
	}
	m.Spent = time.Since(start)
	return m
}

func names(list []*kidv1.KidAction) []string {
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.Name
	}
	return out
}

// ActionPosition is the place of name among the namespace's actions, in
// the order MatchAll evaluates them (from 0).
func ActionPosition(list []kidv1.KidAction, name string) int {
	n := 0
	for i := range list {
		if list[i].Name < name {
			n++
		}
	}
	return n
}
