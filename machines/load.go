package machines

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"offload/machines/scheme"
)

// guixScript is the program that guix runs to evaluate a machines file the way
// Guix's own hook does and print its machines as data (see the file's comment).
//
//go:embed guix-machines.scm
var guixScript []byte

// GuixFunc runs `GUIX repl -- SCRIPT FILE` and returns what it printed on stdout; an
// error when it could not run or exited non-zero. It is the caller's: package
// machines starts no process.
type GuixFunc func(ctx context.Context, script, file string) (stdout []byte, err error)

// LoadOptions say how LoadWith may read a file its evaluator cannot evaluate.
type LoadOptions struct {
	// Guix, when not nil, runs the real guix on such a file; nil: such a file is an
	// error (the evaluator's, saying what it lacks).
	Guix GuixFunc
	// GuixProgram names the guix that Guix runs, for messages and How.
	GuixProgram string
}

// ReadBy says which way a machines file was read.
type ReadBy int

const (
	// ByEvaluator: offload's own evaluator read the whole file.
	ByEvaluator ReadBy = iota
	// ByGuix: the real guix evaluated it (guix repl), as Guix's hook would.
	ByGuix
)

// How says how a machines file was read, for `offload machines`.
type How struct {
	By   ReadBy
	Guix string // the guix program (ByGuix)
	Why  string // what the evaluator could not do, "the file uses primitive-load" (ByGuix)
}

// String is one line: "read by offload's own evaluator", or "evaluated by
// /path/guix repl (the file uses primitive-load)".
func (h How) String() string {
	if h.By == ByGuix {
		return fmt.Sprintf("evaluated by %s repl (%s)", h.Guix, h.Why)
	}
	return "read by offload's own evaluator"
}

// Loaded is a machines file read by LoadWith.
type Loaded struct {
	Machines []*Machine
	Warnings []Warning
	How      How
}

// LoadWith reads the machines file at path as Load does, and hands a file that
// offload's evaluator cannot evaluate (an *Error with Unsupported set: the file uses
// primitive-load, a module or procedure the evaluator does not know, ...) to
// opts.Guix, which evaluates it with Guix's own build-machine record, exactly as
// Guix's hook would now. Nothing is cached: every call reads the file afresh (and
// runs guix again), since what such a file returns may change at any moment (it may
// ask Shepherd whether a virtual machine runs).
//
// A missing file gives an error wrapping fs.ErrNotExist; a file that cannot be used
// gives an *Error saying where (FILE:LINE:COLUMN when known) and why.
func LoadWith(ctx context.Context, path string, opts LoadOptions) (Loaded, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return Loaded{}, fmt.Errorf("read machines file: %w", err)
	}
	ms, ws, err := Parse(path, src)
	var pe *Error
	if err == nil || !errors.As(err, &pe) || pe.Unsupported == "" {
		return Loaded{Machines: ms, Warnings: ws, How: How{By: ByEvaluator}}, err
	}
	if opts.Guix == nil {
		return Loaded{How: How{By: ByEvaluator}}, &Error{Pos: pe.Pos,
			Msg: pe.Msg + " (offload's evaluator cannot evaluate this; guix could, but none was given)"}
	}
	program := opts.GuixProgram
	if program == "" {
		program = "guix"
	}
	how := How{By: ByGuix, Guix: program, Why: "the file uses " + pe.Unsupported}
	ms, ws, err = loadByGuix(ctx, path, pe, how, opts.Guix)
	if err != nil {
		return Loaded{How: how}, err
	}
	return Loaded{Machines: ms, Warnings: ws, How: how}, nil
}

// loadByGuix has guix evaluate the file; fast is the evaluator's error that sent it
// there.
func loadByGuix(ctx context.Context, path string, fast *Error, how How, guix GuixFunc) ([]*Machine, []Warning, error) {
	script, err := os.CreateTemp("", "offload-machines-*.scm")
	if err != nil {
		return nil, nil, &Error{Pos: Pos{File: path}, Msg: fmt.Sprintf("%s, and guix is needed: %v", fast.Msg, err)}
	}
	defer os.Remove(script.Name())
	_, werr := script.Write(guixScript)
	if cerr := script.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, nil, &Error{Pos: Pos{File: path}, Msg: fmt.Sprintf("%s, and guix is needed: %v", fast.Msg, werr)}
	}
	out, runErr := guix(ctx, script.Name(), path)
	items, perr := guixItems(out)
	if perr != nil {
		why := perr
		if runErr != nil {
			why = runErr
		}
		return nil, nil, &Error{Pos: fast.Pos, Msg: fmt.Sprintf("cannot have %s repl evaluate the file (%s): %v", how.Guix, how.Why, why)}
	}
	return machinesFromGuix(path, fast, items)
}

const guixMarker = ";; offload-machines\n"

// guixItems returns the items of the (offload-machines 1 ITEM ...) datum that the
// script printed after its marker line.
func guixItems(out []byte) ([]*scheme.Value, error) {
	i := bytes.LastIndex(out, []byte(guixMarker))
	if i < 0 {
		return nil, errors.New("it printed no result")
	}
	forms, err := scheme.Read("guix repl output", out[i+len(guixMarker):])
	if err != nil {
		return nil, fmt.Errorf("unreadable result: %v", err)
	}
	if len(forms) != 1 {
		return nil, fmt.Errorf("unreadable result: %d data", len(forms))
	}
	items, ok := forms[0].List()
	if ok && len(items) >= 2 {
		version, _ := items[1].Number()
		ok = items[0].IsSymbol("offload-machines") && items[1].IsInteger() && version == 1
	}
	if !ok || len(items) < 2 {
		return nil, fmt.Errorf("unexpected result %s", forms[0])
	}
	return items[2:], nil
}

// guixLocation turns (FILE LINE COLUMN) into a Pos; #f or anything else is "not
// known" (ok false).
func guixLocation(v *scheme.Value) (Pos, bool) {
	parts, ok := v.List()
	if !ok || len(parts) != 3 || !parts[1].IsInteger() || !parts[2].IsInteger() {
		return Pos{}, false
	}
	file, ok := parts[0].Str()
	line, _ := parts[1].Number()
	col, _ := parts[2].Number()
	if !ok || line < 1 {
		return Pos{}, false
	}
	return Pos{File: file, Line: int(line), Col: int(col)}, true
}

// guixValue turns a printed value back into a value placed at p: (%symbol NAME) is a
// symbol, (%object WRITTEN) an object without read syntax.
func guixValue(v *scheme.Value, p Pos) *scheme.Value {
	items, ok := v.List()
	if !ok || len(items) == 0 {
		return v.At(p)
	}
	if len(items) == 2 {
		tag, isSym := items[0].Symbol()
		text, isStr := items[1].Str()
		switch {
		case isSym && isStr && tag == "%symbol":
			return scheme.NewSymbol(text, p)
		case isSym && isStr && tag == "%object":
			return scheme.NewOpaque(text, p)
		}
	}
	out := make([]*scheme.Value, len(items))
	for i, it := range items {
		out[i] = guixValue(it, p)
	}
	return scheme.NewList(out, p)
}

// guixMessage matches the "FILE:LINE:COLUMN: " that starts Guile's read errors and
// Guix's messages; Guix counts columns from 0, Guile's reader from 1 (group 4 says
// which: "error: " or "warning: " follow Guix's).
var guixMessage = regexp.MustCompile(`^(.+?):(\d+):(\d+): ((?:error|warning): )?(.*)$`)

// machinesFromGuix makes machines of the script's items, with the evaluator's own
// checks of every field (types, ranges, the same warnings as for a file it reads).
func machinesFromGuix(path string, fast *Error, items []*scheme.Value) ([]*Machine, []Warning, error) {
	p := newParser()
	var ms []*Machine
	for _, it := range items {
		parts, ok := it.List()
		var tag string
		if ok && len(parts) > 0 {
			tag, ok = parts[0].Symbol()
		}
		if !ok || len(parts) == 0 {
			return nil, nil, &Error{Pos: Pos{File: path}, Msg: fmt.Sprintf("guix repl printed an unexpected item %s", it)}
		}
		switch tag {
		case "output":
			if len(parts) != 2 {
				break
			}
			if text, ok := parts[1].Str(); ok {
				p.guixWarnings(text)
			}
		case "error":
			var msg string
			if len(parts) == 3 {
				msg, ok = parts[2].Str()
			}
			if len(parts) != 3 || !ok {
				return nil, nil, &Error{Pos: Pos{File: path}, Msg: fmt.Sprintf("guix repl printed an unexpected item %s", it)}
			}
			return nil, p.warnings, guixError(fast, parts[1], msg)
		case "machine":
			if len(parts) < 2 {
				return nil, nil, &Error{Pos: Pos{File: path}, Msg: fmt.Sprintf("guix repl printed an unexpected item %s", it)}
			}
			m, err := p.guixMachine(path, parts[1], parts[2:])
			if err != nil {
				return nil, p.warnings, err
			}
			ms = append(ms, m)
		}
	}
	// Guix warns of the deprecated system field on its own warning port, which some
	// versions do not let the script capture: say it here unless guix's words came.
	saidSystem := false
	for _, w := range p.warnings {
		saidSystem = saidSystem || strings.Contains(strings.ToLower(w.Msg), "'system' field is deprecated")
	}
	for _, m := range ms {
		if m.UsedSystemField && !saidSystem {
			p.warn(m.Pos, "the 'system' field is deprecated, use 'systems' instead")
		}
	}
	p.checkDuplicates(ms)
	return ms, p.warnings, nil
}

// guixWarnings keeps the "FILE:LINE:COLUMN: warning: MSG" lines of what loading the
// file printed (Guix's warnings, such as the deprecated system field).
func (p *parser) guixWarnings(output string) {
	for _, line := range strings.Split(output, "\n") {
		m := guixMessage.FindStringSubmatch(line)
		if m == nil || m[4] != "warning: " {
			continue
		}
		l, _ := strconv.Atoi(m[2])
		c, _ := strconv.Atoi(m[3])
		p.warn(Pos{File: m[1], Line: l, Col: c + 1}, m[5])
	}
}

// guixError is the error guix reported, as one line FILE:LINE:COL: at its location
// when Guile gave one (in the message, as read errors and Guix's own messages do, or
// beside it); else at the form that sent the file to guix (where the evaluator found
// the same variable unbound, or else what guix said, after "guix: ").
func guixError(fast *Error, loc *scheme.Value, msg string) error {
	if p, ok := guixLocation(loc); ok {
		return &Error{Pos: p, Msg: msg}
	}
	if m := guixMessage.FindStringSubmatch(msg); m != nil {
		l, _ := strconv.Atoi(m[2])
		c, _ := strconv.Atoi(m[3])
		if m[4] != "" {
			c++ // Guix's column, from 0
		}
		return &Error{Pos: Pos{File: m[1], Line: l, Col: c}, Msg: m[5]}
	}
	if v, ok := strings.CutPrefix(msg, "Unbound variable: "); ok && v == fast.Unsupported {
		return &Error{Pos: fast.Pos, Msg: "unbound variable: " + v}
	}
	// No place from Guile: at the form that sent the file to guix.
	return &Error{Pos: fast.Pos, Msg: "guix: " + msg}
}

// noSystems tells Guix's value of systems for a record that has neither systems nor
// system: (#f).
func noSystems(v *scheme.Value) bool {
	items, ok := v.List()
	return ok && len(items) == 1 && items[0].IsFalse()
}

// guixMachine makes a machine of (machine LOCATION (FIELD VALUE) ...), the fields
// holding Guix's values with its defaults applied.
func (p *parser) guixMachine(path string, loc *scheme.Value, fields []*scheme.Value) (*Machine, error) {
	at, ok := guixLocation(loc)
	if !ok {
		at = Pos{File: path}
	}
	m := &Machine{
		Port:              DefaultPort,
		ParallelBuilds:    DefaultParallelBuilds,
		Speed:             DefaultSpeed,
		OverloadThreshold: ptr(DefaultOverloadThresh),
		Compression:       DefaultCompression,
		CompressionLevel:  DefaultCompressionLevel,
		DaemonSocket:      DefaultDaemonSocket,
		Pos:               at,
	}
	for _, f := range fields {
		parts, ok := f.List()
		var name string
		if ok && len(parts) == 2 {
			name, ok = parts[0].Symbol()
		}
		if !ok || len(parts) != 2 {
			return nil, &Error{Pos: at, Msg: fmt.Sprintf("guix repl printed an unexpected field %s", f)}
		}
		v := guixValue(parts[1], at)
		switch {
		case name == "%used-system":
			m.UsedSystemField = !v.IsFalse()
		case name == "systems" && noSystems(v):
			// Neither systems nor system: Guix makes (systems (#f)), a machine that
			// matches nothing, where offload's own evaluator reports an error.
			p.warn(at, "build-machine has neither 'systems' nor 'system': it matches no build")
		case name == "private-key" && v.IsFalse():
			m.PrivateKey = "" // Guix's default without HOME
		case fieldSetters[name] != nil:
			if err := fieldSetters[name](p, m, v); err != nil {
				return nil, err
			}
		}
	}
	if m.Name == "" {
		return nil, &Error{Pos: at, Msg: "build-machine record lacks required field 'name'"}
	}
	if m.HostKey == "" {
		p.warn(at, fmt.Sprintf("build-machine '%s' has no host-key field", m.Name))
	}
	return m, nil
}
