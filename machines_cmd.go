package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"offload/hook"
	"offload/machines"
)

// MachinesCmd is `offload machines`: the machines file as the hook reads it.
type MachinesCmd struct {
	File string `arg:"" optional:"" type:"path" help:"Machines file (default: $GUIX_CONFIGURATION_DIRECTORY/machines.scm)."`
	JSON bool   `name:"json" help:"Print a JSON array with one object per machine, keyed by the Scheme field names."`
}

// lintErrors is "the machines file has errors": they were printed already.
type lintErrors struct {
	file string
	n    int
}

func (e *lintErrors) Error() string {
	if e.n == 1 {
		return fmt.Sprintf("%s: 1 error", e.file)
	}
	return fmt.Sprintf("%s: %d errors", e.file, e.n)
}
func (e *lintErrors) ExitCode() int { return 1 }

func (c *MachinesCmd) Run(ctx context.Context, g *Globals) error {
	conf := hookConfig()
	file := c.File
	if file == "" {
		file = conf.MachinesFile
	}
	return listMachines(ctx, file, c.JSON, hook.GuixLoadOptions(conf, newRunner(conf.StateDir, g)), os.Stdout, os.Stderr)
}

// listMachines prints which way the file was read (";; read by offload's own
// evaluator") and its machines on out (Scheme lines, or JSON), then the warnings and
// errors (on out as text; on errOut with --json, so that out stays JSON). It returns an
// error when the file cannot be used or a machine cannot be.
func listMachines(ctx context.Context, file string, asJSON bool, opts machines.LoadOptions, out, errOut io.Writer) error {
	loaded, err := machines.LoadWith(ctx, file, opts)
	ms, warns := loaded.Machines, loaded.Warnings
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no machines file %s: the hook offloads nothing", file)
	}
	if err != nil {
		return err
	}
	lw, lerrs := machines.LintFiles(ms)
	warns = append(warns, lw...)

	msgs := out
	if asJSON {
		fmt.Fprintf(errOut, ";; %s\n", loaded.How)
		if err := writeMachinesJSON(out, ms); err != nil {
			return err
		}
		msgs = errOut
	} else {
		fmt.Fprintf(out, ";; %s\n", loaded.How)
		for _, m := range ms {
			if _, err := fmt.Fprintf(out, "%s: %s\n", m.Pos, machines.SchemeFields(m)); err != nil {
				return err
			}
		}
	}
	for _, w := range warns {
		fmt.Fprintln(msgs, w)
	}
	for _, e := range lerrs {
		fmt.Fprintf(msgs, "%s: error: %s\n", e.Pos, e.Msg)
	}
	if len(lerrs) > 0 {
		return &lintErrors{file: file, n: len(lerrs)}
	}
	return nil
}

func writeMachinesJSON(w io.Writer, ms []*machines.Machine) error {
	if ms == nil {
		ms = []*machines.Machine{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(ms)
}
