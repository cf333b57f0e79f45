// Command stria runs Stria services and its admin verbs. main only parses
// the command line and wires signals; the services are libraries.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

const usage = `stria — a parallel POSIX file system

Services:
  stria up --data DIR --mount MNT [--osts N]   everything in one process (embedded NATS and etcd)
  stria meta  --data DIR --nats URL --etcd URL  the metadata service
  stria ost   --data DIR --nats URL --etcd URL  one object storage target
  stria lockd --nats URL                        the lock service (one per file system)
  stria mount --nats URL --etcd URL MNT         the FUSE client

Admin verbs (on a path inside a mount):
  stria setstripe -c COUNT -S SIZE [-i START_OST] PATH
  stria getstripe PATH
  stria df [-h] [PATH]
  stria bench [--big-file-size 1G] [--small-files 100] [--threads N] [--json] PATH

Every service flag can also be given as STRIA_<NAME> in the environment
(e.g. STRIA_NATS, STRIA_ETCD); a flag wins over the environment.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	verb, args := os.Args[1], os.Args[2:]
	// service: runs until stopped, under the runtime settings of
	// goruntime.go; mounts: serves a FUSE mount.
	type command struct {
		run             func(context.Context, []string) error
		service, mounts bool
	}
	commands := map[string]command{
		"up":        {runUp, true, true},
		"meta":      {runMeta, true, false},
		"ost":       {runOST, true, false},
		"lockd":     {runLockd, true, false},
		"mount":     {runMount, true, true},
		"setstripe": {runSetstripe, false, false},
		"getstripe": {runGetstripe, false, false},
		"df":        {runDF, false, false},
		"bench":     {runBench, false, false},
	}
	cmd, ok := commands[verb]
	if !ok {
		if verb == "help" || verb == "-h" || verb == "--help" {
			fmt.Print(usage)
			return
		}
		fmt.Fprintf(os.Stderr, "stria: unknown command %q\n\n%s", verb, usage)
		os.Exit(2)
	}
	if cmd.service {
		reexecWithLazyFree()
		if pct, ok := serviceGC(os.Getenv); ok {
			debug.SetGCPercent(pct)
		}
	}
	if cmd.mounts {
		if procs, ok := mountProcs(os.Getenv, runtime.GOMAXPROCS(0)); ok {
			runtime.GOMAXPROCS(procs)
		}
		if err := setTimerSlack(mountTimerSlack); err != nil {
			fmt.Fprintf(os.Stderr, "stria: cannot lower the timer slack, running with the default: %v\n", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "stria %s: %v\n", verb, err)
		os.Exit(1)
	}
}

// newLogger writes text logs to stderr at the given level.
func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// applyEnv sets every flag not given on the command line from STRIA_<NAME>
// (dashes become underscores): defaults < environment < flags.
func applyEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		key := "STRIA_" + envName(f.Name)
		if v, ok := os.LookupEnv(key); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", key, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

func envName(flagName string) string {
	b := []byte(flagName)
	for i, c := range b {
		switch {
		case c == '-':
			b[i] = '_'
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// parse parses a verb's flags then the environment.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	return applyEnv(fs)
}
