package config

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The TOML walker. The library decodes into maps; the walker reads them
// key by key so that every problem is reported, each with its key and,
// from keyLines, its line.

// reader walks the decoded TOML, checking types and collecting problems.
type reader struct {
	host     host
	lines    map[string][]int
	problems []string
	warnings []string
	// creds is how ${CREDENTIALS_DIRECTORY} is expanded.
	creds credentialsDir
	// files are the paths of the keys that name a file tokend reads.
	files []fileKey
}

// credentialsDir is where ${CREDENTIALS_DIRECTORY} points. systemd sets
// the variable only for the running service, so `tokend check` from a
// shell takes it from --credentials-dir, or leaves such paths unchecked.
type credentialsDir struct {
	flag     string // --credentials-dir; used when the environment has none
	deferred bool   // neither: keep the path as written, and say so
}

// fileKind says what tokend does with a file a key names.
type fileKind int

const (
	readFile    fileKind = iota // tokend reads it
	secretFile                  // tokend reads it, and nobody else should
	writtenFile                 // tokend writes it (a file sink)
)

// fileKey is a key naming a file tokend reads.
type fileKey struct {
	key, path string
	secret    bool // it holds a credential: nobody but tokend should read it
	// credential: under ${CREDENTIALS_DIRECTORY}, which systemd fills
	// readable by the service, whatever the source file's owner.
	credential bool
	deferred   bool // ${CREDENTIALS_DIRECTORY} unknown: not checked
}

func (r *reader) warn(key, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if n, ok := r.lines[key]; ok {
		r.warnings = append(r.warnings, fmt.Sprintf("line %d: %s: %s", n[0], key, msg))
	} else {
		r.warnings = append(r.warnings, fmt.Sprintf("%s: %s", key, msg))
	}
}

func (r *reader) fail(key, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if n, ok := r.lines[key]; ok {
		r.problems = append(r.problems, fmt.Sprintf("line %d: %s: %s", n[0], key, msg))
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
			r.fail(join(prefix, k), "unknown key%s", r.hint(prefix, k, known))
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

// path reads an absolute file path, expanding ${CREDENTIALS_DIRECTORY} so
// secrets can come from systemd's LoadCredential=. secret says the file
// holds a credential.
func (t table) path(k string, kind fileKind) string {
	p := t.str(k, "")
	if p == "" {
		return ""
	}
	key := join(t.prefix, k)
	f := fileKey{key: key, path: p, secret: kind == secretFile}
	if strings.Contains(p, "${CREDENTIALS_DIRECTORY}") {
		f.credential = true
		dir := t.r.host.getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			dir = t.r.creds.flag
		}
		switch {
		case dir != "":
			p = strings.ReplaceAll(p, "${CREDENTIALS_DIRECTORY}", dir)
			f.path = p
		case t.r.creds.deferred:
			f.deferred = true
			if kind != writtenFile {
				t.r.files = append(t.r.files, f)
			}
			return p
		default:
			t.r.fail(key, "%q uses ${CREDENTIALS_DIRECTORY}, which is not set: systemd sets it for a service with LoadCredential= or LoadCredentialEncrypted= (see tokend.service)", p)
			return p
		}
	}
	if !filepath.IsAbs(p) {
		t.r.fail(key, "%q is a relative path: tokend runs with / as its working directory; write the absolute path", p)
		return p
	}
	if kind != writtenFile {
		t.r.files = append(t.r.files, f)
	}
	return p
}

// hint says what an unknown key k under prefix was probably meant to be:
// a top-level key written after a table (TOML then puts it in that
// table), or the nearest known key.
func (r *reader) hint(prefix, k string, known []string) string {
	if prefix != "" && slices.Contains(topLevelKeys, k) {
		return fmt.Sprintf(" in [%s]: %s is a top-level key; move it above the first [table] (top-level keys come first, or TOML reads them into the table above them)", prefix, k)
	}
	best, dist := "", 0
	for _, c := range known {
		if d := editDistance(k, c); best == "" || d < dist {
			best, dist = c, d
		}
	}
	if best != "" && (dist <= 2 || dist <= len(k)/3) {
		return fmt.Sprintf("; did you mean %s?", best)
	}
	if prefix == "" {
		return "; see tokend.toml(5) for the keys"
	}
	return fmt.Sprintf("; see tokend.toml(5) for the keys of [%s]", prefix)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// syntaxProblem turns the TOML library's parse error into a line that
// names the key and the fix.
func syntaxProblem(pe toml.ParseError, data []byte, lines map[string][]int) string {
	msg := pe.Message
	// The line itself says best what was written: the library's key and
	// value are the parser's view (`log_level = info` is the float "inf"
	// followed by an "o").
	text := ""
	if all := strings.Split(string(data), "\n"); pe.Position.Line >= 1 && pe.Position.Line <= len(all) {
		text = strings.TrimSpace(all[pe.Position.Line-1])
	}
	name, value, isKV := strings.Cut(text, "=")
	name, value = strings.TrimSpace(name), strings.TrimSpace(value)
	if i := strings.Index(value, " #"); i >= 0 {
		value = strings.TrimSpace(value[:i])
	}
	key := pe.LastKey
	if key == "" && isKV && !strings.HasPrefix(text, "[") {
		key = name
	}
	at := fmt.Sprintf("line %d: ", pe.Position.Line)
	if key != "" {
		at += key + ": "
	}
	switch {
	case strings.Contains(msg, "cannot have leading zeroes") && strings.HasSuffix(key, "mode"):
		return fmt.Sprintf("%s%s is not a TOML number (a leading zero); a mode is an octal string: write %s = \"%s\"", at, value, lastPart(key), value)
	case strings.Contains(msg, "cannot have leading zeroes"):
		return fmt.Sprintf("%s%s is not a TOML number (a leading zero): write it without the zero, or in quotes if it is text", at, value)
	case strings.Contains(msg, "has already been defined"):
		name, _, _ := strings.Cut(strings.TrimPrefix(msg, "Key '"), "'")
		if l := lines[name]; len(l) > 1 {
			if _, isTable := lines["["+name+"]"]; isTable {
				return fmt.Sprintf("line %d: [%s] is defined twice (lines %d and %d): merge the two tables into one", l[1], name, l[0], l[1])
			}
			return fmt.Sprintf("line %d: %s is set twice (lines %d and %d): keep one", l[1], name, l[0], l[1])
		}
		return fmt.Sprintf("line %d: %s is defined twice: keep one", pe.Position.Line, name)
	case isKV && value != "" && !strings.ContainsAny(value[:1], "\"'[{") && (strings.HasPrefix(msg, "expected value but found") ||
		strings.HasPrefix(msg, "Invalid float value") || strings.HasPrefix(msg, "invalid datetime") ||
		strings.HasPrefix(msg, "expected a top-level item to end") || strings.HasPrefix(msg, "expected a newline")):
		return fmt.Sprintf("%s%s is not a TOML value: text goes in quotes, write %s = \"%s\"", at, value, name, value)
	}
	if msg != "" {
		msg = strings.ToLower(msg[:1]) + strings.TrimSuffix(msg[1:], ".")
	}
	return at + msg
}

func lastPart(key string) string {
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		return key[i+1:]
	}
	return key
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
	case []map[string]any:
		return "an array of tables ([[…]])"
	}
	return fmt.Sprintf("%T", v)
}

// keyLines maps each dotted key to the line that sets it. The TOML library
// does not expose positions, and a line scan is enough for the flat tables
// of this format (multi-line values only lose their line numbers).
// Every line of a key is kept, for "set twice" messages; a table's lines
// are also under "[NAME]".
func keyLines(data []byte) map[string][]int {
	lines := map[string][]int{}
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
			lines[prefix] = append(lines[prefix], i+1)
			lines["["+prefix+"]"] = append(lines["["+prefix+"]"], i+1)
		default:
			k, _, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			key := join(prefix, unquoteKey(strings.TrimSpace(k)))
			lines[key] = append(lines[key], i+1)
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
