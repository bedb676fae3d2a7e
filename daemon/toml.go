package daemon

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// The TOML walker. The library decodes into maps; the walker reads them
// key by key so that every problem is reported, each with its key and,
// from keyLines, its line.

// reader walks the decoded TOML, checking types and collecting problems.
type reader struct {
	host     host
	lines    map[string]int
	problems []string
}

func (r *reader) fail(key, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if n, ok := r.lines[key]; ok {
		r.problems = append(r.problems, fmt.Sprintf("line %d: %s: %s", n, key, msg))
	} else {
		r.problems = append(r.problems, fmt.Sprintf("%s: %s", key, msg))
	}
}

// table is one TOML table with the keys it allows.
type table struct {
	r      *reader
	prefix string
	m      map[string]any
}

func (r *reader) table(prefix string, m map[string]any, known ...string) table {
	allowed := map[string]bool{}
	for _, k := range known {
		allowed[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !allowed[k] {
			r.fail(join(prefix, k), "unknown key")
		}
	}
	return table{r: r, prefix: prefix, m: m}
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

func (t table) str(k, def string) string {
	v, ok := t.m[k]
	if !ok {
		return def
	}
	s, ok := v.(string)
	if !ok {
		t.r.fail(join(t.prefix, k), "want a string, got %s", tomlType(v))
		return def
	}
	return s
}

func (t table) int(k string, def int) int {
	v, ok := t.m[k]
	if !ok {
		return def
	}
	n, ok := v.(int64)
	if !ok {
		t.r.fail(join(t.prefix, k), "want an integer, got %s", tomlType(v))
		return def
	}
	return int(n)
}

func (t table) bool(k string, def bool) bool {
	v, ok := t.m[k]
	if !ok {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		t.r.fail(join(t.prefix, k), "want true or false, got %s", tomlType(v))
		return def
	}
	return b
}

func (t table) dur(k string, def time.Duration) time.Duration {
	v, ok := t.m[k]
	if !ok {
		return def
	}
	s, ok := v.(string)
	if !ok {
		t.r.fail(join(t.prefix, k), "want a duration string such as \"60s\" or \"2m\", got %s", tomlType(v))
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		t.r.fail(join(t.prefix, k), "bad duration %q: want e.g. \"60s\" or \"2m\"", s)
		return def
	}
	return d
}

func (t table) list(k string) []any {
	v, ok := t.m[k]
	if !ok {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		t.r.fail(join(t.prefix, k), "want an array, got %s", tomlType(v))
		return nil
	}
	return l
}

// path reads a file path, expanding ${CREDENTIALS_DIRECTORY} so secrets can
// come from systemd's LoadCredential=.
func (t table) path(k string) string {
	p := t.str(k, "")
	if !strings.Contains(p, "${CREDENTIALS_DIRECTORY}") {
		return p
	}
	dir := t.r.host.getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		t.r.fail(join(t.prefix, k), "%q uses ${CREDENTIALS_DIRECTORY}, which is not set (is tokend running under systemd with LoadCredential=?)", p)
		return p
	}
	return strings.ReplaceAll(p, "${CREDENTIALS_DIRECTORY}", dir)
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time:
		return "a date"
	}
	return fmt.Sprintf("%T", v)
}

// keyLines maps each dotted key to the line that sets it. The TOML library
// does not expose positions, and a line scan is enough for the flat tables
// of this format (multi-line values only lose their line numbers).
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	prefix := ""
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#':
		case line[0] == '[':
			end := strings.LastIndexByte(line, ']')
			if end < 0 {
				continue
			}
			prefix = unquoteKey(strings.Trim(line[:end], "[] "))
			if _, ok := lines[prefix]; !ok {
				lines[prefix] = i + 1
			}
		default:
			k, _, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			key := join(prefix, unquoteKey(strings.TrimSpace(k)))
			if _, ok := lines[key]; !ok {
				lines[key] = i + 1
			}
		}
	}
	return lines
}

func unquoteKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}
