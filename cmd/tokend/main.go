// Command tokend keeps OAuth2 client-credentials tokens fresh and serves
// them to local processes over a Unix socket. See tokend(8).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon"
	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/internal/buildinfo"
	"github.com/tokend/tokend/socket/proto"
)

const usage = `usage: tokend [COMMAND] [OPTIONS]

commands:
  serve [--config FILE]    run the daemon (the default command)
  check [--config FILE] [--credentials-dir DIR] [--user NAME]
                           validate the configuration as serve would, and exit
  version                  print the version
  help [COMMAND]           print this help, or a command's

FILE defaults to ` + config.DefaultPath + `.
Signals: SIGHUP reloads the configuration; SIGTERM or SIGINT stops.
Exit status: 0 stopped cleanly (or: the check passed), 1 runtime error,
2 configuration or usage error.
See tokend(8) and tokend.toml(5).
`

// commands are the usage of each command, for `tokend help COMMAND` and
// `tokend COMMAND --help`.
var commands = map[string]string{
	"serve": `usage: tokend [serve] [--config FILE]

Run the daemon: read the configuration, take the socket from systemd
(tokend.socket) or create it, obtain every token, and serve them until
SIGTERM or SIGINT. SIGHUP rereads the configuration; a broken one is
logged and the previous one keeps serving.

  --config FILE   the configuration (default ` + config.DefaultPath + `)

Exit status: 0 stopped cleanly, 1 runtime error, 2 configuration error
(systemd does not restart it: fix the file, then systemctl restart tokend).
`,
	"check": `usage: tokend check [--config FILE] [--credentials-dir DIR] [--user NAME]

Validate the configuration with serve's own checks, plus the files it
names as the service user would read them, and print what a start would
refuse or warn about. Nothing is contacted.

  --config FILE           the configuration (default ` + config.DefaultPath + `)
  --credentials-dir DIR   where the files under ${CREDENTIALS_DIRECTORY} are
                          found before the service starts: the directory
                          LoadCredential= copies them from; without it
                          they are not checked (a note says so)
  --user NAME             the user tokend runs as (default tokend, the
                          unit's User=); give your own name for a tokend
                          you start yourself

Exit status: 0 the configuration would start (warnings may be printed),
2 it would not (every problem is printed with its key and line).
`,
	"version": `usage: tokend version

Print one line: the version, the commit and the Go version.
`,
	"help": `usage: tokend help [COMMAND]

Print the usage, or a command's.
`,
}

func main() {
	// Durations in logs as Go durations ("retry_in":"1.5s"): read by people.
	zerolog.DurationFieldFormat = zerolog.DurationFormatString
	// Errors may carry upstream text (Vault's answers, TLS and DNS errors):
	// in a log line they pass through the same cleaning as ERR lines and
	// STATUS=, so no server can forge lines or drive a terminal.
	zerolog.ErrorMarshalFunc = func(err error) any { return proto.Clean(err.Error()) }
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the exit code: 0 stop, 1 runtime error, 2 config or usage.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 {
		switch a := args[0]; {
		case commands[a] != "":
			cmd, args = a, args[1:]
		case a == "-h" || a == "-help" || a == "--help":
			fmt.Fprint(stdout, usage)
			return 0
		case a == "-version" || a == "--version":
			cmd, args = "version", args[1:]
		case len(a) > 0 && a[0] != '-':
			fmt.Fprintf(stderr, "tokend: unknown command %q\n\n%s", a, usage)
			return 2
		}
	}
	fs := flag.NewFlagSet("tokend "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	configPath := fs.String("config", config.DefaultPath, "configuration file")
	credsDir := fs.String("credentials-dir", "", "where ${CREDENTIALS_DIRECTORY}'s files are, before the service starts")
	svcUser := fs.String("user", "tokend", "the user tokend runs as")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, commands[cmd])
			return 0
		}
		fmt.Fprintf(stderr, "\n%s", commands[cmd])
		return 2
	}
	if cmd == "help" {
		switch {
		case fs.NArg() == 0:
			fmt.Fprint(stdout, usage)
		case commands[fs.Arg(0)] != "" && fs.NArg() == 1:
			fmt.Fprint(stdout, commands[fs.Arg(0)])
		default:
			fmt.Fprintf(stderr, "tokend: unknown command %q\n\n%s", fs.Arg(0), usage)
			return 2
		}
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tokend: unexpected argument %q\n\n%s", fs.Arg(0), commands[cmd])
		return 2
	}
	if *credsDir != "" && cmd != "check" {
		fmt.Fprintf(stderr, "tokend: --credentials-dir is for tokend check; serve takes ${CREDENTIALS_DIRECTORY} from systemd\n")
		return 2
	}
	if *svcUser != "tokend" && cmd != "check" {
		fmt.Fprintf(stderr, "tokend: --user is for tokend check; serve runs as the user that starts it (User= in tokend.service)\n")
		return 2
	}
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, buildinfo.String("tokend"))
		return 0
	case "check":
		return check(*configPath, *credsDir, *svcUser, stdout, stderr)
	}
	return serve(*configPath, stderr)
}

// check runs serve's validation of the configuration and prints its
// findings: problems and warnings on stderr, the summary on stdout.
func check(path, credsDir, svcUser string, stdout, stderr io.Writer) int {
	if me, err := user.Current(); err == nil && me.Username == svcUser {
		svcUser = "" // this process: its own access is what counts
	}
	cfg, rep, err := config.Check(path, config.CheckOptions{
		BeforeStart: true, CredentialsDir: credsDir, ServiceUser: svcUser, Unit: "tokend.service"})
	for _, n := range rep.Notes {
		fmt.Fprintf(stderr, "tokend: note: %s\n", n)
	}
	if err != nil {
		return configFailed(stderr, err)
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(stderr, "tokend: warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%s: ok (%d token(s), default %q, socket %s", path, len(cfg.Tokens), cfg.DefaultToken, cfg.Socket)
	if n := len(rep.Warnings); n > 0 {
		fmt.Fprintf(stdout, "; %d warning(s)", n)
	}
	fmt.Fprintln(stdout, ")")
	return 0
}

func serve(path string, stderr io.Writer) int {
	// The process holds client secrets and tokens: no core dumps of it, and
	// no ptrace by other processes of the same user.
	if err := undumpable(); err != nil {
		fmt.Fprintf(stderr, "tokend: %v\n", err)
		return 1
	}
	// SIGHUP first, so that an early one is a reload, not the default
	// "terminate".
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{})
	go func() {
		for range hup {
			reload <- struct{}{}
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := daemon.Run(ctx, daemon.Options{ConfigPath: path, Log: daemon.NewLogWriter(os.Stderr), Reload: reload})
	if err != nil {
		var ce *config.ConfigError
		if errors.As(err, &ce) {
			return configFailed(stderr, err)
		}
		fmt.Fprintf(stderr, "tokend: %v\n", err)
		return 1
	}
	return 0
}

// configFailed prints a configuration's problems, one a line, and returns
// exit status 2.
func configFailed(stderr io.Writer, err error) int {
	var ce *config.ConfigError
	if errors.As(err, &ce) {
		fmt.Fprintf(stderr, "tokend: %d problem(s) in %s:\n", len(ce.Problems), ce.File)
		for _, p := range ce.Problems {
			fmt.Fprintf(stderr, "  %s\n", p)
		}
		fmt.Fprintf(stderr, "tokend: fix them (tokend.toml(5) lists every key), then run tokend check --config %s\n", ce.File)
	} else {
		fmt.Fprintf(stderr, "tokend: %v\n", err)
	}
	return 2
}
