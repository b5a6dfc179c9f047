package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"

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
			if _, err := fmt.Fprintf(out, "%s: %s\n", m.Pos, SchemeFields(m)); err != nil {
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

// SchemeFields writes every field of m, defaults included, as the build-machine
// clauses that would give it, which read back as the same machine: `(name "a") (port 22) (systems '("x86_64-linux")) ...`.
func SchemeFields(m *machines.Machine) string {
	var b strings.Builder
	field := func(name, value string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("(" + name + " " + value + ")")
	}
	field("name", schemeString(m.Name))
	field("port", strconv.Itoa(m.Port))
	field("systems", schemeList(m.Systems))
	field("user", schemeString(m.User))
	field("private-key", schemeString(m.PrivateKey))
	if m.HostKey != "" { // absent: left out (it has no default; a warning says so)
		field("host-key", schemeString(m.HostKey))
	}
	field("parallel-builds", strconv.Itoa(m.ParallelBuilds))
	field("speed", schemeReal(m.Speed))
	field("features", schemeList(m.Features))
	if m.OverloadThreshold == nil {
		field("overload-threshold", "#f")
	} else {
		field("overload-threshold", schemeReal(*m.OverloadThreshold))
	}
	field("compression", schemeString(m.Compression))
	field("compression-level", strconv.Itoa(m.CompressionLevel))
	field("daemon-socket", schemeString(m.DaemonSocket))
	field("ssh-options", schemeList(m.SSHOptions))
	return b.String()
}

// schemeString writes s as a Scheme string literal (only \ and " are escaped, as
// Guile's `write` does for printable text).
func schemeString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

func schemeList(ss []string) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = schemeString(s)
	}
	return "'(" + strings.Join(parts, " ") + ")"
}

// schemeReal writes f as an inexact Scheme number: 1.0, 0.8, 2.5.
func schemeReal(f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s
}

// machineJSON is one machine in `offload machines --json`: Scheme field names as
// keys, every default filled in; absent host-key and #f threshold are null.
type machineJSON struct {
	Name              string   `json:"name"`
	Port              int      `json:"port"`
	Systems           []string `json:"systems"`
	User              string   `json:"user"`
	PrivateKey        string   `json:"private-key"`
	HostKey           *string  `json:"host-key"`
	ParallelBuilds    int      `json:"parallel-builds"`
	Speed             float64  `json:"speed"`
	Features          []string `json:"features"`
	OverloadThreshold *float64 `json:"overload-threshold"`
	Compression       string   `json:"compression"`
	CompressionLevel  int      `json:"compression-level"`
	DaemonSocket      string   `json:"daemon-socket"`
	SSHOptions        []string `json:"ssh-options"`
}

func writeMachinesJSON(w io.Writer, ms []*machines.Machine) error {
	list := make([]machineJSON, 0, len(ms))
	nonNil := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	for _, m := range ms {
		j := machineJSON{
			Name: m.Name, Port: m.Port, Systems: nonNil(m.Systems), User: m.User, PrivateKey: m.PrivateKey,
			ParallelBuilds: m.ParallelBuilds, Speed: m.Speed, Features: nonNil(m.Features),
			OverloadThreshold: m.OverloadThreshold, Compression: m.Compression, CompressionLevel: m.CompressionLevel,
			DaemonSocket: m.DaemonSocket, SSHOptions: nonNil(m.SSHOptions),
		}
		if m.HostKey != "" {
			hk := m.HostKey
			j.HostKey = &hk
		}
		list = append(list, j)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(list)
}
