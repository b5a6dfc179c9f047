package machines

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"offload/machines/scheme"
)

// Field is one field of Guix's build-machine record, declared once: how the machines
// file sets it, how it is written back as Scheme, and its value for JSON and for
// comparing two records. Fields lists them in Guix's order.
type Field struct {
	Name string // as in the file: "private-key"
	// set reads the field's value from the file into m.
	set func(p *parser, m *Machine, v *scheme.Value) error
	// scheme writes the clause's value; ok false leaves the clause out (no value, or a
	// deprecated field that is printed as its replacement).
	scheme func(m *Machine) (text string, ok bool)
	// value is the field's value as JSON shows it (nil: null) and comparisons see it.
	value func(m *Machine) any
}

// Fields are the build-machine fields offload reads, in Guix's order.
var Fields []Field

// fieldSetters finds a field's setter by name.
var fieldSetters = map[string]func(p *parser, m *Machine, v *scheme.Value) error{}

func init() {
	str := func(name string, dst func(*Machine) *string) Field {
		return Field{Name: name,
			set: func(_ *parser, m *Machine, v *scheme.Value) (err error) {
				*dst(m), err = wantString(name, v)
				return err
			},
			scheme: func(m *Machine) (string, bool) { return schemeString(*dst(m)), true },
			value:  func(m *Machine) any { return *dst(m) },
		}
	}
	strs := func(name string, dst func(*Machine) *[]string) Field {
		return Field{Name: name,
			set: func(_ *parser, m *Machine, v *scheme.Value) (err error) {
				*dst(m), err = wantStrings(name, v)
				return err
			},
			scheme: func(m *Machine) (string, bool) { return schemeList(*dst(m)), true },
			value:  func(m *Machine) any { return nonNil(*dst(m)) },
		}
	}
	integer := func(name string, dst func(*Machine) *int, lo, hi int, check func(p *parser, v *scheme.Value, n int)) Field {
		return Field{Name: name,
			set: func(p *parser, m *Machine, v *scheme.Value) (err error) {
				*dst(m), err = wantInt(name, v, lo, hi)
				if err == nil && check != nil {
					check(p, v, *dst(m))
				}
				return err
			},
			scheme: func(m *Machine) (string, bool) { return strconv.Itoa(*dst(m)), true },
			value:  func(m *Machine) any { return *dst(m) },
		}
	}
	hostKey := str("host-key", func(m *Machine) *string { return &m.HostKey })
	hostKey.scheme = func(m *Machine) (string, bool) { return schemeString(m.HostKey), m.HostKey != "" } // no default
	hostKey.value = func(m *Machine) any {
		if m.HostKey == "" {
			return nil
		}
		return m.HostKey
	}
	Fields = []Field{
		str("name", func(m *Machine) *string { return &m.Name }),
		integer("port", func(m *Machine) *int { return &m.Port }, 1, 65535, nil),
		strs("systems", func(m *Machine) *[]string { return &m.Systems }),
		str("user", func(m *Machine) *string { return &m.User }),
		str("private-key", func(m *Machine) *string { return &m.PrivateKey }),
		hostKey,
		integer("parallel-builds", func(m *Machine) *int { return &m.ParallelBuilds }, math.MinInt32, math.MaxInt32,
			func(p *parser, v *scheme.Value, n int) {
				if n < 1 {
					p.warn(v.Pos(), fmt.Sprintf("parallel-builds is %d: nothing will be offloaded to this machine", n))
				}
			}),
		{Name: "speed",
			set: func(p *parser, m *Machine, v *scheme.Value) (err error) {
				m.Speed, err = wantReal("speed", v)
				if err == nil && m.Speed <= 0 {
					p.warn(v.Pos(), fmt.Sprintf("speed is %s: it should be positive", v))
				}
				return err
			},
			scheme: func(m *Machine) (string, bool) { return schemeReal(m.Speed), true },
			value:  func(m *Machine) any { return m.Speed },
		},
		strs("features", func(m *Machine) *[]string { return &m.Features }),
		{Name: "overload-threshold",
			set: func(p *parser, m *Machine, v *scheme.Value) error {
				if v.IsFalse() {
					m.OverloadThreshold = nil
					return nil
				}
				f, err := wantReal("overload-threshold", v)
				if err != nil {
					return typeErr("overload-threshold", v, "a real number or #f")
				}
				if f < 0 || f > 1 {
					p.warn(v.Pos(), fmt.Sprintf("overload-threshold is %s, outside [0, 1]", v))
				}
				m.OverloadThreshold = &f
				return nil
			},
			scheme: func(m *Machine) (string, bool) {
				if m.OverloadThreshold == nil {
					return "#f", true
				}
				return schemeReal(*m.OverloadThreshold), true
			},
			value: func(m *Machine) any {
				if m.OverloadThreshold == nil {
					return nil
				}
				return *m.OverloadThreshold
			},
		},
		str("compression", func(m *Machine) *string { return &m.Compression }),
		integer("compression-level", func(m *Machine) *int { return &m.CompressionLevel }, math.MinInt32, math.MaxInt32, nil),
		str("daemon-socket", func(m *Machine) *string { return &m.DaemonSocket }),
		{Name: "ssh-options",
			set: func(p *parser, m *Machine, v *scheme.Value) (err error) {
				// Guix's build-machine has no such field (checked with Guix's own
				// reading of such a file: "extraneous field initializers").
				p.warn(v.Pos(), "ssh-options is not a field of Guix's build-machine: Guix's own hook refuses this file; put ssh options in ssh_config instead (README)")
				if s, ok := v.Str(); ok {
					m.SSHOptions = []string{s}
					return nil
				}
				m.SSHOptions, err = wantStrings("ssh-options", v)
				if err != nil {
					return typeErr("ssh-options", v, "a list of strings or a string")
				}
				return nil
			},
			scheme: func(m *Machine) (string, bool) { return schemeList(m.SSHOptions), true },
			value:  func(m *Machine) any { return nonNil(m.SSHOptions) },
		},
	}
	for _, f := range Fields {
		fieldSetters[f.Name] = f.set
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// SchemeFields writes every field of m, defaults included, as the build-machine
// clauses that would give it, which read back as the same machine:
// `(name "a") (port 22) (systems '("x86_64-linux")) ...`.
func SchemeFields(m *Machine) string {
	var parts []string
	for _, f := range Fields {
		if text, ok := f.scheme(m); ok {
			parts = append(parts, "("+f.Name+" "+text+")")
		}
	}
	return strings.Join(parts, " ")
}

// MarshalJSON writes m as one object with the Scheme field names as keys, in Guix's
// order, every default filled in; an absent host-key and a #f threshold are null.
func (m *Machine) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range Fields {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.Name)
		v, err := json.Marshal(f.value(m))
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// differences names the fields other than name, port and systems in which a and b
// differ.
func differences(a, b *Machine) []string {
	var out []string
	for _, f := range Fields {
		switch f.Name {
		case "name", "port", "systems":
			continue
		}
		if !reflect.DeepEqual(f.value(a), f.value(b)) {
			out = append(out, f.Name)
		}
	}
	return out
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
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !math.IsInf(f, 0) && !math.IsNaN(f) && !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s
}
