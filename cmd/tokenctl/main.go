// Command tokenctl reads tokens from tokend for shells, cron jobs and
// scripts:
//
//	tokenctl header | curl -H @- https://api.example.com/v1/things
package main

import (
	"context"
	"errors"
	"flag"
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

const usage = `usage: tokenctl [--socket PATH] COMMAND [OPTIONS] [NAME]

commands:
  get [--min N] [NAME]     print the access token
  header [--min N] [NAME]  print "Authorization: <type> <token>", for curl -H @-
  json [--min N] [NAME]    print the token as the token endpoint's JSON answer
  info [NAME]              print the token's metadata (never the token)
  watch [--exec CMD] [NAME]
                           print the token now and at every change; with
                           --exec, run CMD (sh -c) after each change, with
                           the token in $TOKEND_TOKEN
  list                     print the token names you may read
  status [NAME]            print a table of the token's (or every token you
                           may read) state; exit 1 unless every one is ok
  metrics                  print the Prometheus metrics you may read
  ping                     check that tokend answers

--min N asks for a token with at least N seconds left: tokend refreshes
early if it must (at most once per 30s per token), or answers unavailable.
PATH is --socket, else $TOKEND_SOCKET, else ` + proto.DefaultPath + `.
NAME defaults to the daemon's default token. Exit status: 0 ok, 1 the
daemon answered an error (its code is printed), 2 usage, 3 unreachable.
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

var verbs = map[string]proto.Verb{"get": proto.VerbToken, "header": proto.VerbHeader, "json": proto.VerbJSON,
	"info": proto.VerbInfo, "list": proto.VerbList, "ping": proto.VerbPing, "status": proto.VerbStatus,
	"metrics": proto.VerbMetrics, "watch": proto.VerbWatch}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tokenctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	path := fs.String("socket", "", "tokend socket path")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *path == "" {
		*path = os.Getenv("TOKEND_SOCKET")
	}
	if *path == "" {
		*path = proto.DefaultPath
	}
	if fs.NArg() == 0 || verbs[fs.Arg(0)] == "" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := fs.Arg(0)
	req := proto.Request{Verb: verbs[cmd]}

	// The command's own options, before or after NAME.
	opts := flag.NewFlagSet("tokenctl "+cmd, flag.ContinueOnError)
	opts.SetOutput(stderr)
	opts.Usage = func() { fmt.Fprint(stderr, usage) }
	var min int
	var execCmd string
	if req.Verb.TakesMin() {
		opts.IntVar(&min, "min", 0, "seconds the token must have left")
	}
	if req.Verb == proto.VerbWatch {
		opts.StringVar(&execCmd, "exec", "", "command to run after each change")
	}
	var rest []string
	for args := fs.Args()[1:]; ; {
		if err := opts.Parse(args); err != nil {
			return 2
		}
		if opts.NArg() == 0 {
			break
		}
		rest = append(rest, opts.Arg(0))
		args = opts.Args()[1:]
	}
	if len(rest) > 1 || (len(rest) == 1 && !req.Verb.TakesName()) {
		fmt.Fprintf(stderr, "tokenctl: too many arguments for %s\n", cmd)
		return 2
	}
	if min < 0 || min > proto.MaxMin {
		fmt.Fprintf(stderr, "tokenctl: --min %d: want 0 to %d seconds\n", min, proto.MaxMin)
		return 2
	}
	req.Min = min
	if len(rest) == 1 {
		if !proto.ValidName(rest[0]) {
			fmt.Fprintf(stderr, "tokenctl: malformed token name %q\n", rest[0])
			return 2
		}
		req.Name = rest[0]
	}
	client := proto.Client{Path: *path}
	if min > 0 {
		client.Timeout = 30 * time.Second // an early refresh may take up to 10s more
	}
	switch req.Verb {
	case proto.VerbStatus:
		return status(client, req.Name, stdout, stderr)
	case proto.VerbWatch:
		return watch(client, req.Name, execCmd, stdout, stderr)
	case proto.VerbMetrics:
		text, err := client.Metrics(context.Background())
		if err != nil {
			return failed(stderr, err)
		}
		stdout.Write(text)
		return 0
	}
	out, err := client.Do(context.Background(), req.String())
	if err != nil {
		return failed(stderr, err)
	}
	switch req.Verb {
	case proto.VerbHeader:
		out = "Authorization: " + out
	case proto.VerbInfo:
		out = strings.TrimSpace(out)
	}
	fmt.Fprintln(stdout, out)
	return 0
}

// failed prints err and returns the exit status: 1 for an answer from
// tokend, 3 when it could not be asked.
func failed(stderr io.Writer, err error) int {
	var perr *proto.Error
	if errors.As(err, &perr) {
		fmt.Fprintf(stderr, "tokenctl: %s: %s\n", perr.Code, perr.Msg)
		return 1
	}
	fmt.Fprintf(stderr, "tokenctl: %v\n", err)
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
		return failed(stderr, err)
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
			return failed(stderr, err)
		}
		names = strings.Fields(list)
		if len(names) == 0 {
			fmt.Fprintln(stderr, "tokenctl: no token you may read")
			return 1
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tEXPIRES IN\tNEXT REFRESH\tFAILURES\tLAST ERROR")
	code := 0
	for _, n := range names {
		out, err := client.Do(ctx, proto.Request{Verb: proto.VerbStatus, Name: n}.String())
		if err != nil {
			tw.Flush()
			return failed(stderr, err)
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", st.Name, st.State, human(st.ExpiresIn), human(st.RefreshIn), st.Failures, lastErr)
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
