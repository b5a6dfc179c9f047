package machines

import (
	"fmt"
	"math"
	"slices"
)

// evalBuildMachine evaluates (build-machine (FIELD VALUE) ...), Guix's
// record syntax: field names are not evaluated, values are; (inherit M)
// first copies the fields of another record.
func evalBuildMachine(ev *evaluator, x *val, args []*val, e *env) (*val, error) {
	m := &Machine{
		Port:              DefaultPort,
		PrivateKey:        ev.privateKey,
		ParallelBuilds:    DefaultParallelBuilds,
		Speed:             DefaultSpeed,
		OverloadThreshold: ptr(DefaultOverloadThresh),
		Compression:       DefaultCompression,
		CompressionLevel:  DefaultCompressionLevel,
		DaemonSocket:      DefaultDaemonSocket,
	}
	inherited := false
	explicit := map[string]bool{}
	var system string
	for i, clause := range args {
		parts, ok := clause.slice()
		if !ok || len(parts) != 2 || parts[0].k != kSym {
			return nil, errAt(clause.pos, "bad build-machine field: %s (expected (FIELD VALUE))", clause)
		}
		field := parts[0].str
		if field == "inherit" {
			if i != 0 {
				return nil, errAt(clause.pos, "inherit must be the first build-machine field")
			}
			v, err := ev.eval(parts[1], e)
			if err != nil {
				return nil, err
			}
			if v.k != kMachine {
				return nil, errAt(v.pos, "wrong type for field 'inherit': expected a build-machine record, got %s %s", v.typeName(), v)
			}
			m = v.m.clone()
			inherited = true
			continue
		}
		if explicit[field] {
			return nil, errAt(parts[0].pos, "duplicate build-machine field '%s'", field)
		}
		setter, known := fieldSetters[field]
		if !known && field != "system" {
			return nil, errAt(parts[0].pos, "unknown build-machine field '%s'", field)
		}
		v, err := ev.eval(parts[1], e)
		if err != nil {
			return nil, err
		}
		if field == "system" {
			if system, err = wantString("system", v); err != nil {
				return nil, err
			}
			ev.warn(parts[0].pos, "the 'system' field is deprecated, use 'systems' instead")
			explicit[field] = true
			continue
		}
		if err := setter(ev, m, v); err != nil {
			return nil, err
		}
		explicit[field] = true
	}
	m.Pos = x.pos
	if err := finishRecord(ev, x, m, explicit, inherited, system); err != nil {
		return nil, err
	}
	return &val{k: kMachine, m: m, pos: x.pos}, nil
}

// finishRecord checks the required fields of a record read at x (an inherited record
// has them already) and settles `systems` against the deprecated `system`.
func finishRecord(ev *evaluator, x *val, m *Machine, explicit map[string]bool, inherited bool, system string) error {
	if !inherited {
		for _, f := range []string{"name", "user"} {
			if !explicit[f] {
				return errAt(x.pos, "build-machine record lacks required field '%s'", f)
			}
		}
	}
	switch {
	case explicit["systems"]:
		// Guix prefers `systems` when both are given.
		m.UsedSystemField = false
	case explicit["system"]:
		m.Systems = []string{system}
		m.UsedSystemField = true
	case !inherited:
		return errAt(x.pos, "build-machine record lacks required field 'systems'")
	}
	if m.HostKey == "" {
		ev.warn(x.pos, fmt.Sprintf("build-machine '%s' has no host-key field", m.Name))
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func (m *Machine) clone() *Machine {
	c := *m
	c.Systems = slices.Clone(m.Systems)
	c.Features = slices.Clone(m.Features)
	c.SSHOptions = slices.Clone(m.SSHOptions)
	if m.OverloadThreshold != nil {
		c.OverloadThreshold = ptr(*m.OverloadThreshold)
	}
	return &c
}

func (ev *evaluator) warn(p Pos, msg string) {
	w := Warning{Pos: p, Msg: msg}
	if !slices.Contains(ev.warnings, w) {
		ev.warnings = append(ev.warnings, w)
	}
}

func typeErr(field string, v *val, want string) error {
	return errAt(v.pos, "wrong type for field '%s': expected %s, got %s %s", field, want, v.typeName(), v)
}

func wantString(field string, v *val) (string, error) {
	if v.k != kStr {
		return "", typeErr(field, v, "a string")
	}
	return v.str, nil
}

func wantInt(field string, v *val, min, max int) (int, error) {
	if !isInt(v) {
		return 0, typeErr(field, v, "an integer")
	}
	if v.num < float64(min) || v.num > float64(max) {
		return 0, errAt(v.pos, "field '%s' is %s, out of range [%d, %d]", field, formatNum(v), min, max)
	}
	return int(v.num), nil
}

func wantReal(field string, v *val) (float64, error) {
	if v.k != kNum || math.IsNaN(v.num) || math.IsInf(v.num, 0) {
		return 0, typeErr(field, v, "a real number")
	}
	return v.num, nil
}

func wantStrings(field string, v *val) ([]string, error) {
	items, ok := v.slice()
	if !ok {
		return nil, typeErr(field, v, "a list of strings")
	}
	out := []string{}
	for _, it := range items {
		if it.k != kStr {
			return nil, errAt(it.pos, "wrong type in field '%s': expected a list of strings, got %s %s in it", field, it.typeName(), it)
		}
		out = append(out, it.str)
	}
	return out, nil
}
