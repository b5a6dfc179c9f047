// Command fakeguix stands in for `guix` in tests, locally and on the test
// build machines, where Guix cannot be installed. It implements exactly what
// the offload flow uses, with Guix's options, messages and exit statuses,
// over a fake store (see offload/integration/drv): `archive --missing`,
// `--export [-r]`, `--import`, `--generate-key`, `--authorize`, `build` (the
// builder really runs), `repl -- FILE ARGS` (FILE run by Debian's Guile with a
// stand-in of Guix's build-machine record, see repl.go), `--version` and `describe`. Any other sub-command
// prints its argv, copies stdin to stdout and exits 42, so that tests can
// see that the offload binary passes sub-commands through unchanged.
//
// Environment: NIX_STORE_DIR (logical store dir, default /gnu/store),
// FAKEGUIX_STORE (physical dir, default the logical one), FAKEGUIX_DB
// (default PHYSICAL/../db), GUIX_CONFIGURATION_DIRECTORY (signing-key.sec,
// signing-key.pub, acl; default /etc/guix), FAKEGUIX_LOG (append one line per
// invocation), FAKEGUIX_HOSTILE or the content of the file
// $FAKEGUIX_HOSTILE_FILE (make `archive --export` or `archive --missing`
// misbehave, see hostile.go), FAKEGUIX_COSTS=guix (start up as slowly as the real
// sub-command, see costs.go; "dry" only reports the delay) and FAKEGUIX_COSTS_LOG (where
// to report it).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"offload/integration/drv"
)

// passthroughStatus is the exit status of sub-commands fakeguix does not
// implement.
const passthroughStatus = 42

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// env is what one invocation works with.
type env struct {
	store  drv.Store
	conf   string
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// exitError carries an exit status and Guix's error line.
type exitError struct {
	status int
	msg    string // printed as "guix CMD: error: MSG"; "" prints nothing
}

func (e *exitError) Error() string { return e.msg }

func fail(format string, args ...any) error {
	return &exitError{status: 1, msg: fmt.Sprintf(format, args...)}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if logFile := getenv("FAKEGUIX_LOG"); logFile != "" {
		if f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err == nil {
			f.Write([]byte(strings.Join(append([]string{"guix"}, args...), " ") + "\n"))
			f.Close()
		}
	}
	payStartCost(args, getenv)
	e := &env{store: drv.StoreFromEnv(getenv), conf: getenv("GUIX_CONFIGURATION_DIRECTORY"),
		getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	if e.conf == "" {
		e.conf = "/etc/guix"
	}
	if len(args) == 0 {
		fmt.Fprintln(stderr, "guix: missing command name")
		fmt.Fprintln(stderr, "Try `guix --help' for more information.")
		return 1
	}
	var err error
	cmd := args[0]
	switch cmd {
	case "--version", "-V":
		fmt.Fprintln(stdout, "guix (GNU Guix) 1.4.0")
		fmt.Fprintln(stdout, "Copyright (C) 2022 the Guix authors")
		return 0
	case "describe":
		fmt.Fprintln(stdout, "Generation 1\t(current)")
		fmt.Fprintln(stdout, "  guix 8e2f32c")
		fmt.Fprintln(stdout, "    repository URL: https://git.savannah.gnu.org/git/guix.git")
		fmt.Fprintln(stdout, "    branch: master")
		fmt.Fprintln(stdout, "    commit: 8e2f32cee982d42a79e53fc1e9aa7b8ff0514714")
		return 0
	case "archive":
		err = e.archive(ctx, args[1:])
	case "build":
		err = e.build(ctx, args[1:])
	case "repl":
		err = e.repl(ctx, args[1:])
	default:
		fmt.Fprintf(stdout, "fakeguix passthrough: %s\n", strings.Join(args, " "))
		io.Copy(stdout, stdin)
		return passthroughStatus
	}
	if err == nil {
		return 0
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		ee = &exitError{status: 1, msg: err.Error()}
	}
	if ee.msg != "" {
		fmt.Fprintf(stderr, "guix %s: error: %s\n", cmd, ee.msg)
	}
	return ee.status
}

// options is a small SRFI-37-like command line parser: "--name=value",
// "--name value", "-x value", "-xvalue" and operands.
type options struct {
	args     []string
	i        int
	operands bool   // after "--"
	pending  string // rest of a group of short options, "-dK" or "-rFILE"
}

// next returns the next option name (without dashes, with any "=value")
// and isOpt=true, or the next operand and isOpt=false; ok=false at the end.
func (o *options) next() (name string, isOpt, ok bool) {
	if o.pending != "" {
		name, o.pending = o.pending[:1], o.pending[1:]
		return name, true, true
	}
	if o.i >= len(o.args) {
		return "", false, false
	}
	a := o.args[o.i]
	o.i++
	switch {
	case o.operands:
		return a, false, true
	case a == "--":
		o.operands = true
		return o.next()
	case strings.HasPrefix(a, "--"):
		return a[2:], true, true
	case len(a) > 1 && a[0] == '-':
		o.pending = a[2:]
		return a[1:2], true, true
	}
	return a, false, true
}

// value returns the value of option name: after '=' or the next argument.
func (o *options) value(name string) (string, string, error) {
	if n, v, ok := strings.Cut(name, "="); ok {
		return n, v, nil
	}
	if o.pending != "" {
		v := o.pending
		o.pending = ""
		return name, v, nil
	}
	if o.i >= len(o.args) {
		return name, "", fail("option '%s' requires an argument", name)
	}
	v := o.args[o.i]
	o.i++
	return name, v, nil
}

func optName(name string) string {
	n, _, _ := strings.Cut(name, "=")
	return n
}

func (e *env) confFile(name string) string { return filepath.Join(e.conf, name) }
