package proto

import (
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	long := strings.Repeat("a", MaxLine+1)
	tests := []struct {
		name, line string
		want       Request
		code       string
	}{
		{"token default", "TOKEN", Request{Verb: VerbToken}, ""},
		{"token named", "TOKEN vibes", Request{Verb: VerbToken, Name: "vibes"}, ""},
		{"lower case verb", "token vibes", Request{Verb: VerbToken, Name: "vibes"}, ""},
		{"mixed case verb", "HeAdEr a.b_c-1", Request{Verb: VerbHeader, Name: "a.b_c-1"}, ""},
		{"crlf", "INFO x\r", Request{Verb: VerbInfo, Name: "x"}, ""},
		{"extra spaces", "  PING  ", Request{Verb: VerbPing}, ""},
		{"list", "list", Request{Verb: VerbList}, ""},
		{"status default", "STATUS", Request{Verb: VerbStatus}, ""},
		{"status named", "status vibes", Request{Verb: VerbStatus, Name: "vibes"}, ""},
		{"metrics", "METRICS", Request{Verb: VerbMetrics}, ""},
		{"name on metrics", "METRICS vibes", Request{}, CodeBadRequest},
		{"min", "TOKEN min=1200", Request{Verb: VerbToken, Min: 1200}, ""},
		{"min before name", "json min=5 api", Request{Verb: VerbJSON, Name: "api", Min: 5}, ""},
		{"min after name", "HEADER api min=0", Request{Verb: VerbHeader, Name: "api"}, ""},
		{"watch", "WATCH api", Request{Verb: VerbWatch, Name: "api"}, ""},
		{"min on info", "INFO min=5", Request{}, CodeBadRequest},
		{"min on watch", "WATCH min=5", Request{}, CodeBadRequest},
		{"unknown option", "TOKEN max=5", Request{}, CodeBadRequest},
		{"min not a number", "TOKEN min=soon", Request{}, CodeBadRequest},
		{"min negative", "TOKEN min=-1", Request{}, CodeBadRequest},
		{"min empty", "TOKEN min=", Request{}, CodeBadRequest},
		{"min too large", "TOKEN min=99999999999999999999", Request{}, CodeBadRequest},
		{"two names", "TOKEN a min=1 b", Request{}, CodeBadRequest},
		{"64 char name", "TOKEN " + strings.Repeat("n", 64), Request{Verb: VerbToken, Name: strings.Repeat("n", 64)}, ""},
		{"empty", "", Request{}, CodeBadRequest},
		{"blank", " \t ", Request{}, CodeBadRequest},
		{"unknown verb", "GIVE", Request{}, CodeBadRequest},
		{"extra words", "TOKEN a b", Request{}, CodeBadRequest},
		{"name on ping", "PING x", Request{}, CodeBadRequest},
		{"name on list", "LIST x", Request{}, CodeBadRequest},
		{"65 char name", "TOKEN " + strings.Repeat("n", 65), Request{}, CodeBadRequest},
		{"slash in name", "TOKEN a/b", Request{}, CodeBadRequest},
		{"control byte", "TOKEN a\x00", Request{}, CodeBadRequest},
		{"utf8", "TOKEN é", Request{}, CodeBadRequest},
		{"too long", long, Request{}, CodeTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.line))
			if tt.code != "" {
				if err == nil || err.Code != tt.code {
					t.Fatalf("Parse(%q) = %+v, %v; want code %s", tt.line, got, err, tt.code)
				}
				if !strings.HasPrefix(err.Line(), "ERR "+tt.code+" ") {
					t.Errorf("wire form %q", err.Line())
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", tt.line, got, err, tt.want)
			}
		})
	}
}

func TestParseResponse(t *testing.T) {
	if v, err := ParseResponse("OK abc"); err != nil || v != "abc" {
		t.Errorf("OK abc: %q %v", v, err)
	}
	if v, err := ParseResponse("OK"); err != nil || v != "" {
		t.Errorf("OK: %q %v", v, err)
	}
	_, err := ParseResponse("ERR denied uid 5 may not")
	if e, ok := err.(*Error); !ok || e.Code != "denied" || e.Msg != "uid 5 may not" {
		t.Errorf("ERR: %#v", err)
	}
	if _, err := ParseResponse("HELLO"); err == nil {
		t.Error("garbage accepted")
	}
}

// FuzzParse: random bytes never panic, and whatever parses is well formed.
func FuzzParse(f *testing.F) {
	// Every verb, with and without a name and an option, and some noise.
	for _, v := range Verbs() {
		for _, s := range []string{string(v), string(v) + " vibes", strings.ToLower(string(v)) + " x min=60\r"} {
			f.Add([]byte(s))
		}
	}
	for _, s := range []string{"", "\x00\xff", "TOKEN a b", strings.Repeat("T", 2000), "PROOF GET https://a/x?y=1",
		"PROOF vibes POST http://b/", "proof x get https://a/", "PROOF GET"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := Parse(line)
		if err != nil {
			if err.Code != CodeBadRequest && err.Code != CodeTooLong {
				t.Fatalf("unexpected code %q", err.Code)
			}
			if l := err.Line(); strings.ContainsAny(l, "\r\n\x00") || len(l) > 4+len(err.Code)+MaxText {
				t.Fatalf("error line %q is not one short line", l)
			}
			return
		}
		// The wire form parses back to the same request.
		if again, err := Parse([]byte(req.String())); err != nil || again != req {
			t.Fatalf("%+v: String %q parses as %+v, %v", req, req.String(), again, err)
		}
		// What the checker knows comes from the verbs themselves, so that a
		// new verb cannot make it report a bug that is not there.
		switch {
		case !slices.Contains(Verbs(), req.Verb):
			t.Fatalf("unknown verb %q accepted", req.Verb)
		case req.Name != "" && !req.Verb.TakesName():
			t.Fatalf("name on %s", req.Verb)
		case req.Name != "" && !ValidName(req.Name):
			t.Fatalf("bad name %q accepted", req.Name)
		case req.Min != 0 && !req.Verb.TakesMin():
			t.Fatalf("min= on %s", req.Verb)
		case req.Min < 0 || req.Min > MaxMin:
			t.Fatalf("min=%d accepted", req.Min)
		case (req.Method != "" || req.URL != "") != (req.Verb == VerbProof):
			t.Fatalf("method %q url %q on %s", req.Method, req.URL, req.Verb)
		case req.Verb == VerbProof && (strings.ToUpper(req.Method) != req.Method ||
			!strings.HasPrefix(req.URL, "http://") && !strings.HasPrefix(req.URL, "https://")):
			t.Fatalf("PROOF %q %q accepted", req.Method, req.URL)
		}
	})
}

// Clean's output is one line of printable ASCII, capped, whatever the input.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"plain", "a\nREADY=1\nWATCHDOG=trigger", "\x00\x1b[31m\r\n", "é", strings.Repeat("\n", 400)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := Clean(s)
		if len(out) > MaxText {
			t.Fatalf("%d bytes", len(out))
		}
		for i := 0; i < len(out); i++ {
			if out[i] < ' ' || out[i] > '~' {
				t.Fatalf("byte 0x%02x in %q", out[i], out)
			}
		}
	})
}
