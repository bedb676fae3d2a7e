// Command tokenctl reads tokens from tokend for shells, cron jobs and
// scripts:
//
//	tokenctl header | curl -H @- https://api.example.com/v1/things
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tokend/tokend/socket/proto"
)

// command is one tokenctl command: its verb, its arguments and what it does.
type command struct {
	name, args, help string
	verb             proto.Verb
}

// commands are tokenctl's commands, in the order the usage lists them.
var commands = []command{
	{"get", "[--min N] [NAME]", "print the access token", proto.VerbToken},
	{"header", "[--min N] [--method M --url URL] [NAME]", `print "Authorization: <type> <token>", for curl -H @-; with --method and --url, also "DPoP: <proof>" for that request (a DPoP token)`, proto.VerbHeader},
	{"json", "[--min N] [NAME]", "print the token as the token endpoint's JSON answer", proto.VerbJSON},
	{"info", "[NAME]", "print the token's metadata (never the token)", proto.VerbInfo},
	{"watch", "[--exec CMD] [NAME]", "print the token now and at every change; with --exec, run CMD (sh -c) after each change, with the token in $TOKEND_TOKEN", proto.VerbWatch},
	{"list", "", "print the names of the tokens you may read", proto.VerbList},
	{"status", "[NAME]", "print a table of the token's state (every token you may read without NAME); exit 1 unless every one is ok", proto.VerbStatus},
	{"metrics", "", "print the Prometheus metrics you may read", proto.VerbMetrics},
	{"ping", "", "check that tokend answers", proto.VerbPing},
	{"version", "", "print tokenctl's version", ""},
	{"help", "[COMMAND]", "print this help, or a command's", ""},
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

const footer = `--min N asks for a token with at least N seconds left: tokend refreshes
early if it must (at most once per 30s per token), or answers unavailable.
PATH is --socket, else $TOKEND_SOCKET, else ` + proto.DefaultPath + `; --socket
may come before or after the command.
NAME defaults to the daemon's default token.
Exit status: 0 ok, 1 tokend answered an error (its code is printed), 2 usage,
3 tokend could not be asked. See tokenctl(1).
`

// usage is the whole usage text.
func usage() string {
	var b strings.Builder
	b.WriteString("usage: tokenctl [--socket PATH] COMMAND [OPTIONS] [NAME]\n\ncommands:\n")
	col := 0
	for _, c := range commands {
		col = max(col, len(c.name)+1+len(c.args))
	}
	for _, c := range commands {
		// The help wrapped at 76 columns, under its own column.
		lead := fmt.Sprintf("  %-*s  ", col, strings.TrimSpace(c.name+" "+c.args))
		line := lead
		for _, w := range strings.Fields(c.help) {
			if len(line)+1+len(w) > 76 && len(line) > len(lead) {
				b.WriteString(strings.TrimRight(line, " ") + "\n")
				line = strings.Repeat(" ", len(lead))
			}
			if len(line) > len(lead) {
				line += " "
			}
			line += w
		}
		b.WriteString(line + "\n")
	}
	b.WriteString("\n" + footer)
	return b.String()
}

// commandUsage is one command's usage.
func commandUsage(c *command) string {
	s := fmt.Sprintf("usage: tokenctl [--socket PATH] %s %s\n\n%s.\n", c.name, c.args, strings.ToUpper(c.help[:1])+c.help[1:])
	if c.verb.TakesMin() {
		s += "\n  --min N      the token must have at least N seconds left (0 to " + fmt.Sprint(proto.MaxMin) + ")"
	}
	if c.verb == proto.VerbWatch {
		s += "\n  --exec CMD   run CMD with /bin/sh -c after each change, the token in $TOKEND_TOKEN"
	}
	if c.verb != "" {
		s += "\n  --socket PATH  tokend's socket (default $TOKEND_SOCKET, else " + proto.DefaultPath + ")\n"
	}
	return s
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	inv, err := parse(args, os.Getenv)
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		if ue.msg != "" {
			fmt.Fprintf(stderr, "tokenctl: %s\n", ue.msg)
		}
		fmt.Fprintf(stderr, "\n%s", ue.usage)
		return 2
	case inv.print != "":
		fmt.Fprint(stdout, inv.print)
		return 0
	}
	client := proto.Client{Path: inv.socket, Timeout: 15 * time.Second}
	if inv.req.Min > 0 {
		client.Timeout = 30 * time.Second // an early refresh may take up to 10s more
	}
	switch inv.req.Verb {
	case proto.VerbStatus:
		return status(client, inv.req.Name, stdout, stderr)
	case proto.VerbWatch:
		return watch(client, inv.req.Name, inv.exec, stdout, stderr)
	case proto.VerbMetrics:
		text, err := client.Metrics(context.Background())
		if err != nil {
			return failed(stderr, client, err)
		}
		stdout.Write(text)
		return 0
	}
	if inv.url != "" {
		return dpopHeader(client, inv, stdout, stderr)
	}
	out, err := client.Do(context.Background(), inv.req.String())
	if err != nil {
		return failed(stderr, client, err)
	}
	switch inv.req.Verb {
	case proto.VerbHeader:
		out = "Authorization: " + out
	case proto.VerbInfo:
		out = strings.TrimSpace(out)
	}
	fmt.Fprintln(stdout, out)
	return 0
}

// dpopHeader prints the two headers a DPoP request needs: Authorization
// and a proof for inv's method and URL bound to that very token (asked
// once more if the token changed between the two answers).
func dpopHeader(client proto.Client, inv invocation, stdout, stderr io.Writer) int {
	for range 2 {
		header, err := client.Do(context.Background(), inv.req.String())
		if err != nil {
			return failed(stderr, client, err)
		}
		proof, err := client.Do(context.Background(), proto.Request{Verb: proto.VerbProof, Name: inv.req.Name, Method: inv.method, URL: inv.url}.String())
		if err != nil {
			return failed(stderr, client, err)
		}
		_, tok, _ := strings.Cut(header, " ")
		if proto.ProofBinds(proof, tok) {
			fmt.Fprintf(stdout, "Authorization: %s\nDPoP: %s\n", header, proof)
			return 0
		}
	}
	fmt.Fprintln(stderr, "tokenctl: the token changed twice while the proof was made; try again")
	return 1
}

// failed prints err and returns the exit status: 1 for an answer from
// tokend, 3 when it could not be asked (with what to do about it).
func failed(stderr io.Writer, client proto.Client, err error) int {
	var perr *proto.Error
	if errors.As(err, &perr) {
		fmt.Fprintf(stderr, "tokenctl: %s: %s\n", perr.Code, perr.Msg)
		return 1
	}
	fmt.Fprintf(stderr, "tokenctl: %s\n", unreachable(client, err))
	return 3
}

// watch prints each token (and, on stderr, each spell without one) until
// interrupted; it reconnects when tokend restarts. It exits 1 when tokend
// ends the watch (the token or your access to it was removed).
func watch(client proto.Client, name, execCmd string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := client.Watch(ctx, name, func(tok string, err error) error {
		if err != nil {
			var perr *proto.Error
			errors.As(err, &perr)
			fmt.Fprintf(stderr, "tokenctl: %s: %s\n", perr.Code, perr.Msg)
			return nil
		}
		if execCmd == "" {
			_, err := fmt.Fprintln(stdout, tok)
			return err // stdout closed: stop
		}
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", execCmd)
		cmd.Env = append(os.Environ(), "TOKEND_TOKEN="+tok)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Run(); err != nil && ctx.Err() == nil {
			fmt.Fprintf(stderr, "tokenctl: --exec: %v\n", err)
		}
		return nil
	})
	if err != nil {
		return failed(stderr, client, err)
	}
	return 0
}

// status prints a table of the named token, or of every token the caller
// may read, and exits 0 only when every one shown is ok: a monitoring
// plugin's convention (0 ok, 1 not ok, 3 unknown).
func status(client proto.Client, name string, stdout, stderr io.Writer) int {
	ctx := context.Background()
	names := []string{name}
	if name == "" {
		list, err := client.Do(ctx, string(proto.VerbList))
		if err != nil {
			return failed(stderr, client, err)
		}
		names = strings.Fields(list)
		if len(names) == 0 {
			fmt.Fprintln(stderr, "tokenctl: no token you may read")
			return 1
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tEXPIRES IN\tNEXT REFRESH\tFAILURES\tCREDENTIALS\tLAST ERROR")
	code := 0
	for _, n := range names {
		out, err := client.Do(ctx, proto.Request{Verb: proto.VerbStatus, Name: n}.String())
		if err != nil {
			tw.Flush()
			return failed(stderr, client, err)
		}
		st, err := proto.ParseStatus(out)
		if err != nil {
			tw.Flush()
			fmt.Fprintf(stderr, "tokenctl: %v\n", err)
			return 3
		}
		if st.State != proto.StateOK {
			code = 1
		}
		lastErr := st.LastError
		if lastErr == "" {
			lastErr = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", st.Name, st.State, human(st.ExpiresIn), human(st.RefreshIn), st.Failures, cmp.Or(st.Source, "-"), lastErr)
	}
	tw.Flush()
	return code
}

// human writes seconds as a duration, "-" when unknown.
func human(secs int64) string {
	if secs == proto.Unknown {
		return "-"
	}
	return (time.Duration(secs) * time.Second).String()
}
