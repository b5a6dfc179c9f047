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
func guixItems(out []byte) ([]*val, error) {
	i := bytes.LastIndex(out, []byte(guixMarker))
	if i < 0 {
		return nil, errors.New("it printed no result")
	}
	forms, err := newReader("guix repl output", out[i+len(guixMarker):]).readAll()
	if err != nil {
		return nil, fmt.Errorf("unreadable result: %v", err)
	}
	if len(forms) != 1 {
		return nil, fmt.Errorf("unreadable result: %d data", len(forms))
	}
	items, ok := forms[0].slice()
	if !ok || len(items) < 2 || !items[0].isSym("offload-machines") || !isInt(items[1]) || items[1].num != 1 {
		return nil, fmt.Errorf("unexpected result %s", forms[0])
	}
	return items[2:], nil
}

// guixLocation turns (FILE LINE COLUMN) into a Pos; #f or anything else is "not
// known" (ok false).
func guixLocation(v *val) (Pos, bool) {
	parts, ok := v.slice()
	if !ok || len(parts) != 3 || parts[0].k != kStr || !isInt(parts[1]) || !isInt(parts[2]) || parts[1].num < 1 {
		return Pos{}, false
	}
	return Pos{File: parts[0].str, Line: int(parts[1].num), Col: int(parts[2].num)}, true
}

// guixValue turns a printed value back into a value placed at p: (%symbol NAME) is a
// symbol, (%object WRITTEN) an object without read syntax.
func guixValue(v *val, p Pos) *val {
	if v.k == kPair {
		if parts, ok := v.slice(); ok && len(parts) == 2 && parts[0].k == kSym && parts[1].k == kStr {
			switch parts[0].str {
			case "%symbol":
				return mkSym(parts[1].str, p)
			case "%object":
				return &val{k: kOpaque, str: parts[1].str, pos: p}
			}
		}
		items, ok := v.slice()
		if !ok {
			return v.at(p)
		}
		out := make([]*val, len(items))
		for i, it := range items {
			out[i] = guixValue(it, p)
		}
		return listOf(out, p)
	}
	return v.at(p)
}

// guixMessage matches the "FILE:LINE:COLUMN: " that starts Guile's read errors and
// Guix's messages; Guix counts columns from 0, Guile's reader from 1 (group 4 says
// which: "error: " or "warning: " follow Guix's).
var guixMessage = regexp.MustCompile(`^(.+?):(\d+):(\d+): ((?:error|warning): )?(.*)$`)

// machinesFromGuix makes machines of the script's items, with the evaluator's own
// checks of every field (types, ranges, the same warnings as for a file it reads).
func machinesFromGuix(path string, fast *Error, items []*val) ([]*Machine, []Warning, error) {
	ev := newEvaluator()
	var ms []*Machine
	for _, it := range items {
		parts, ok := it.slice()
		if !ok || len(parts) == 0 || parts[0].k != kSym {
			return nil, nil, &Error{Pos: Pos{File: path}, Msg: fmt.Sprintf("guix repl printed an unexpected item %s", it)}
		}
		switch parts[0].str {
		case "output":
			if len(parts) == 2 && parts[1].k == kStr {
				ev.guixWarnings(path, parts[1].str)
			}
		case "error":
			if len(parts) != 3 || parts[2].k != kStr {
				return nil, nil, &Error{Pos: Pos{File: path}, Msg: fmt.Sprintf("guix repl printed an unexpected item %s", it)}
			}
			return nil, ev.warnings, guixError(path, fast, parts[1], parts[2].str)
		case "machine":
			if len(parts) < 2 {
				return nil, nil, &Error{Pos: Pos{File: path}, Msg: fmt.Sprintf("guix repl printed an unexpected item %s", it)}
			}
			m, err := ev.guixMachine(path, parts[1], parts[2:])
			if err != nil {
				return nil, ev.warnings, err
			}
			ms = append(ms, m)
		}
	}
	// Guix warns of the deprecated system field on its own warning port, which some
	// versions do not let the script capture: say it here unless guix's words came.
	saidSystem := false
	for _, w := range ev.warnings {
		saidSystem = saidSystem || strings.Contains(strings.ToLower(w.Msg), "'system' field is deprecated")
	}
	for _, m := range ms {
		if m.UsedSystemField && !saidSystem {
			ev.warn(m.Pos, "the 'system' field is deprecated, use 'systems' instead")
		}
	}
	ev.checkDuplicates(ms)
	return ms, ev.warnings, nil
}

// guixWarnings keeps the "FILE:LINE:COLUMN: warning: MSG" lines of what loading the
// file printed (Guix's warnings, such as the deprecated system field).
func (ev *evaluator) guixWarnings(path, output string) {
	for _, line := range strings.Split(output, "\n") {
		m := guixMessage.FindStringSubmatch(line)
		if m == nil || m[4] != "warning: " {
			continue
		}
		l, _ := strconv.Atoi(m[2])
		c, _ := strconv.Atoi(m[3])
		ev.warn(Pos{File: m[1], Line: l, Col: c + 1}, m[5])
	}
}

// guixError is the error guix reported, as one line FILE:LINE:COL: at its location
// when Guile gave one (in the message, as read errors and Guix's own messages do, or
// beside it); else at the form that sent the file to guix (where the evaluator found
// the same variable unbound, or else what guix said, after "guix: ").
func guixError(path string, fast *Error, loc *val, msg string) error {
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
func noSystems(v *val) bool {
	items, ok := v.slice()
	return ok && len(items) == 1 && items[0].k == kBool && !items[0].b
}

// guixMachine makes a machine of (machine LOCATION (FIELD VALUE) ...), the fields
// holding Guix's values with its defaults applied.
func (ev *evaluator) guixMachine(path string, loc *val, fields []*val) (*Machine, error) {
	p, ok := guixLocation(loc)
	if !ok {
		p = Pos{File: path}
	}
	m := &Machine{
		Port:              DefaultPort,
		ParallelBuilds:    DefaultParallelBuilds,
		Speed:             DefaultSpeed,
		OverloadThreshold: ptr(DefaultOverloadThresh),
		Compression:       DefaultCompression,
		CompressionLevel:  DefaultCompressionLevel,
		DaemonSocket:      DefaultDaemonSocket,
		Pos:               p,
	}
	for _, f := range fields {
		parts, ok := f.slice()
		if !ok || len(parts) != 2 || parts[0].k != kSym {
			return nil, &Error{Pos: p, Msg: fmt.Sprintf("guix repl printed an unexpected field %s", f)}
		}
		name, v := parts[0].str, guixValue(parts[1], p)
		switch {
		case name == "%used-system":
			m.UsedSystemField = v.truthy()
		case name == "systems" && noSystems(v):
			// Neither systems nor system: Guix makes (systems (#f)), a machine that
			// matches nothing, where offload's own evaluator reports an error.
			ev.warn(p, "build-machine has neither 'systems' nor 'system': it matches no build")
		case name == "private-key" && v.k == kBool && !v.b:
			m.PrivateKey = "" // Guix's default without HOME
		case fieldSetters[name] != nil:
			if err := fieldSetters[name](ev, m, v); err != nil {
				return nil, err
			}
		}
	}
	if m.Name == "" {
		return nil, &Error{Pos: p, Msg: "build-machine record lacks required field 'name'"}
	}
	if m.HostKey == "" {
		ev.warn(p, fmt.Sprintf("build-machine '%s' has no host-key field", m.Name))
	}
	return m, nil
}
