package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// runbooksPath is where the runbooks live in the repository; each alert's
// runbook_url points at a section of it.
const runbooksPath = "docs/runbooks.md"

// findRunbooks looks for docs/runbooks.md in the directory of the rules
// file and each directory above it: the repository's, for
// config/prometheus and the chart's copy alike.
func findRunbooks(rulesFile string) (string, bool) {
	dir, err := filepath.Abs(filepath.Dir(rulesFile))
	if err != nil {
		return "", false
	}
	for {
		p := filepath.Join(dir, runbooksPath)
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// anchors are the anchors GitHub makes of a Markdown file's headings: a
// heading's text lowercased, without punctuation but - and _, spaces made
// -; a repeated one gets -1, -2. Headings inside code fences are not
// headings.
func anchors(data []byte) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	fenced := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		m := heading.FindStringSubmatch(line)
		if fenced || m == nil {
			continue
		}
		a := slug(m[1])
		if n := seen[a]; n > 0 {
			out[fmt.Sprintf("%s-%d", a, n)] = true
		} else {
			out[a] = true
		}
		seen[a]++
	}
	return out
}

var (
	heading    = regexp.MustCompile(`^#{1,6}\s+(.+?)\s*#*\s*$`)
	notInSlug  = regexp.MustCompile(`[^\p{L}\p{N}\s_-]`)
	whitespace = regexp.MustCompile(`\s`)
)

func slug(text string) string {
	text = strings.ToLower(strings.ReplaceAll(text, "`", ""))
	return whitespace.ReplaceAllString(notInSlug.ReplaceAllString(text, ""), "-")
}

// runbookURL checks an alert's runbook_url: an https URL of the
// repository's docs/runbooks.md whose fragment is the anchor of a heading
// there.
func (c *checker) runbookURL(where, rulesFile, raw string) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || !strings.HasSuffix(u.Path, "/"+runbooksPath) || u.Fragment == "" {
		c.errorf("%s: runbook_url %q must be an https URL of %s with the alert's section as its #anchor", where, raw, runbooksPath)
		return
	}
	path := c.runbooks
	if path == "" {
		var ok bool
		if path, ok = findRunbooks(rulesFile); !ok {
			c.errorf("%s: no %s above %s to check runbook_url against; pass -runbooks", where, runbooksPath, rulesFile)
			return
		}
	}
	if c.anchors[path] == nil {
		data, err := os.ReadFile(path)
		if err != nil {
			c.errorf("%s: %w", where, err)
			return
		}
		c.anchors[path] = anchors(data)
	}
	if !c.anchors[path][u.Fragment] {
		c.errorf("%s: runbook_url %q: %s has no section #%s", where, raw, path, u.Fragment)
	}
}
