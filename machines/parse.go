package machines

import (
	"fmt"
)

// Parse evaluates src, the text of the machines file named file, and
// returns its build machines. The file's value is its last top-level
// expression, which must be a list of build-machine records. A file that
// cannot be used gives an *Error saying where and why; Parse never panics.
func Parse(file string, src []byte) ([]*Machine, []Warning, error) {
	return newEvaluator().parse(file, src)
}

func (ev *evaluator) parse(file string, src []byte) ([]*Machine, []Warning, error) {
	forms, err := newReader(file, src).readAll()
	if err != nil {
		return nil, nil, err
	}
	if len(forms) == 0 {
		return nil, nil, &Error{Pos: Pos{File: file, Line: 1, Col: 1}, Msg: "the machines file is empty; it must end with a list of build-machine records"}
	}
	var last *val
	for _, f := range forms {
		if last, err = ev.eval(f, ev.global); err != nil {
			return nil, ev.warnings, asError(err, f.pos)
		}
	}
	items, ok := last.slice()
	if !ok {
		return nil, ev.warnings, &Error{Pos: last.pos, Msg: fmt.Sprintf("the machines file must end with a list of build-machine records, not %s", last.typeName())}
	}
	ms := make([]*Machine, 0, len(items))
	for i, it := range items {
		if it.k != kMachine {
			return nil, ev.warnings, &Error{Pos: it.pos, Msg: fmt.Sprintf("element %d of the machine list is %s %s, not a build-machine record", i+1, it.typeName(), it)}
		}
		ms = append(ms, it.m.clone())
	}
	ev.checkDuplicates(ms)
	return ms, ev.warnings, nil
}

// checkDuplicates warns about records that describe the same machine
// (name and port) differently in anything but their systems: a machine may
// be listed once per system, but two parallel-builds for one machine make
// no sense.
func (ev *evaluator) checkDuplicates(ms []*Machine) {
	first := map[string]*Machine{}
	for _, m := range ms {
		prev, ok := first[m.ID()]
		if !ok {
			first[m.ID()] = m
			continue
		}
		if diff := differences(prev, m); len(diff) > 0 {
			ev.warn(m.Pos, fmt.Sprintf("machine '%s' is also defined at %d:%d with a different %s",
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
