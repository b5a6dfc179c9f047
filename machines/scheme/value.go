package scheme

import (
	"strconv"
	"strings"
)

// kind is the type of a Scheme value.
type kind int

const (
	kNull kind = iota // the empty list
	kBool
	kNum
	kStr
	kSym
	kPair
	kProc
	kRecord // a Record of the interpreter's user
	kPort   // an input port of call-with-input-file
	kOpaque // an object without read syntax, known only by how it was written
	kUnspec // what define, use-modules and friends return
)

// Value is a Scheme value. Source code is made of the same values, so every
// value carries the position of the text (or the expression) it came from;
// errors about a value point there.
type Value struct {
	k     kind
	pos   Pos
	b     bool
	num   float64
	exact bool // an integer written without '.' or exponent, or computed from such
	str   string
	car   *Value
	cdr   *Value
	proc  *proc
	rec   Record
	port  *inPort
}

// Record is a value of a record type that the interpreter's user defines, through
// syntax or procedures of its own (DefineSyntax, Define); the interpreter only
// carries it, compares it by identity and writes it as #<TYPE NAME>.
type Record interface {
	// RecordType names the record type: "build-machine".
	RecordType() string
	// RecordName names the record in its written form #<TYPE NAME>.
	RecordName() string
}

// inPort is an input port over a file's text, read whole when it was opened.
type inPort struct {
	name string
	text string
	off  int
}

// proc is a procedure: a builtin or a lambda.
type proc struct {
	name    string
	builtin func(ev *Interp, call *Value, args []*Value) (*Value, error)
	params  []string
	rest    string // "" when the lambda takes a fixed number of arguments
	body    []*Value
	env     *Env
}

func mkNull(p Pos) *Value            { return &Value{k: kNull, pos: p} }
func mkBool(b bool, p Pos) *Value    { return &Value{k: kBool, b: b, pos: p} }
func mkStr(s string, p Pos) *Value   { return &Value{k: kStr, str: s, pos: p} }
func mkSym(s string, p Pos) *Value   { return &Value{k: kSym, str: s, pos: p} }
func mkUnspec(p Pos) *Value          { return &Value{k: kUnspec, pos: p} }
func cons(a, d *Value, p Pos) *Value { return &Value{k: kPair, car: a, cdr: d, pos: p} }
func mkNum(f float64, exact bool, p Pos) *Value {
	return &Value{k: kNum, num: f, exact: exact, pos: p}
}

// at returns a shallow copy of v placed at p.
func (v *Value) at(p Pos) *Value {
	c := *v
	c.pos = p
	return &c
}

// listOf builds a proper list of vs.
func listOf(vs []*Value, p Pos) *Value {
	out := mkNull(p)
	for i := len(vs) - 1; i >= 0; i-- {
		out = cons(vs[i], out, p)
	}
	out.pos = p
	return out
}

// slice returns the elements of a proper list, or ok=false.
func (v *Value) slice() (out []*Value, ok bool) {
	for ; v.k == kPair; v = v.cdr {
		out = append(out, v.car)
	}
	return out, v.k == kNull
}

func (v *Value) isSym(name string) bool { return v.k == kSym && v.str == name }

func (v *Value) truthy() bool { return !(v.k == kBool && !v.b) }

// typeName names the type of v for error messages, with an article.
func (v *Value) typeName() string {
	switch v.k {
	case kNull:
		return "the empty list"
	case kBool:
		return "a boolean"
	case kNum:
		if v.exact {
			return "an integer"
		}
		return "a real number"
	case kStr:
		return "a string"
	case kSym:
		return "a symbol"
	case kPair:
		if _, ok := v.slice(); ok {
			return "a list"
		}
		return "a pair"
	case kProc:
		return "a procedure"
	case kRecord:
		return "a " + v.rec.RecordType() + " record"
	case kPort:
		return "an input port"
	case kOpaque:
		return "an object"
	default:
		return "an unspecified value"
	}
}

// String writes v the way Scheme's write would, shortened for messages.
func (v *Value) String() string {
	var b strings.Builder
	v.write(&b, 0)
	s := b.String()
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

func (v *Value) write(b *strings.Builder, depth int) {
	if depth > 8 || b.Len() > 80 {
		b.WriteString("...")
		return
	}
	switch v.k {
	case kNull:
		b.WriteString("()")
	case kBool:
		if v.b {
			b.WriteString("#t")
		} else {
			b.WriteString("#f")
		}
	case kNum:
		b.WriteString(formatNum(v))
	case kStr:
		b.WriteString(strconv.Quote(v.str))
	case kSym:
		b.WriteString(v.str)
	case kPair:
		b.WriteByte('(')
		first := true
		for ; v.k == kPair; v = v.cdr {
			if !first {
				b.WriteByte(' ')
			}
			first = false
			v.car.write(b, depth+1)
			if b.Len() > 80 {
				b.WriteString(" ...")
				v = mkNull(v.pos)
				break
			}
		}
		if v.k != kNull {
			b.WriteString(" . ")
			v.write(b, depth+1)
		}
		b.WriteByte(')')
	case kProc:
		if v.proc.name != "" {
			b.WriteString("#<procedure " + v.proc.name + ">")
		} else {
			b.WriteString("#<procedure>")
		}
	case kRecord:
		b.WriteString("#<" + v.rec.RecordType() + " " + v.rec.RecordName() + ">")
	case kPort:
		b.WriteString("#<input: file " + v.port.name + ">")
	case kOpaque:
		b.WriteString(v.str)
	default:
		b.WriteString("#<unspecified>")
	}
}

func formatNum(v *Value) string {
	if v.exact {
		return strconv.FormatFloat(v.num, 'f', -1, 64)
	}
	s := strconv.FormatFloat(v.num, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eIN") {
		s += ".0"
	}
	return s
}

// NewSymbol returns the symbol name, placed at p.
func NewSymbol(name string, p Pos) *Value { return mkSym(name, p) }

// NewList returns the proper list of vs, placed at p.
func NewList(vs []*Value, p Pos) *Value { return listOf(vs, p) }

// NewOpaque returns an object without read syntax, known only by how it was
// written ("#<procedure car (_)>"): what Guile printed of a value it cannot write
// readably.
func NewOpaque(written string, p Pos) *Value { return &Value{k: kOpaque, str: written, pos: p} }

// NewRecord returns r as a value placed at p.
func NewRecord(r Record, p Pos) *Value { return &Value{k: kRecord, rec: r, pos: p} }

// Pos returns where v came from: the text it was read from, or the expression that
// made it.
func (v *Value) Pos() Pos { return v.pos }

// At returns a copy of v placed at p.
func (v *Value) At(p Pos) *Value { return v.at(p) }

// List returns the elements of v when it is a proper list (ok false otherwise).
func (v *Value) List() (elems []*Value, ok bool) { return v.slice() }

// Str returns the text of v when it is a string.
func (v *Value) Str() (s string, ok bool) { return v.str, v.k == kStr }

// Symbol returns the name of v when it is a symbol.
func (v *Value) Symbol() (name string, ok bool) { return v.str, v.k == kSym }

// IsSymbol reports whether v is the symbol name.
func (v *Value) IsSymbol(name string) bool { return v.isSym(name) }

// Number returns the value of v when it is a number.
func (v *Value) Number() (f float64, ok bool) { return v.num, v.k == kNum }

// IsInteger reports whether v is a number with an integral value (2 and 2.0 both).
func (v *Value) IsInteger() bool { return isInt(v) }

// IsFalse reports whether v is #f, the only false value.
func (v *Value) IsFalse() bool { return !v.truthy() }

// Record returns the record v holds, when it is one.
func (v *Value) Record() (r Record, ok bool) { return v.rec, v.k == kRecord }

// TypeName names the type of v for messages, with an article: "a string",
// "an integer", "a build-machine record".
func (v *Value) TypeName() string { return v.typeName() }
