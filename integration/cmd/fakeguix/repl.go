package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// guileModules are the Guix modules that `repl` puts on Guile's load path: (guix
// offload), with the build-machine record as Guix defines it (field names, defaults,
// required fields, the location of each record), and the part of (guix diagnostics)
// it needs.
//
//go:embed guile
var guileModules embed.FS

// repl is `guix repl [OPTIONS] [-- FILE ARGS...]` as Guix implements it for what
// offload uses: with FILE, it runs FILE as a Guile script whose (command-line) is
// FILE ARGS..., with ~/.guile not loaded, and exits with its status. Here Debian's
// Guile (guile-3.0) runs it, with the modules above on its load path, so the machines
// file is evaluated by Guile itself. Without FILE Guix starts a REPL (-t guile or
// machine): not implemented here.
func (e *env) repl(ctx context.Context, args []string) error {
	var script []string
	var loadPath []string
	replType := "guile"
	o := &options{args: args}
	for {
		name, isOpt, ok := o.next()
		if !ok {
			break
		}
		if !isOpt {
			script = append(script, name)
			continue
		}
		switch optName(name) {
		case "t", "type", "listen":
			n, v, err := o.value(name)
			if err != nil {
				return err
			}
			if n == "t" || n == "type" {
				replType = v
			}
		case "L", "load-path":
			_, v, err := o.value(name)
			if err != nil {
				return err
			}
			loadPath = append(loadPath, v)
		case "q", "i", "interactive":
			// -q: implied by FILE; -i: a REPL after FILE, which is not implemented.
		case "h", "help":
			fmt.Fprintln(e.stdout, "Usage: guix repl [OPTIONS...] [-- FILE ARGS...]")
			return nil
		default:
			return fail("%s: unrecognized option", optName(name))
		}
	}
	if len(script) == 0 {
		// Guix checks the type only here, when it starts a REPL.
		if replType != "guile" && replType != "machine" {
			return fail("%s: unknown type of REPL", replType)
		}
		return fail("fakeguix: `guix repl` without a script (an interactive REPL) is not implemented")
	}
	guile, err := findGuile()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "fakeguix-modules-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := writeModules(dir); err != nil {
		return err
	}
	argv := []string{"--no-auto-compile", "-q"}
	for _, d := range append(loadPath, dir) {
		argv = append(argv, "-L", d)
	}
	// -s: what follows is FILE ARGS, even if it looks like an option.
	argv = append(argv, "-s")
	argv = append(argv, script...)
	cmd := exec.CommandContext(ctx, guile, argv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdin, e.stdout, e.stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return &exitError{status: 128 + int(ws.Signal())}
		}
		return &exitError{status: ee.ExitCode()}
	}
	return err
}

// findGuile returns Debian's guile-3.0: `guile` on PATH, else `guile-3.0`, else where
// Debian installs them (the daemon's PATH on Guix System has neither; real guix has its
// Guile at a fixed path, as this stand-in then does).
func findGuile() (string, error) {
	for _, name := range []string{"guile", "guile-3.0", "/usr/bin/guile", "/usr/bin/guile-3.0"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fail("fakeguix: `guix repl` needs Guile: no guile or guile-3.0 on PATH (apt-get install guile-3.0)")
}

func writeModules(dir string) error {
	return fs.WalkDir(guileModules, "guile", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("guile", p)
		dst := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := guileModules.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
}
