package storeio

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
)

// Output is one derivation output: its name, store path and, for
// fixed-output derivations, the hash algorithm and hash ("" otherwise).
type Output struct {
	Name, Path, HashAlgo, Hash string
}

// InputDrv is an input derivation and the outputs of it that are needed.
type InputDrv struct {
	Path    string
	Outputs []string
}

// EnvVar is one environment variable of the builder, in file order.
type EnvVar struct {
	Name, Value string
}

// Derivation is the content of a .drv file. Slices keep file order, so
// ParseDerivation followed by Bytes reproduces the file byte for byte.
type Derivation struct {
	Path      string // the .drv store path (not part of the text)
	Outputs   []Output
	InputDrvs []InputDrv
	InputSrcs []string
	System    string
	Builder   string
	Args      []string
	Env       []EnvVar
}

// Getenv returns the value of the builder variable name.
func (d *Derivation) Getenv(name string) (string, bool) {
	for _, e := range d.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// Output returns the output called name.
func (d *Derivation) Output(name string) (Output, bool) {
	for _, o := range d.Outputs {
		if o.Name == name {
			return o, true
		}
	}
	return Output{}, false
}

// OutputPaths returns the output paths in file order (sorted by name).
func (d *Derivation) OutputPaths() []string {
	var ps []string
	for _, o := range d.Outputs {
		ps = append(ps, o.Path)
	}
	return ps
}

// Features returns the requiredSystemFeatures of the derivation.
func (d *Derivation) Features() []string {
	v, _ := d.Getenv("requiredSystemFeatures")
	return strings.Fields(v)
}

// Bytes prints d in the ATerm form the daemon writes.
func (d *Derivation) Bytes() []byte {
	var b bytes.Buffer
	b.WriteString("Derive([")
	for i, o := range d.Outputs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		writeStrings(&b, o.Name, o.Path, o.HashAlgo, o.Hash)
		b.WriteByte(')')
	}
	b.WriteString("],[")
	for i, in := range d.InputDrvs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		writeString(&b, in.Path)
		b.WriteString(",[")
		writeStrings(&b, in.Outputs...)
		b.WriteString("])")
	}
	b.WriteString("],[")
	writeStrings(&b, d.InputSrcs...)
	b.WriteString("],")
	writeStrings(&b, d.System, d.Builder)
	b.WriteString(",[")
	writeStrings(&b, d.Args...)
	b.WriteString("],[")
	for i, e := range d.Env {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		writeStrings(&b, e.Name, e.Value)
		b.WriteByte(')')
	}
	b.WriteString("])")
	return b.Bytes()
}

func writeStrings(b *bytes.Buffer, ss ...string) {
	for i, s := range ss {
		if i > 0 {
			b.WriteByte(',')
		}
		writeString(b, s)
	}
}

func writeString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// ParseDerivation reads the ATerm text of a .drv file. path is recorded as d.Path.
func ParseDerivation(path string, text []byte) (*Derivation, error) {
	p := &parser{s: text}
	d, err := p.derivation()
	if err != nil {
		return nil, fmt.Errorf("parse derivation %s: %w", path, err)
	}
	d.Path = path
	return d, nil
}

type parser struct {
	s   []byte
	pos int
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("at byte %d: %s", p.pos, fmt.Sprintf(format, args...))
}

func (p *parser) expect(lit string) error {
	if !bytes.HasPrefix(p.s[p.pos:], []byte(lit)) {
		return p.errorf("expected %q", lit)
	}
	p.pos += len(lit)
	return nil
}

// peek reports whether the next byte is c.
func (p *parser) peek(c byte) bool { return p.pos < len(p.s) && p.s[p.pos] == c }

func (p *parser) str() (string, error) {
	if err := p.expect(`"`); err != nil {
		return "", err
	}
	var b strings.Builder
	for {
		if p.pos >= len(p.s) {
			return "", p.errorf("unterminated string")
		}
		c := p.s[p.pos]
		p.pos++
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if p.pos >= len(p.s) {
				return "", p.errorf("unterminated string")
			}
			e := p.s[p.pos]
			p.pos++
			switch e {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
		}
	}
}

// list parses "[" item ("," item)* "]" calling item for each element.
func (p *parser) list(item func() error) error {
	if err := p.expect("["); err != nil {
		return err
	}
	if p.peek(']') {
		p.pos++
		return nil
	}
	for {
		if err := item(); err != nil {
			return err
		}
		if p.peek(',') {
			p.pos++
			continue
		}
		return p.expect("]")
	}
}

func (p *parser) strList() ([]string, error) {
	var out []string
	err := p.list(func() error {
		s, err := p.str()
		out = append(out, s)
		return err
	})
	return out, err
}

// tuple parses "(" s1 "," s2 ... ")" of n strings.
func (p *parser) tuple(n int) ([]string, error) {
	if err := p.expect("("); err != nil {
		return nil, err
	}
	out := make([]string, n)
	for i := range n {
		if i > 0 {
			if err := p.expect(","); err != nil {
				return nil, err
			}
		}
		s, err := p.str()
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, p.expect(")")
}

func (p *parser) derivation() (*Derivation, error) {
	d := &Derivation{}
	if err := p.expect("Derive("); err != nil {
		return nil, err
	}
	err := p.list(func() error {
		t, err := p.tuple(4)
		if err == nil {
			d.Outputs = append(d.Outputs, Output{t[0], t[1], t[2], t[3]})
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := p.expect(","); err != nil {
		return nil, err
	}
	err = p.list(func() error {
		if err := p.expect("("); err != nil {
			return err
		}
		path, err := p.str()
		if err != nil {
			return err
		}
		if err := p.expect(","); err != nil {
			return err
		}
		outs, err := p.strList()
		if err != nil {
			return err
		}
		d.InputDrvs = append(d.InputDrvs, InputDrv{path, outs})
		return p.expect(")")
	})
	if err != nil {
		return nil, err
	}
	if err := p.expect(","); err != nil {
		return nil, err
	}
	if d.InputSrcs, err = p.strList(); err != nil {
		return nil, err
	}
	if err := p.expect(","); err != nil {
		return nil, err
	}
	if d.System, err = p.str(); err != nil {
		return nil, err
	}
	if err := p.expect(","); err != nil {
		return nil, err
	}
	if d.Builder, err = p.str(); err != nil {
		return nil, err
	}
	if err := p.expect(","); err != nil {
		return nil, err
	}
	if d.Args, err = p.strList(); err != nil {
		return nil, err
	}
	if err := p.expect(","); err != nil {
		return nil, err
	}
	err = p.list(func() error {
		t, err := p.tuple(2)
		if err == nil {
			d.Env = append(d.Env, EnvVar{t[0], t[1]})
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := p.expect(")"); err != nil {
		return nil, err
	}
	if p.pos != len(p.s) {
		return nil, p.errorf("trailing data after derivation")
	}
	if len(d.Outputs) == 0 {
		return nil, fmt.Errorf("derivation has no outputs")
	}
	return d, nil
}

// Normalize sorts everything the daemon keeps sorted (outputs by name,
// input derivations by path, their outputs, sources, env by name).
func (d *Derivation) Normalize() {
	sort.Slice(d.Outputs, func(i, j int) bool { return d.Outputs[i].Name < d.Outputs[j].Name })
	sort.Slice(d.InputDrvs, func(i, j int) bool { return d.InputDrvs[i].Path < d.InputDrvs[j].Path })
	for _, in := range d.InputDrvs {
		sort.Strings(in.Outputs)
	}
	sort.Strings(d.InputSrcs)
	sort.SliceStable(d.Env, func(i, j int) bool { return d.Env[i].Name < d.Env[j].Name })
}
