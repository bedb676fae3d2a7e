package packaging

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
)

// The man pages are the reference: every protocol verb is in tokend(8),
// every command and flag of both CLIs (as their own --help lists them) in
// tokend(8) and tokenctl(1). tokend.toml(5)'s keys are checked against
// the schema in package daemon.
func TestManPages(t *testing.T) {
	tokend, tokenctl := daemontest.Binaries(t)
	read := func(name string) string {
		b, err := os.ReadFile(daemontest.Root("packaging/man", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tokend8, tokenctl1 := read("tokend.8"), read("tokenctl.1")
	for _, v := range proto.Verbs() {
		if !regexp.MustCompile(`(?m)^\.B ` + string(v) + `\b`).MatchString(tokend8) {
			t.Errorf("tokend(8) has no entry for the verb %s", v)
		}
	}
	if !strings.Contains(tokend8, ".BI min= N") {
		t.Errorf("tokend(8) has no entry for min=")
	}
	for _, cli := range []struct {
		bin, page, name string
	}{{tokend, tokend8, "tokend(8)"}, {tokenctl, tokenctl1, "tokenctl(1)"}} {
		usage := help(t, cli.bin)
		_, list, _ := strings.Cut(usage, "commands:\n")
		list, _, _ = strings.Cut(list, "\n\n")
		var cmds []string
		for _, line := range strings.Split(list, "\n") {
			if strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   ") {
				cmds = append(cmds, strings.Fields(line)[0])
			}
		}
		if len(cmds) < 3 {
			t.Fatalf("%s --help lists %d commands:\n%s", cli.bin, len(cmds), usage)
		}
		flags := map[string]bool{"help": true, "version": true}
		for _, c := range cmds {
			if !regexp.MustCompile(`(?m)^\.B ` + c + `\b`).MatchString(cli.page) {
				t.Errorf("%s has no entry for the command %s", cli.name, c)
			}
			for _, f := range regexp.MustCompile(`--([a-z-]+)`).FindAllStringSubmatch(help(t, cli.bin, "help", c), -1) {
				flags[f[1]] = true
			}
		}
		for f := range flags {
			if !strings.Contains(cli.page, `\-\-`+strings.ReplaceAll(f, "-", `\-`)) {
				t.Errorf("%s does not document --%s", cli.name, f)
			}
		}
	}
}

// help runs bin with args (--help without), which must print on stdout
// and exit 0.
func help(t *testing.T, bin string, args ...string) string {
	t.Helper()
	if len(args) == 0 {
		args = []string{"--help"}
	}
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		t.Fatalf("%s %s: %v", bin, strings.Join(args, " "), err)
	}
	return string(out)
}
