package machines

import (
	"fmt"
	"math"
	"slices"

	"offload/machines/scheme"
)

// machineRecord is a build-machine record as a value of the Scheme interpreter.
type machineRecord struct{ m *Machine }

func (r machineRecord) RecordType() string { return "build-machine" }
func (r machineRecord) RecordName() string { return r.m.Name }

// machineOf returns the machine v holds, when v is a build-machine record.
func machineOf(v *scheme.Value) (*Machine, bool) {
	r, ok := v.Record()
	if !ok {
		return nil, false
	}
	mr, ok := r.(machineRecord)
	return mr.m, ok
}

// evalBuildMachine evaluates (build-machine (FIELD VALUE) ...), Guix's
// record syntax: field names are not evaluated, values are; (inherit M)
// first copies the fields of another record.
func (p *parser) evalBuildMachine(in *scheme.Interp, x *scheme.Value, args []*scheme.Value, e *scheme.Env) (*scheme.Value, error) {
	m := &Machine{
		Port:              DefaultPort,
		PrivateKey:        p.privateKey,
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
		parts, ok := clause.List()
		var field string
		if ok && len(parts) == 2 {
			field, ok = parts[0].Symbol()
		}
		if !ok || len(parts) != 2 {
			return nil, scheme.Errorf(clause.Pos(), "bad build-machine field: %s (expected (FIELD VALUE))", clause)
		}
		if field == "inherit" {
			if i != 0 {
				return nil, scheme.Errorf(clause.Pos(), "inherit must be the first build-machine field")
			}
			v, err := in.Eval(parts[1], e)
			if err != nil {
				return nil, err
			}
			base, ok := machineOf(v)
			if !ok {
				return nil, scheme.Errorf(v.Pos(), "wrong type for field 'inherit': expected a build-machine record, got %s %s", v.TypeName(), v)
			}
			m = base.clone()
			inherited = true
			continue
		}
		if explicit[field] {
			return nil, scheme.Errorf(parts[0].Pos(), "duplicate build-machine field '%s'", field)
		}
		setter, known := fieldSetters[field]
		if !known && field != "system" {
			return nil, scheme.Errorf(parts[0].Pos(), "unknown build-machine field '%s'", field)
		}
		v, err := in.Eval(parts[1], e)
		if err != nil {
			return nil, err
		}
		if field == "system" {
			if system, err = wantString("system", v); err != nil {
				return nil, err
			}
			p.warn(parts[0].Pos(), "the 'system' field is deprecated, use 'systems' instead")
			explicit[field] = true
			continue
		}
		if err := setter(p, m, v); err != nil {
			return nil, err
		}
		explicit[field] = true
	}
	m.Pos = x.Pos()
	if err := p.finishRecord(x, m, explicit, inherited, system); err != nil {
		return nil, err
	}
	return scheme.NewRecord(machineRecord{m}, x.Pos()), nil
}

// finishRecord checks the required fields of a record read at x (an inherited record
// has them already) and settles `systems` against the deprecated `system`.
func (p *parser) finishRecord(x *scheme.Value, m *Machine, explicit map[string]bool, inherited bool, system string) error {
	if !inherited {
		for _, f := range []string{"name", "user"} {
			if !explicit[f] {
				return scheme.Errorf(x.Pos(), "build-machine record lacks required field '%s'", f)
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
		return scheme.Errorf(x.Pos(), "build-machine record lacks required field 'systems'")
	}
	if m.HostKey == "" {
		p.warn(x.Pos(), fmt.Sprintf("build-machine '%s' has no host-key field", m.Name))
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

func (p *parser) warn(at Pos, msg string) {
	w := Warning{Pos: at, Msg: msg}
	if !slices.Contains(p.warnings, w) {
		p.warnings = append(p.warnings, w)
	}
}

func typeErr(field string, v *scheme.Value, want string) error {
	return scheme.Errorf(v.Pos(), "wrong type for field '%s': expected %s, got %s %s", field, want, v.TypeName(), v)
}

func wantString(field string, v *scheme.Value) (string, error) {
	s, ok := v.Str()
	if !ok {
		return "", typeErr(field, v, "a string")
	}
	return s, nil
}

func wantInt(field string, v *scheme.Value, min, max int) (int, error) {
	if !v.IsInteger() {
		return 0, typeErr(field, v, "an integer")
	}
	n, _ := v.Number()
	if n < float64(min) || n > float64(max) {
		return 0, scheme.Errorf(v.Pos(), "field '%s' is %s, out of range [%d, %d]", field, v, min, max)
	}
	return int(n), nil
}

func wantReal(field string, v *scheme.Value) (float64, error) {
	f, ok := v.Number()
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, typeErr(field, v, "a real number")
	}
	return f, nil
}

func wantStrings(field string, v *scheme.Value) ([]string, error) {
	items, ok := v.List()
	if !ok {
		return nil, typeErr(field, v, "a list of strings")
	}
	out := []string{}
	for _, it := range items {
		s, ok := it.Str()
		if !ok {
			return nil, scheme.Errorf(it.Pos(), "wrong type in field '%s': expected a list of strings, got %s %s in it", field, it.TypeName(), it)
		}
		out = append(out, s)
	}
	return out, nil
}
