package main

import (
	"bytes"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// The usual conventions: help on stdout with exit 0, a command's own
// help, an unknown command named on stderr before the usage, --version.
func TestCLIConventions(t *testing.T) {
	version := regexp.MustCompile(`^tokend \S+ \(commit \S+, ` + regexp.QuoteMeta(runtime.Version()) + `\)\n$`)
	for _, c := range []struct {
		args            []string
		code            int
		stdout, stderr  string // substrings; "" means empty
		stdoutIsVersion bool
	}{
		{[]string{"--help"}, 0, "usage: tokend [COMMAND]", "", false},
		{[]string{"-h"}, 0, "usage: tokend [COMMAND]", "", false},
		{[]string{"help"}, 0, "usage: tokend [COMMAND]", "", false},
		{[]string{"help", "check"}, 0, "usage: tokend check [--config FILE] [--credentials-dir DIR]", "", false},
		{[]string{"check", "--help"}, 0, "usage: tokend check", "", false},
		{[]string{"serve", "-h"}, 0, "usage: tokend [serve] [--config FILE]", "", false},
		{[]string{"help", "nope"}, 2, "", `tokend: unknown command "nope"`, false},
		{[]string{"nope"}, 2, "", "tokend: unknown command \"nope\"\n\nusage: tokend", false},
		{[]string{"check", "--nope"}, 2, "", "flag provided but not defined: -nope", false},
		{[]string{"check", "extra"}, 2, "", `tokend: unexpected argument "extra"`, false},
		{[]string{"--version"}, 0, "", "", true},
		{[]string{"version"}, 0, "", "", true},
	} {
		var out, errOut bytes.Buffer
		code := run(c.args, &out, &errOut)
		ok := code == c.code && (c.stderr == "" && errOut.Len() == 0 || c.stderr != "" && strings.Contains(errOut.String(), c.stderr))
		if c.stdoutIsVersion {
			ok = ok && version.MatchString(out.String())
		} else {
			ok = ok && (c.stdout == "" && out.Len() == 0 || c.stdout != "" && strings.Contains(out.String(), c.stdout))
		}
		if !ok {
			t.Errorf("tokend %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(c.args, " "), code, out.String(), errOut.String())
		}
	}
}
