// Command offload is guix-daemon's build hook: it offloads builds to other machines
// over SSH, as `guix offload` does. Installed as the daemon's GUIX program, it hands
// every other guix sub-command to the real guix unchanged.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/alecthomas/kong"

	"offload/hook"
	"offload/sshexec"
)

var version = "0.1.0"

// Globals are the flags every sub-command takes.
type Globals struct {
	Verbose bool             `short:"v" help:"Print every spawned command on stderr, as it could be pasted into a shell (also OFFLOAD_VERBOSE=1)."`
	Version kong.VersionFlag `help:"Print the version and exit."`
}

// CLI is the whole command line.
type CLI struct {
	Globals

	Offload OffloadCmd `cmd:"" help:"Run as guix-daemon's build hook (the daemon starts it this way)."`
	Archive ArchiveCmd `cmd:"" help:"Read, write and check store archives (nar) and export bundles."`
	Explain ExplainCmd `cmd:"" help:"Show what the hook would do with a request right now, and why."`

	Machines MachinesCmd `cmd:"" help:"Print the machines file with every field resolved, and its warnings."`
	Test     TestCmd     `cmd:"" help:"Check each build machine the way the hook uses it; one line per check."`
	Status   StatusCmd   `cmd:"" help:"Show each build machine's state, load, disk, clock and build slots."`
	Drain    DrainCmd    `cmd:"" help:"Send no new builds to a machine; builds running there finish."`
	Undrain  UndrainCmd  `cmd:"" help:"Let a drained machine take new builds again."`
}

// ourCommands are the first words that this program handles itself; any other word is
// a guix sub-command handed to the real guix.
var ourCommands = map[string]bool{
	"offload": true, "archive": true, "machines": true, "test": true, "status": true, "explain": true, "drain": true, "undrain": true,
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	args = normalizeArgs(args)
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' && !ourCommands[args[0]] {
		return passThrough(args)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	var cli CLI
	parser, err := kong.New(&cli,
		kong.Name("offload"),
		kong.Description("Offload guix-daemon builds to other machines over SSH."),
		kong.Vars{"version": "offload " + version},
		kong.UsageOnError(),
	)
	if err != nil {
		complain("%v", err)
		return 1
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		complain("%v", err)
		// A usage error shows the usage of the command it was about, on stderr.
		var pe *kong.ParseError
		if errors.As(err, &pe) && pe.Context != nil {
			pe.Context.Stdout = os.Stderr
			pe.Context.PrintUsage(true)
		}
		return 80
	}
	if os.Getenv("OFFLOAD_VERBOSE") == "1" {
		cli.Verbose = true
	}
	kctx.BindTo(ctx, (*context.Context)(nil))
	err = kctx.Run(&cli.Globals)
	if err != nil {
		complain("%v", err)
	}
	var ec exitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return hook.ExitCode(err)
}

// complain writes one line for the user on stderr, after "offload: " (the hook's own
// lines go through hook's note, which does the same).
func complain(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "offload: "+format+"\n", args...)
}

// exitCoder is an error that chooses its own exit status (e.g. "a check failed").
type exitCoder interface{ ExitCode() int }

// normalizeArgs turns the pre-2019 hook invocation (NIX_BUILD_HOOK: the four hook
// arguments without the leading `offload`) into the current one.
func normalizeArgs(args []string) []string {
	if len(args) == 4 && !ourCommands[args[0]] && isUint(args[1]) && (args[2] == "0" || args[2] == "1") && isUint(args[3]) {
		return append([]string{"offload"}, args...)
	}
	return args
}

func isUint(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

// passThrough replaces this process with the real guix, so that argv, every open fd,
// the environment and the exit status reach the daemon untouched.
func passThrough(args []string) int {
	guix, err := sshexec.NewLookup().Guix()
	if err != nil {
		complain("cannot run `guix %s`: %v", args[0], err)
		return 1
	}
	argv := append([]string{"guix"}, args...)
	// Nothing is printed, even under OFFLOAD_VERBOSE=1: the daemon gives its helpers
	// (authenticate, substitute) one pipe for stdout and stderr and reads their replies
	// from it, so a trace line would corrupt the exchange (seen with a real daemon:
	// exports failed under `guix authenticate`).
	err = syscall.Exec(guix, argv, os.Environ())
	complain("exec %s: %v", guix, err)
	return 1
}
