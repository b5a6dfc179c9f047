package machines

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
	kMachine
	kPort   // an input port of call-with-input-file
	kOpaque // a Guile object without read syntax, in what guix repl printed
	kUnspec // what define, use-modules and friends return
)

// val is a Scheme value. Source code is made of the same values, so every
// value carries the position of the text (or the expression) it came from;
// errors about a value point there.
type val struct {
	k     kind
	pos   Pos
	b     bool
	num   float64
	exact bool // an integer written without '.' or exponent, or computed from such
	str   string
	car   *val
	cdr   *val
	proc  *proc
	m     *Machine
	port  *inPort
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
	builtin func(ev *evaluator, call *val, args []*val) (*val, error)
	params  []string
	rest    string // "" when the lambda takes a fixed number of arguments
	body    []*val
	env     *env
}

func mkNull(p Pos) *val          { return &val{k: kNull, pos: p} }
func mkBool(b bool, p Pos) *val  { return &val{k: kBool, b: b, pos: p} }
func mkStr(s string, p Pos) *val { return &val{k: kStr, str: s, pos: p} }
func mkSym(s string, p Pos) *val { return &val{k: kSym, str: s, pos: p} }
func mkUnspec(p Pos) *val        { return &val{k: kUnspec, pos: p} }
func cons(a, d *val, p Pos) *val { return &val{k: kPair, car: a, cdr: d, pos: p} }
func mkNum(f float64, exact bool, p Pos) *val {
	return &val{k: kNum, num: f, exact: exact, pos: p}
}

// at returns a shallow copy of v placed at p.
func (v *val) at(p Pos) *val {
	c := *v
	c.pos = p
	return &c
}

// listOf builds a proper list of vs.
func listOf(vs []*val, p Pos) *val {
	out := mkNull(p)
	for i := len(vs) - 1; i >= 0; i-- {
		out = cons(vs[i], out, p)
	}
	out.pos = p
	return out
}

// slice returns the elements of a proper list, or ok=false.
func (v *val) slice() (out []*val, ok bool) {
	for ; v.k == kPair; v = v.cdr {
		out = append(out, v.car)
	}
	return out, v.k == kNull
}

func (v *val) isSym(name string) bool { return v.k == kSym && v.str == name }

func (v *val) truthy() bool { return !(v.k == kBool && !v.b) }

// typeName names the type of v for error messages, with an article.
func (v *val) typeName() string {
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
	case kMachine:
		return "a build-machine record"
	case kPort:
		return "an input port"
	case kOpaque:
		return "an object"
	default:
		return "an unspecified value"
	}
}

// String writes v the way Scheme's write would, shortened for messages.
func (v *val) String() string {
	var b strings.Builder
	v.write(&b, 0)
	s := b.String()
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

func (v *val) write(b *strings.Builder, depth int) {
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
	case kMachine:
		b.WriteString("#<build-machine " + v.m.Name + ">")
	case kPort:
		b.WriteString("#<input: file " + v.port.name + ">")
	case kOpaque:
		b.WriteString(v.str)
	default:
		b.WriteString("#<unspecified>")
	}
}

func formatNum(v *val) string {
	if v.exact {
		return strconv.FormatFloat(v.num, 'f', -1, 64)
	}
	s := strconv.FormatFloat(v.num, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eIN") {
		s += ".0"
	}
	return s
}
