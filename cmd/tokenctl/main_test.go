package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The usual conventions: help on stdout with exit 0, a command's own
// help, flags after the command, an unknown command named on stderr
// before the usage, --version.
func TestCLIConventions(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "t.sock")
	serve(t, sock, "OK pong\n")
	version := regexp.MustCompile(`^tokenctl \S+ \(commit \S+, ` + regexp.QuoteMeta(runtime.Version()) + `\)\n$`)
	for _, c := range []struct {
		args           []string
		code           int
		stdout, stderr string // substrings; "" means empty
	}{
		{[]string{"--help"}, 0, "usage: tokenctl [--socket PATH] COMMAND", ""},
		{[]string{"-h"}, 0, "usage: tokenctl [--socket PATH] COMMAND", ""},
		{[]string{"help"}, 0, "usage: tokenctl [--socket PATH] COMMAND", ""},
		{[]string{"help", "watch"}, 0, "usage: tokenctl [--socket PATH] watch [--exec CMD] [NAME]", ""},
		{[]string{"get", "--help"}, 0, "usage: tokenctl [--socket PATH] get [--min N] [NAME]", ""},
		{[]string{"status", "-h"}, 0, "usage: tokenctl [--socket PATH] status [NAME]", ""},
		{[]string{"nope"}, 2, "", "tokenctl: unknown command \"nope\"\n\nusage: tokenctl"},
		{[]string{}, 2, "", "tokenctl: no command given"},
		{[]string{"help", "nope"}, 2, "", `tokenctl: unknown command "nope"`},
		{[]string{"list", "x"}, 2, "", "tokenctl: too many arguments for list"},
		{[]string{"ping", "--socket", sock}, 0, "pong", ""},
		{[]string{"--socket", sock, "ping"}, 0, "pong", ""},
		{[]string{"get", "--min", "x"}, 2, "", `invalid value "x" for flag -min`},
	} {
		var out, errOut bytes.Buffer
		code := run(c.args, &out, &errOut)
		ok := code == c.code && (c.stderr == "" && errOut.Len() == 0 || c.stderr != "" && strings.Contains(errOut.String(), c.stderr)) &&
			(c.stdout == "" && out.Len() == 0 || c.stdout != "" && strings.Contains(out.String(), c.stdout))
		if !ok {
			t.Errorf("tokenctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(c.args, " "), code, out.String(), errOut.String())
		}
	}
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 0 || !version.MatchString(out.String()) {
			t.Errorf("tokenctl %s: exit %d %q %q", args[0], code, out.String(), errOut.String())
		}
	}
}

// Connection failures say what to do, not just the system call.
func TestUnreachable(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	silent := filepath.Join(dir, "silent.sock")
	quiet, err := net.Listen("unix", silent)
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	go func() {
		for {
			c, err := quiet.Accept()
			if err != nil {
				return
			}
			defer c.Close() // never answers
		}
	}()
	cases := []struct{ path, want string }{
		{filepath.Join(dir, "none.sock"), "tokend doesn't appear to be running (sudo systemctl start tokend.socket)"},
		{file, "is not a socket (a regular file): check --socket or $TOKEND_SOCKET"},
		{stale, "nothing listens on " + stale},
	}
	if os.Getuid() == 0 {
		t.Log("as root, a socket's permissions do not stop tokenctl: the permission message is checked by the systemd tests' non-root clients")
	} else {
		locked := filepath.Join(dir, "locked.sock")
		l, _ := net.Listen("unix", locked)
		defer l.Close()
		os.Chmod(locked, 0)
		cases = append(cases, struct{ path, want string }{locked, "permission denied on " + locked + ": only members of group"})
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		if code := run([]string{"--socket", c.path, "ping"}, &out, &errOut); code != 3 || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("ping %s: exit %d %q, want 3 and %q", c.path, code, errOut.String(), c.want)
		}
	}
	// A server that never answers: how long tokenctl waited. (15 s: the
	// client's own timeout; tokenctl's first-token wait is the server's.)
	if testing.Short() {
		t.Skip("-short: the 15 s wait for a silent server is not tried")
	}
	began := time.Now()
	var out, errOut bytes.Buffer
	if code := run([]string{"--socket", silent, "ping"}, &out, &errOut); code != 3 || !strings.Contains(errOut.String(), "did not answer within 15s: see its log (journalctl -u tokend)") {
		t.Errorf("ping a silent server: exit %d %q after %v", code, errOut.String(), time.Since(began))
	}
}

// serve answers every connection on path with answer.
func serve(t *testing.T, path, answer string) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 512)
			c.Read(buf)
			c.Write([]byte(answer))
			c.Close()
		}
	}()
}
