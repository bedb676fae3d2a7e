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
	"strings"

	"github.com/tokend/tokend/socket/proto"
)

const usage = `usage: tokenctl [--socket PATH] COMMAND [NAME]

commands:
  get [NAME]      print the access token
  header [NAME]   print "Authorization: <type> <token>", for curl -H @-
  info [NAME]     print the token's metadata (never the token)
  list            print the token names you may read
  ping            check that tokend answers

PATH is --socket, else $TOKEND_SOCKET, else ` + proto.DefaultPath + `.
NAME defaults to the daemon's default token. Exit status: 0 ok, 1 the
daemon answered an error (its code is printed), 2 usage, 3 unreachable.
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

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
	verbs := map[string]proto.Verb{"get": proto.VerbToken, "header": proto.VerbHeader, "info": proto.VerbInfo,
		"list": proto.VerbList, "ping": proto.VerbPing}
	if fs.NArg() == 0 || verbs[fs.Arg(0)] == "" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	req, rest := proto.Request{Verb: verbs[fs.Arg(0)]}, fs.Args()[1:]
	if len(rest) > 1 || (len(rest) == 1 && !req.Verb.TakesName()) {
		fmt.Fprintf(stderr, "tokenctl: too many arguments for %s\n", fs.Arg(0))
		return 2
	}
	if len(rest) == 1 {
		if !proto.ValidName(rest[0]) {
			fmt.Fprintf(stderr, "tokenctl: malformed token name %q\n", rest[0])
			return 2
		}
		req.Name = rest[0]
	}
	out, err := proto.Client{Path: *path}.Do(context.Background(), req.String())
	if err != nil {
		var perr *proto.Error
		if errors.As(err, &perr) {
			fmt.Fprintf(stderr, "tokenctl: %s: %s\n", perr.Code, perr.Msg)
			return 1
		}
		fmt.Fprintf(stderr, "tokenctl: %v\n", err)
		return 3
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
