package main

import (
	"context"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"offload/hook"
	"offload/sshexec"
)

// OffloadCmd is the build hook, started by guix-daemon as
// `offload SYSTEM MAX-SILENT-TIME PRINT-BUILD-TRACE BUILD-TIMEOUT`.
type OffloadCmd struct {
	System          string `arg:"" help:"The daemon's system type, e.g. x86_64-linux."`
	MaxSilentTime   int    `arg:"" help:"Seconds of silence after which a build is killed (0: none)."`
	PrintBuildTrace int    `arg:"" help:"1 when the client parses build traces."`
	BuildTimeout    int    `arg:"" help:"Seconds after which a build is killed (0: none)."`
}

// Run serves the daemon's requests on stdin until EOF or an accepted build ends.
func (c *OffloadCmd) Run(ctx context.Context, g *Globals) error {
	conf := hookConfig()
	conf.System = c.System
	conf.MaxSilentTime = c.MaxSilentTime
	conf.PrintBuildTrace = c.PrintBuildTrace == 1
	conf.BuildTimeout = c.BuildTimeout

	h := &hook.Hook{
		Conf:   conf,
		In:     os.Stdin,
		Answer: os.Stdout,
		Out:    os.Stderr,
		Log:    buildLog(),
		Runner: newRunner(conf.StateDir, g),
	}
	return h.Run(ctx)
}

// hookConfig is the hook's configuration from the environment, with the real guix
// found as sshexec.Lookup says (its error shows only when guix is needed).
func hookConfig() hook.Config {
	conf := hook.ConfigFromEnv(os.Getenv)
	conf.Guix, conf.GuixErr = sshexec.NewLookup().Guix()
	return conf
}

// buildLog is fd 4, where the daemon reads the build log; when the hook is run by
// hand without it, the log goes to stderr.
func buildLog() io.Writer {
	if _, err := unix.FcntlInt(4, unix.F_GETFD, 0); err == nil {
		return os.NewFile(4, "build-log")
	}
	return os.Stderr
}

// newRunner is the runner of the hook and the commands, with the ssh program found as
// sshexec.Lookup says (the daemon's PATH may have none).
func newRunner(stateDir string, g *Globals) *sshexec.Runner {
	r := &sshexec.Runner{StateDir: stateDir}
	// A slow link (or a loaded test host) may need more than DefaultConnectTimeout;
	// probes wait twice this long.
	if s, err := strconv.Atoi(os.Getenv("OFFLOAD_CONNECT_TIMEOUT")); err == nil && s > 0 {
		r.ConnectTimeout = time.Duration(s) * time.Second
	}
	r.SSH, r.NoSSH = sshexec.NewLookup().SSH()
	if g.Verbose {
		r.Trace = os.Stderr
	}
	return r
}
