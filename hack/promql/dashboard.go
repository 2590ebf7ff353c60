package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int      `json:"id"`
	Title   string   `json:"title"`
	Type    string   `json:"type"`
	Targets []target `json:"targets"`
	// Panels are a collapsed row's.
	Panels []panel `json:"panels"`
}

type target struct {
	RefID string `json:"refId"`
	Expr  string `json:"expr"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
	Current    struct {
		Value json.RawMessage `json:"value"`
	} `json:"current"`
	Options []struct {
		Value string `json:"value"`
	} `json:"options"`
}

// grafanaBuiltins stand in for the variables Grafana sets itself when it
// runs a query. Any valid value parses the same way; these are what a
// dashboard over the last hour, with a 15 s scrape interval, would get.
var grafanaBuiltins = map[string]string{
	"__rate_interval": "1m",
	"__interval":      "15s",
	"__interval_ms":   "15000",
	"__range":         "1h",
	"__range_s":       "3600",
	"__range_ms":      "3600000",
}

// variableRef finds $name, ${name}, ${name:format} and [[name]].
var variableRef = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]`)

// substitute replaces each Grafana variable by the value it stands in for
// when parsing; an unknown variable is an error (Grafana would leave the
// text as it is, and the query would fail only in the browser).
func substitute(expr string, values map[string]string) (string, error) {
	var unknown []string
	out := variableRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := variableRef.FindStringSubmatch(ref)
		name := m[1] + m[2] + m[3]
		v, ok := values[name]
		if !ok {
			unknown = append(unknown, ref)
		}
		return v
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown variable %s", strings.Join(unknown, ", "))
	}
	return out, nil
}

// standIn is what a dashboard variable becomes when parsing: its All value
// (a regex, used inside =~ matchers), else its current value, else its
// first option.
func standIn(v variable) string {
	if v.IncludeAll {
		if v.AllValue != "" {
			return v.AllValue
		}
		return ".*"
	}
	var s string
	if json.Unmarshal(v.Current.Value, &s) == nil && s != "" {
		return s
	}
	if len(v.Options) > 0 {
		return v.Options[0].Value
	}
	return ".*"
}

// labelValues is Grafana's label_values(selector, label) variable query.
var labelValues = regexp.MustCompile(`^\s*label_values\(\s*(.+)\s*,\s*(\w+)\s*\)\s*$`)

// queryResult is Grafana's query_result(expr) variable query.
var queryResult = regexp.MustCompile(`^\s*query_result\(\s*(.+)\s*\)\s*$`)

// dashboard checks a Grafana dashboard's variable queries and its panels'
// expressions.
func (c *checker) dashboard(path string, data []byte) {
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&d); err != nil {
		c.errorf("%s: %w", path, err)
		return
	}
	if d.Title == "" || d.UID == "" {
		c.errorf("%s: a dashboard needs a title and a uid (the uid keeps its URL across imports)", path)
	}
	values := map[string]string{}
	for k, v := range grafanaBuiltins {
		values[k] = v
	}
	for _, v := range d.Templating.List {
		values[v.Name] = standIn(v)
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		c.variableQuery(fmt.Sprintf("%s: variable %s", path, v.Name), v.Query, values)
	}
	ids := map[int]string{}
	c.panels(path, d.Panels, values, ids)
}

func (c *checker) panels(path string, panels []panel, values map[string]string, ids map[int]string) {
	for _, p := range panels {
		where := fmt.Sprintf("%s: panel %d %q", path, p.ID, p.Title)
		if other, ok := ids[p.ID]; ok {
			c.errorf("%s: the same id as panel %q", where, other)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			c.panels(path, p.Panels, values, ids)
			continue
		}
		if p.Type != "text" && len(p.Targets) == 0 {
			c.errorf("%s: no queries", where)
		}
		for _, t := range p.Targets {
			tw := fmt.Sprintf("%s, query %s", where, t.RefID)
			if strings.TrimSpace(t.Expr) == "" {
				c.errorf("%s: empty expr", tw)
				continue
			}
			expr, err := substitute(t.Expr, values)
			if err != nil {
				c.errorf("%s: %w", tw, err)
				continue
			}
			c.substituted(tw, t.Expr, expr)
		}
	}
}

// variableQuery checks a query variable of the Prometheus data source:
// its query is a string, or (Grafana 10 and later) an object whose query
// field is.
func (c *checker) variableQuery(where string, raw json.RawMessage, values map[string]string) {
	var q string
	if err := json.Unmarshal(raw, &q); err != nil {
		var obj struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(raw, &obj); err != nil {
			c.errorf("%s: query is neither a string nor an object with a query", where)
			return
		}
		q = obj.Query
	}
	original := q
	q, err := substitute(q, values)
	if err != nil {
		c.errorf("%s: %w", where, err)
		return
	}
	if m := labelValues.FindStringSubmatch(q); m != nil {
		// The variable lists the label's values on the selected series,
		// so those series must carry it.
		c.substituted(where, original, m[1], Matcher{Label: m[2], Op: "=~", Value: ".+"})
		return
	}
	if m := queryResult.FindStringSubmatch(q); m != nil {
		c.substituted(where, original, m[1])
		return
	}
	c.errorf("%s: query %q: only label_values(selector, label) and query_result(expr) are checked; use one of them", where, q)
}
