package machines

import (
	"fmt"

	"offload/machines/scheme"
)

// Parse evaluates src, the text of the machines file named file, and
// returns its build machines. The file's value is its last top-level
// expression, which must be a list of build-machine records. A file that
// cannot be used gives an *Error saying where and why; Parse never panics.
func Parse(file string, src []byte) ([]*Machine, []Warning, error) {
	return newParser().parse(file, src)
}

// parser reads one machines file: offload's Scheme interpreter with Guix's
// build-machine record added to it, and the warnings about the file.
type parser struct {
	in         *scheme.Interp
	warnings   []Warning
	privateKey string // default private-key
}

// recordModules are the modules that define the build-machine record: (guix
// offload) since 2025, (guix scripts offload) before.
var recordModules = []string{"guix offload", "guix scripts offload"}

func newParser() *parser {
	p := &parser{in: scheme.New(), privateKey: defaultPrivateKey()}
	p.in.DefineSyntax("build-machine", p.evalBuildMachine)
	p.in.Define("build-machine?", scheme.Predicate(func(v *scheme.Value) bool {
		_, ok := machineOf(v)
		return ok
	}))
	for _, mod := range recordModules {
		p.in.DefineModule(mod, "build-machine", "build-machine?")
	}
	return p
}

func (p *parser) parse(file string, src []byte) ([]*Machine, []Warning, error) {
	last, err := p.in.EvalFile(file, src)
	if err != nil {
		return nil, p.warnings, err
	}
	if last == nil {
		return nil, nil, &Error{Pos: Pos{File: file, Line: 1, Col: 1}, Msg: "the machines file is empty; it must end with a list of build-machine records"}
	}
	items, ok := last.List()
	if !ok {
		return nil, p.warnings, &Error{Pos: last.Pos(), Msg: fmt.Sprintf("the machines file must end with a list of build-machine records, not %s", last.TypeName())}
	}
	ms := make([]*Machine, 0, len(items))
	for i, it := range items {
		m, ok := machineOf(it)
		if !ok {
			return nil, p.warnings, &Error{Pos: it.Pos(), Msg: fmt.Sprintf("element %d of the machine list is %s %s, not a build-machine record", i+1, it.TypeName(), it)}
		}
		ms = append(ms, m.clone())
	}
	p.checkDuplicates(ms)
	return ms, p.warnings, nil
}

// checkDuplicates warns about records that describe the same machine
// (name and port) differently in anything but their systems: a machine may
// be listed once per system, but two parallel-builds for one machine make
// no sense.
func (p *parser) checkDuplicates(ms []*Machine) {
	first := map[string]*Machine{}
	for _, m := range ms {
		prev, ok := first[m.ID()]
		if !ok {
			first[m.ID()] = m
			continue
		}
		if diff := differences(prev, m); len(diff) > 0 {
			p.warn(m.Pos, fmt.Sprintf("machine '%s' is also defined at %d:%d with a different %s",
				m.ID(), prev.Pos.Line, prev.Pos.Col, joinAnd(diff)))
		}
	}
}

func joinAnd(s []string) string {
	switch len(s) {
	case 1:
		return s[0]
	case 2:
		return s[0] + " and " + s[1]
	}
	out := ""
	for i, x := range s {
		switch {
		case i == len(s)-1:
			out += ", and " + x
		case i > 0:
			out += ", " + x
		default:
			out = x
		}
	}
	return out
}
