// Package proto is tokend's socket protocol as both ends speak it: request
// parsing, answers, errors, the cleaning of text from elsewhere, and a
// Client. It imports nothing beyond the standard library, so that tokenctl
// and other clients stay small; the server is package socket/server, and
// package socket holds the Go client (TokenSource) on top of this one.
//
// The protocol is line based and tiny, so that a shell, socat, curl or a
// ten-line script in any language can speak it. A client sends one request
// per line and reads one response line per request, in order:
//
//	TOKEN [NAME] [min=SECONDS]   →  OK <access_token>
//	HEADER [NAME] [min=SECONDS]  →  OK <token_type> <access_token>
//	JSON [NAME] [min=SECONDS]    →  OK {"access_token":…,"token_type":…,"expires_in":…,"expires_at":…,"scope":…}
//	WATCH [NAME]   →  OK <access_token> now, and again at every change (ERR unavailable while there is none)
//	INFO [NAME]    →  OK name=… token_type=… expires_in=… expires_at=… fetched_at=… scope=…
//	LIST           →  OK <names this peer may read>
//	STATUS [NAME]  →  OK name=… state=… expires_in=… refresh_in=… failures=… last_success=… source=… last_error=…
//	METRICS        →  OK <n>, then n bytes of Prometheus text exposition
//	PROOF [NAME] METHOD URL  →  OK <DPoP proof for METHOD URL, bound to the token> (dpop = true)
//	PING           →  OK PONG
//
// and any failure is "ERR <code> <message>". A client that sends nothing and
// closes its writing side gets the bare default token and EOF: that is what
// `socat UNIX-CONNECT:… - </dev/null` and systemd's LoadCredential= do.
package proto

import (
	"bytes"
	"fmt"
	"strconv"
)

// MaxLine is the longest request line accepted, without its line ending.
const MaxLine = 1024

// Error codes, the first word after ERR.
const (
	CodeDenied      = "denied"
	CodeUnknown     = "unknown-token"
	CodeUnavailable = "unavailable"
	CodeBadRequest  = "bad-request"
	CodeTooLong     = "too-long"
	CodeBusy        = "busy"
)

// Error is a protocol error: what the server answers as "ERR <code> <msg>"
// and what Client returns when the server said so.
type Error struct {
	Code string
	Msg  string
}

func (e *Error) Error() string { return e.Code + ": " + e.Msg }

// Line is the wire form, without the newline: always one line, whatever
// the message holds.
func (e *Error) Line() string { return "ERR " + Clean(e.Code) + " " + Clean(e.Msg) }

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Verb is a request's command.
type Verb string

const (
	VerbToken   Verb = "TOKEN"
	VerbHeader  Verb = "HEADER"
	VerbInfo    Verb = "INFO"
	VerbList    Verb = "LIST"
	VerbPing    Verb = "PING"
	VerbStatus  Verb = "STATUS"
	VerbMetrics Verb = "METRICS"
	VerbJSON    Verb = "JSON"
	VerbWatch   Verb = "WATCH"
	VerbProof   Verb = "PROOF"
)

// Request is one parsed request line. Name is empty for the default token.
type Request struct {
	Verb Verb
	Name string
	// Min is min=SECONDS: the token must have at least this long left
	// (0: min_remaining decides alone).
	Min int
	// Method and URL are PROOF's: what the DPoP proof is for.
	Method, URL string
}

// String is the request's wire form, without the newline.
func (r Request) String() string {
	s := string(r.Verb)
	if r.Name != "" {
		s += " " + r.Name
	}
	if r.Min > 0 {
		s += " min=" + strconv.Itoa(r.Min)
	}
	if r.Verb == VerbProof {
		s += " " + r.Method + " " + r.URL
	}
	return s
}

// TakesName reports whether the verb accepts an optional NAME.
func (v Verb) TakesName() bool {
	switch v {
	case VerbToken, VerbHeader, VerbInfo, VerbStatus, VerbJSON, VerbWatch, VerbProof:
		return true
	}
	return false
}

// TakesMin reports whether the verb accepts min=SECONDS.
func (v Verb) TakesMin() bool { return v == VerbToken || v == VerbHeader || v == VerbJSON }

// Parse parses one request line, without its "\n" (a trailing "\r" is
// accepted). The error is always a *Error with code bad-request or too-long,
// and its message quotes the offending input so a human can see it; the
// Request then holds the verb when it was a known one (for counting).
func Parse(line []byte) (Request, *Error) { return ParseReusing(line, nil) }

// verbs are the known verbs, matched without regard to case.
var verbs = [...]Verb{VerbToken, VerbHeader, VerbInfo, VerbList, VerbPing, VerbStatus, VerbMetrics, VerbJSON, VerbWatch, VerbProof}

// Verbs are the known verbs.
func Verbs() []Verb { return verbs[:] }

const try = "try PING, TOKEN [NAME] [min=SECONDS], HEADER, JSON, INFO, WATCH, STATUS [NAME], PROOF [NAME] METHOD URL, LIST or METRICS"

// ParseReusing is Parse without allocating on the way to success: the verb
// is one of the constants, and a name equal to *last is *last (a
// connection that asks for the same token again allocates nothing); a new
// name is stored there. last may be nil.
func ParseReusing(line []byte, last *string) (Request, *Error) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) > MaxLine {
		return Request{}, errorf(CodeTooLong, "request line longer than %d bytes", MaxLine)
	}
	for _, c := range line {
		if c != ' ' && c != '\t' && (c < 0x21 || c > 0x7e) {
			return Request{}, errorf(CodeBadRequest, "request has a non-printable byte 0x%02x", c)
		}
	}
	first, rest := nextWord(line)
	if first == nil {
		return Request{}, errorf(CodeBadRequest, "empty request; "+try)
	}
	var req Request
	for _, v := range verbs {
		if bytes.EqualFold(first, []byte(v)) {
			req.Verb = v
			break
		}
	}
	if req.Verb == "" {
		return Request{}, errorf(CodeBadRequest, "unknown verb %q; "+try, clip(first))
	}
	if req.Verb == VerbProof {
		return parseProof(rest)
	}
	// The words after the verb: at most one NAME, and options (a word
	// with "=": names never hold one).
	var name []byte
	for {
		var word []byte
		if word, rest = nextWord(rest); word == nil {
			break
		}
		if key, val, isOpt := bytes.Cut(word, []byte("=")); isOpt {
			if perr := req.option(key, val); perr != nil {
				return Request{Verb: req.Verb}, perr
			}
			continue
		}
		if name != nil || !req.Verb.TakesName() {
			return Request{Verb: req.Verb}, errorf(CodeBadRequest, "too many words after %s: %q", req.Verb, clip(bytes.Join(bytes.Fields(line)[1:], []byte(" "))))
		}
		name = word
	}
	if name == nil {
		return req, nil
	}
	if !validName(name) {
		return Request{Verb: req.Verb}, errorf(CodeBadRequest, "malformed token name %q: want 1-64 of A-Z a-z 0-9 . _ -", clip(name))
	}
	switch {
	case last != nil && string(name) == *last: // compared without a copy
		req.Name = *last
	case last != nil:
		req.Name = string(name)
		*last = req.Name
	default:
		req.Name = string(name)
	}
	return req, nil
}

// parseProof reads PROOF's words: [NAME] METHOD URL. A URL may hold
// "=", so no word is an option here.
func parseProof(rest []byte) (Request, *Error) {
	req := Request{Verb: VerbProof}
	var words [][]byte
	for {
		var w []byte
		if w, rest = nextWord(rest); w == nil {
			break
		}
		words = append(words, w)
	}
	switch len(words) {
	case 2:
	case 3:
		if !validName(words[0]) {
			return req, errorf(CodeBadRequest, "malformed token name %q: want 1-64 of A-Z a-z 0-9 . _ -", clip(words[0]))
		}
		req.Name, words = string(words[0]), words[1:]
	default:
		return req, errorf(CodeBadRequest, "PROOF takes [NAME] METHOD URL, such as PROOF GET https://api.example.com/v1/things")
	}
	for _, c := range words[0] {
		if c < 'A' || c > 'Z' {
			return req, errorf(CodeBadRequest, "PROOF: method %q: want an HTTP method in capitals, such as GET", clip(words[0]))
		}
	}
	if len(words[0]) > 16 || !bytes.HasPrefix(words[1], []byte("https://")) && !bytes.HasPrefix(words[1], []byte("http://")) {
		return req, errorf(CodeBadRequest, "PROOF: %q %q: want METHOD and an http(s) URL", clip(words[0]), clip(words[1]))
	}
	req.Method, req.URL = string(words[0]), string(words[1])
	return req, nil
}

// MaxMin is the largest min= accepted: a year.
const MaxMin = 366 * 24 * 3600

// option applies one KEY=VALUE word.
func (r *Request) option(key, val []byte) *Error {
	if string(key) != "min" || !r.Verb.TakesMin() {
		return errorf(CodeBadRequest, "unknown option %q for %s; TOKEN, HEADER and JSON take min=SECONDS", clip(key), r.Verb)
	}
	n := 0
	for _, c := range val {
		if c < '0' || c > '9' || n > MaxMin {
			return errorf(CodeBadRequest, "min=%q: want whole seconds, 0 to %d", clip(val), MaxMin)
		}
		n = n*10 + int(c-'0')
	}
	if len(val) == 0 || n > MaxMin {
		return errorf(CodeBadRequest, "min=%q: want whole seconds, 0 to %d", clip(val), MaxMin)
	}
	r.Min = n
	return nil
}

// nextWord splits off the first word of b (separated by spaces or tabs);
// word is nil when there is none.
func nextWord(b []byte) (word, rest []byte) {
	b = bytes.TrimLeft(b, " \t")
	if len(b) == 0 {
		return nil, nil
	}
	i := bytes.IndexAny(b, " \t")
	if i < 0 {
		return b, nil
	}
	return b[:i], b[i:]
}

// ValidName reports whether s is a well-formed token name: [A-Za-z0-9._-]{1,64}.
func ValidName(s string) bool { return validName([]byte(s)) }

func validName(s []byte) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// clip keeps quoted bad input short in error messages.
func clip(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}
