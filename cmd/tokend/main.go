// Command tokend keeps OAuth2 client-credentials tokens fresh and serves
// them to local processes over a Unix socket. See the README.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon"
	"github.com/tokend/tokend/socket/proto"
)

const usage = `usage: tokend [serve] [--config FILE]   run the daemon
       tokend check [--config FILE]     validate the configuration and exit
       tokend version                   print the version

FILE defaults to ` + daemon.DefaultConfigPath + `.
Signals: SIGHUP reloads the configuration; SIGTERM or SIGINT stops.
`

func main() {
	// Durations in logs as seconds ("retry_in":2.5), not zerolog's default milliseconds.
	zerolog.DurationFieldUnit = time.Second
	zerolog.DurationFieldInteger = false
	// Errors may carry upstream text (Vault's answers, TLS and DNS errors):
	// in a log line they pass through the same cleaning as ERR lines and
	// STATUS=, so no server can forge lines or drive a terminal.
	zerolog.ErrorMarshalFunc = func(err error) any { return proto.Clean(err.Error()) }
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the exit code: 0 stop, 1 runtime error, 2 config or usage.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && (args[0] == "serve" || args[0] == "check" || args[0] == "version") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("tokend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	config := fs.String("config", daemon.DefaultConfigPath, "configuration file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tokend: unexpected argument %q\n%s", fs.Arg(0), usage)
		return 2
	}
	switch cmd {
	case "version":
		fmt.Fprintf(stdout, "tokend %s\n", daemon.Version)
		return 0
	case "check":
		cfg, err := daemon.LoadConfig(*config)
		if err != nil {
			return configFailed(stderr, err)
		}
		for _, w := range daemon.Warnings(*config, cfg, false) {
			fmt.Fprintf(stderr, "tokend: warning: %s\n", w)
		}
		fmt.Fprintf(stdout, "%s: ok (%d token(s), default %q, socket %s)\n", *config, len(cfg.Tokens), cfg.DefaultToken, cfg.Socket)
		return 0
	}
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
	err := daemon.Run(ctx, daemon.Options{ConfigPath: *config, Log: daemon.NewLogWriter(os.Stderr), Reload: reload})
	if err != nil {
		var ce *daemon.ConfigError
		if errors.As(err, &ce) {
			return configFailed(stderr, err)
		}
		fmt.Fprintf(stderr, "tokend: %v\n", err)
		return 1
	}
	return 0
}

func configFailed(stderr io.Writer, err error) int {
	var ce *daemon.ConfigError
	if errors.As(err, &ce) {
		fmt.Fprintf(stderr, "tokend: %d problem(s) in %s:\n", len(ce.Problems), ce.File)
		for _, p := range ce.Problems {
			fmt.Fprintf(stderr, "  %s\n", p)
		}
	} else {
		fmt.Fprintf(stderr, "tokend: %v\n", err)
	}
	return 2
}
