// Command guixdaemon is built as a file named guix-daemon, with `guix` (the stand-in)
// beside it, to be the hook's parent as the real guix-daemon is: the hook takes the
// guix beside the daemon that started it as the real guix (the daemon's own default
// GUIX). It starts its arguments as its child with the same standard streams, fds 3
// and 4 and environment, waits, and exits with the child's status (a child killed by
// a signal is relayed by the same signal). It does nothing else of the daemon's: the
// test driver (integration/daemon) plays the protocol through it.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: guix-daemon PROGRAM [ARG...]")
		os.Exit(2)
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{os.NewFile(3, "fd3"), os.NewFile(4, "fd4")}
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			syscall.Kill(os.Getpid(), ws.Signal())
		}
		os.Exit(ee.ExitCode())
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "guix-daemon stand-in: %v\n", err)
		os.Exit(1)
	}
}
