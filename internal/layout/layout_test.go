// Package layout holds the test of which package may import which: the
// imports run one way, from the process down to the protocol.
package layout

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/tokend/tokend/daemon/daemontest"
)

const module = "github.com/tokend/tokend/"

// rules says, for each package (a trailing "/..." for its subpackages
// too), which of the module's packages it must never depend on, directly
// or not. The standard library is always allowed; "std" means nothing else.
var rules = []struct {
	pkg    string
	forbid []string
}{
	{"socket/proto", []string{"std"}},
	{"socket/...", []string{"daemon/...", "vaultsrc/...", "cmd/..."}},
	{"vaultsrc/...", []string{"daemon/...", "socket/...", "cmd/..."}},
	{"internal/buildinfo", []string{"std"}},
	{"daemon/config", []string{"socket/server", "daemon", "daemon/oauth", "cmd/..."}},
	{"daemon/oauth", []string{"socket/server", "daemon", "daemon/tokens", "cmd/..."}},
	{"daemon/tokens", []string{"socket/server", "daemon", "cmd/..."}},
	{"daemon/proxy", []string{"daemon", "daemon/tokens", "daemon/oauth", "cmd/..."}},
	{"daemon/filesrc", []string{"daemon", "daemon/config", "daemon/tokens", "daemon/oauth", "socket/...", "cmd/..."}},
	{"daemon/...", []string{"cmd/..."}},
}

type pkg struct {
	ImportPath string
	Deps       []string
	Standard   bool
}

func TestImportsRunOneWay(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Deps,Standard", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	std := map[string]bool{}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	stdOut, err := exec.Command("go", "list", "std").Output()
	if err != nil {
		t.Fatalf("go list std: %v", err)
	}
	for _, s := range strings.Fields(string(stdOut)) {
		std[s] = true
	}
	checked := 0
	for _, p := range pkgs {
		name := strings.TrimPrefix(p.ImportPath, module)
		for _, r := range rules {
			if !match(r.pkg, name) {
				continue
			}
			checked++
			for _, d := range p.Deps {
				if std[d] || strings.HasPrefix(d, "internal/") || strings.HasPrefix(d, "vendor/") {
					continue
				}
				dep, ours := strings.CutPrefix(d, module)
				switch {
				case slices.Contains(r.forbid, "std"):
					t.Errorf("%s may import only the standard library, but depends on %s", name, d)
				case ours && slices.ContainsFunc(r.forbid, func(f string) bool { return match(f, dep) }):
					t.Errorf("%s depends on %s: imports must run the other way", name, dep)
				}
			}
		}
	}
	// The graph, for `go test -v`: each package and the module's packages
	// it imports directly.
	direct, err := exec.Command("go", "list", "-f", `{{.ImportPath}}:{{join .Imports " "}}`, module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(direct)), "\n") {
		name, imports, _ := strings.Cut(line, ":")
		var ours []string
		for _, i := range strings.Fields(imports) {
			if d, ok := strings.CutPrefix(i, module); ok {
				ours = append(ours, d)
			}
		}
		t.Logf("%-20s -> %s", strings.TrimPrefix(name, module), strings.Join(ours, " "))
	}
	if checked < len(rules) {
		t.Errorf("only %d package rules matched a package: is the module path %q right?", checked, module)
	}
}

// match reports whether name is pattern, or under it when pattern ends
// in "/...".
func match(pattern, name string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return name == base || strings.HasPrefix(name, base+"/")
	}
	return name == pattern
}

// Every non-test Go file stays under 400 lines: a longer one holds more
// than one job.
func TestFileLength(t *testing.T) {
	out, err := exec.Command("git", "-C", "../..", "ls-files", "*.go").Output()
	if err != nil {
		daemontest.Need(t, "a git checkout", fmt.Sprintf("git ls-files: %v", err))
	}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasSuffix(f, "_test.go") || strings.HasPrefix(f, "packaging/tools/") {
			continue
		}
		b, err := os.ReadFile("../../" + f)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(b), "\n"); n > 400 {
			t.Errorf("%s has %d lines: split it by job (at most 400)", f, n)
		}
	}
}
