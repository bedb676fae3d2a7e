package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/tokend/tokend/internal/buildinfo"
	"github.com/tokend/tokend/socket/proto"
)

// invocation is what a command line asks tokenctl to do.
type invocation struct {
	print  string // help or version text: print it on stdout, ask nothing
	socket string
	req    proto.Request
	exec   string // watch --exec
	// header --method --url: a DPoP proof for that request too.
	method, url string
}

// usageError is a command line tokenctl cannot run: exit 2, msg and the
// usage on stderr.
type usageError struct{ msg, usage string }

func (e *usageError) Error() string { return e.msg }

// parse reads the command line: options before the command, the command,
// then its options and NAME in any order. getenv is os.Getenv.
func parse(args []string, getenv func(string) string) (invocation, error) {
	var inv invocation
	fs := flag.NewFlagSet("tokenctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socket := fs.String("socket", "", "tokend socket path")
	version := fs.Bool("version", false, "print the version")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return invocation{print: usage()}, nil
		}
		return inv, &usageError{err.Error(), usage()}
	}
	switch {
	case *version:
		return invocation{print: buildinfo.String("tokenctl") + "\n"}, nil
	case fs.NArg() == 0:
		return inv, &usageError{"no command given", usage()}
	}
	c := lookup(fs.Arg(0))
	if c == nil {
		return inv, &usageError{fmt.Sprintf("unknown command %q", fs.Arg(0)), usage()}
	}
	opts := flag.NewFlagSet("tokenctl "+c.name, flag.ContinueOnError)
	opts.SetOutput(io.Discard)
	opts.StringVar(socket, "socket", *socket, "tokend socket path")
	var min int
	if c.verb.TakesMin() {
		opts.IntVar(&min, "min", 0, "seconds the token must have left")
	}
	if c.verb == proto.VerbWatch {
		opts.StringVar(&inv.exec, "exec", "", "command to run after each change")
	}
	if c.verb == proto.VerbHeader {
		opts.StringVar(&inv.method, "method", "", "the request's method, for a DPoP proof")
		opts.StringVar(&inv.url, "url", "", "the request's URL, for a DPoP proof")
	}
	rest, err := interleaved(opts, fs.Args()[1:])
	if errors.Is(err, flag.ErrHelp) {
		return invocation{print: commandUsage(c)}, nil
	} else if err != nil {
		return inv, &usageError{err.Error(), commandUsage(c)}
	}
	switch c.name {
	case "version":
		return invocation{print: buildinfo.String("tokenctl") + "\n"}, nil
	case "help":
		return help(rest)
	}
	inv.req = proto.Request{Verb: c.verb, Min: min}
	switch {
	case len(rest) > 1 || (len(rest) == 1 && !c.verb.TakesName()):
		return inv, &usageError{"too many arguments for " + c.name, commandUsage(c)}
	case (inv.method == "") != (inv.url == ""):
		return inv, &usageError{"--method and --url go together: the DPoP proof is for one request, such as --method GET --url https://api.example.com/v1/things", commandUsage(c)}
	case min < 0 || min > proto.MaxMin:
		return inv, &usageError{fmt.Sprintf("--min %d: want 0 to %d seconds", min, proto.MaxMin), commandUsage(c)}
	case len(rest) == 1 && !proto.ValidName(rest[0]):
		return inv, &usageError{fmt.Sprintf("malformed token name %q: want 1-64 of A-Z a-z 0-9 . _ - (tokenctl list shows yours)", rest[0]), commandUsage(c)}
	case len(rest) == 1:
		inv.req.Name = rest[0]
	}
	inv.socket = *socket
	if inv.socket == "" {
		inv.socket = getenv("TOKEND_SOCKET")
	}
	if inv.socket == "" {
		inv.socket = proto.DefaultPath
	}
	return inv, nil
}

// interleaved parses opts from args where options and operands mix
// ("get vibes --min 60"), and returns the operands.
func interleaved(opts *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := opts.Parse(args); err != nil {
			return nil, err
		}
		if opts.NArg() == 0 {
			return rest, nil
		}
		rest = append(rest, opts.Arg(0))
		args = opts.Args()[1:]
	}
}

// help is `tokenctl help [COMMAND]`.
func help(rest []string) (invocation, error) {
	switch {
	case len(rest) == 0:
		return invocation{print: usage()}, nil
	case len(rest) == 1 && lookup(rest[0]) != nil:
		return invocation{print: commandUsage(lookup(rest[0]))}, nil
	}
	return invocation{}, &usageError{fmt.Sprintf("unknown command %q", strings.Join(rest, " ")), usage()}
}
