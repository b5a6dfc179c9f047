package storeio

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sexp is a libgcrypt s-expression: an atom (a byte string, with an optional display
// hint) or a list of s-expressions.
type Sexp struct {
	Atom   []byte
	Hint   []byte // display hint of an atom, nil if none
	List   []*Sexp
	IsList bool
}

// maxSexpDepth bounds nesting; keys and signatures need 5 levels.
const maxSexpDepth = 64

// maxSexpLen bounds the text we accept; real signatures are under 1 KiB, RSA ones a few.
const maxSexpLen = 1 << 20

// ErrInvalidSexp is wrapped by every s-expression syntax error.
var ErrInvalidSexp = errors.New("invalid s-expression")

// tokenSpecials are the punctuation characters libgcrypt allows in bare tokens.
const tokenSpecials = "-./_:*+="

// NewList makes a list s-expression.
func NewList(elems ...*Sexp) *Sexp { return &Sexp{List: elems, IsList: true} }

// NewAtom makes an atom from a string.
func NewAtom(s string) *Sexp { return &Sexp{Atom: []byte(s)} }

// NewBytes makes an atom from bytes.
func NewBytes(b []byte) *Sexp { return &Sexp{Atom: b} }

// ParseSexp parses one s-expression in libgcrypt's canonical or advanced text form
// (bare tokens, "quoted" strings, #hex#, |base64|, N:bytes, [display hints]). Only
// white space may follow it.
func ParseSexp(b []byte) (*Sexp, error) {
	if len(b) > maxSexpLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalidSexp, maxSexpLen)
	}
	p := sexpParser{b: b}
	p.skipSpace()
	s, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.i != len(p.b) {
		return nil, p.errf("trailing data")
	}
	if !s.IsList {
		return nil, fmt.Errorf("%w: not a list", ErrInvalidSexp)
	}
	return s, nil
}

type sexpParser struct {
	b []byte
	i int
}

func (p *sexpParser) errf(format string, args ...any) error {
	return fmt.Errorf("%w: offset %d: %s", ErrInvalidSexp, p.i, fmt.Sprintf(format, args...))
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}
func isAlpha(c byte) bool { return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isTokenChar(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte(tokenSpecials, c) >= 0
}

func (p *sexpParser) skipSpace() {
	for p.i < len(p.b) && isSpace(p.b[p.i]) {
		p.i++
	}
}

func (p *sexpParser) value(depth int) (*Sexp, error) {
	if p.i >= len(p.b) {
		return nil, p.errf("unexpected end")
	}
	if p.b[p.i] == '(' {
		if depth >= maxSexpDepth {
			return nil, p.errf("nested deeper than %d", maxSexpDepth)
		}
		p.i++
		l := NewList()
		for {
			p.skipSpace()
			if p.i >= len(p.b) {
				return nil, p.errf("unterminated list")
			}
			if p.b[p.i] == ')' {
				p.i++
				return l, nil
			}
			e, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			l.List = append(l.List, e)
		}
	}
	var hint []byte
	if p.b[p.i] == '[' {
		p.i++
		p.skipSpace()
		h, err := p.atom()
		if err != nil {
			return nil, err
		}
		p.skipSpace()
		if p.i >= len(p.b) || p.b[p.i] != ']' {
			return nil, p.errf("unterminated display hint")
		}
		p.i++
		p.skipSpace()
		if h == nil {
			h = []byte{}
		}
		hint = h
	}
	a, err := p.atom()
	if err != nil {
		return nil, err
	}
	return &Sexp{Atom: a, Hint: hint}, nil
}

// atom reads one atom in any of the encodings.
func (p *sexpParser) atom() ([]byte, error) {
	if p.i >= len(p.b) {
		return nil, p.errf("unexpected end")
	}
	start := p.i
	length := -1
	if isDigit(p.b[p.i]) {
		j := p.i
		for j < len(p.b) && isDigit(p.b[j]) {
			j++
		}
		if j < len(p.b) && strings.IndexByte(":\"#|", p.b[j]) >= 0 {
			n, err := strconv.Atoi(string(p.b[p.i:j]))
			if err != nil || n > maxSexpLen {
				return nil, p.errf("bad length prefix")
			}
			length = n
			p.i = j
		} else {
			// A bare number: libgcrypt refuses it; accept it as a token.
			return p.token(), nil
		}
	}
	switch c := p.b[p.i]; {
	case c == ':' && length >= 0:
		p.i++
		if len(p.b)-p.i < length {
			return nil, p.errf("raw string runs past the end")
		}
		a := bytes.Clone(p.b[p.i : p.i+length])
		p.i += length
		return a, nil
	case c == '"':
		return p.quoted(length)
	case c == '#':
		return p.hexString(length)
	case c == '|':
		return p.base64String(length)
	case isAlpha(c) || strings.IndexByte(tokenSpecials, c) >= 0:
		return p.token(), nil
	default:
		p.i = start
		return nil, p.errf("unexpected character %q", c)
	}
}

func (p *sexpParser) token() []byte {
	j := p.i
	for j < len(p.b) && isTokenChar(p.b[j]) {
		j++
	}
	a := bytes.Clone(p.b[p.i:j])
	p.i = j
	return a
}

func (p *sexpParser) checkLen(a []byte, length int) ([]byte, error) {
	if length >= 0 && len(a) != length {
		return nil, p.errf("length prefix %d but %d bytes", length, len(a))
	}
	return a, nil
}

func (p *sexpParser) hexString(length int) ([]byte, error) {
	p.i++ // '#'
	var digits []byte
	for {
		if p.i >= len(p.b) {
			return nil, p.errf("unterminated hex string")
		}
		c := p.b[p.i]
		p.i++
		if c == '#' {
			break
		}
		if isSpace(c) {
			continue
		}
		digits = append(digits, c)
	}
	if len(digits)%2 != 0 {
		return nil, p.errf("odd number of hex digits")
	}
	a := make([]byte, len(digits)/2)
	if _, err := hex.Decode(a, digits); err != nil {
		return nil, p.errf("bad hex string: %v", err)
	}
	return p.checkLen(a, length)
}

func (p *sexpParser) base64String(length int) ([]byte, error) {
	p.i++ // '|'
	var enc []byte
	for {
		if p.i >= len(p.b) {
			return nil, p.errf("unterminated base64 string")
		}
		c := p.b[p.i]
		p.i++
		if c == '|' {
			break
		}
		if isSpace(c) {
			continue
		}
		enc = append(enc, c)
	}
	a, err := base64.StdEncoding.DecodeString(string(enc))
	if err != nil {
		return nil, p.errf("bad base64 string: %v", err)
	}
	return p.checkLen(a, length)
}

func (p *sexpParser) quoted(length int) ([]byte, error) {
	p.i++ // '"'
	var a []byte
	for {
		if p.i >= len(p.b) {
			return nil, p.errf("unterminated quoted string")
		}
		c := p.b[p.i]
		p.i++
		if c == '"' {
			break
		}
		if c != '\\' {
			a = append(a, c)
			continue
		}
		if p.i >= len(p.b) {
			return nil, p.errf("unterminated escape")
		}
		c = p.b[p.i]
		p.i++
		switch c {
		case 'b':
			a = append(a, '\b')
		case 't':
			a = append(a, '\t')
		case 'v':
			a = append(a, '\v')
		case 'n':
			a = append(a, '\n')
		case 'f':
			a = append(a, '\f')
		case 'r':
			a = append(a, '\r')
		case '"', '\'', '\\':
			a = append(a, c)
		case '\n', '\r': // line continuation, with an optional second byte of \r\n or \n\r
			if p.i < len(p.b) && (p.b[p.i] == '\n' || p.b[p.i] == '\r') && p.b[p.i] != c {
				p.i++
			}
		case 'x':
			if len(p.b)-p.i < 2 {
				return nil, p.errf("short \\x escape")
			}
			v, err := strconv.ParseUint(string(p.b[p.i:p.i+2]), 16, 8)
			if err != nil {
				return nil, p.errf("bad \\x escape")
			}
			a = append(a, byte(v))
			p.i += 2
		case '0', '1', '2', '3', '4', '5', '6', '7':
			if len(p.b)-p.i < 2 {
				return nil, p.errf("short octal escape")
			}
			v, err := strconv.ParseUint(string(p.b[p.i-1:p.i+2]), 8, 8)
			if err != nil {
				return nil, p.errf("bad octal escape")
			}
			a = append(a, byte(v))
			p.i += 2
		default:
			return nil, p.errf("bad escape \\%c", c)
		}
	}
	if a == nil {
		a = []byte{}
	}
	return p.checkLen(a, length)
}

// Find returns the first list, depth first, whose first element is the atom token, as
// libgcrypt's gcry_sexp_find_token does; nil if none.
func (s *Sexp) Find(token string) *Sexp {
	if s == nil || !s.IsList {
		return nil
	}
	if len(s.List) > 0 && !s.List[0].IsList && string(s.List[0].Atom) == token {
		return s
	}
	for _, e := range s.List {
		if f := e.Find(token); f != nil {
			return f
		}
	}
	return nil
}

// Child returns the first element of list s that is a list starting with token.
func (s *Sexp) Child(token string) *Sexp {
	if s == nil || !s.IsList {
		return nil
	}
	for _, e := range s.List {
		if e.Head() == token {
			return e
		}
	}
	return nil
}

// Head returns the token a list starts with, or "".
func (s *Sexp) Head() string {
	if s == nil || !s.IsList || len(s.List) == 0 || s.List[0].IsList {
		return ""
	}
	return string(s.List[0].Atom)
}

// Value returns the atom at index i of a list, or nil.
func (s *Sexp) Value(i int) []byte {
	if s == nil || !s.IsList || i >= len(s.List) || s.List[i].IsList {
		return nil
	}
	return s.List[i].Atom
}

// Equal reports whether two s-expressions are the same (hints included).
func (s *Sexp) Equal(t *Sexp) bool {
	if s.IsList != t.IsList {
		return false
	}
	if !s.IsList {
		return bytes.Equal(s.Atom, t.Atom) && bytes.Equal(s.Hint, t.Hint) && (s.Hint == nil) == (t.Hint == nil)
	}
	if len(s.List) != len(t.List) {
		return false
	}
	for i := range s.List {
		if !s.List[i].Equal(t.List[i]) {
			return false
		}
	}
	return true
}

// Canonical returns the canonical form: "(3:abc2:de)".
func (s *Sexp) Canonical() []byte {
	var b bytes.Buffer
	s.writeCanonical(&b)
	return b.Bytes()
}

func (s *Sexp) writeCanonical(b *bytes.Buffer) {
	if s.IsList {
		b.WriteByte('(')
		for _, e := range s.List {
			e.writeCanonical(b)
		}
		b.WriteByte(')')
		return
	}
	if s.Hint != nil {
		fmt.Fprintf(b, "[%d:", len(s.Hint))
		b.Write(s.Hint)
		b.WriteByte(']')
	}
	fmt.Fprintf(b, "%d:", len(s.Atom))
	b.Write(s.Atom)
}

// String returns the advanced text form exactly as libgcrypt's gcry_sexp_sprint with
// GCRYSEXP_FMT_ADVANCED prints it, which is what Guix writes to key files, the ACL and
// signatures: a new line and indentation before each nested list, a space after an atom
// unless a ")" follows, a new line after a ")" unless "(" or the end follows, and a
// final new line.
func (s *Sexp) String() string {
	var b bytes.Buffer
	indent := 0
	// Flatten into libgcrypt's token stream, then print with its rules.
	type tok struct {
		kind int // 0 open, 1 close, 2 data
		s    *Sexp
	}
	var toks []tok
	var flatten func(s *Sexp)
	flatten = func(s *Sexp) {
		if s.IsList {
			toks = append(toks, tok{kind: 0})
			for _, e := range s.List {
				flatten(e)
			}
			toks = append(toks, tok{kind: 1})
			return
		}
		toks = append(toks, tok{kind: 2, s: s})
	}
	flatten(s)
	for i, t := range toks {
		next := -1 // what follows: -1 end, 0 "(", 1 ")", 2 atom
		if i+1 < len(toks) {
			next = toks[i+1].kind
		}
		switch t.kind {
		case 0:
			if indent > 0 {
				b.WriteByte('\n')
				b.WriteString(strings.Repeat(" ", indent))
			}
			b.WriteByte('(')
			indent++
		case 1:
			b.WriteByte(')')
			indent--
			if next != 0 && next != -1 {
				b.WriteByte('\n')
				b.WriteString(strings.Repeat(" ", indent))
			}
		case 2:
			if t.s.Hint != nil {
				b.WriteByte('[')
				writeAdvancedAtom(&b, t.s.Hint)
				b.WriteByte(']')
			}
			writeAdvancedAtom(&b, t.s.Atom)
			if next != 1 {
				b.WriteByte(' ')
			}
		}
	}
	b.WriteByte('\n')
	return b.String()
}

// writeAdvancedAtom prints an atom as a token, a quoted string or #HEX#, choosing as
// libgcrypt's suitable_encoding does.
func writeAdvancedAtom(b *bytes.Buffer, a []byte) {
	switch suitableEncoding(a) {
	case 2:
		b.Write(a)
	case 1:
		b.WriteByte('"')
		for _, c := range a {
			switch c {
			case '\b':
				b.WriteString(`\b`)
			case '\t':
				b.WriteString(`\t`)
			case '\v':
				b.WriteString(`\v`)
			case '\n':
				b.WriteString(`\n`)
			case '\f':
				b.WriteString(`\f`)
			case '\r':
				b.WriteString(`\r`)
			case '"':
				b.WriteString(`\"`)
			case '\'':
				b.WriteString(`\'`)
			case '\\':
				b.WriteString(`\\`)
			default:
				if c < 0x20 || (c >= 0x7f && c <= 0xa0) {
					fmt.Fprintf(b, "\\x%02x", c)
				} else {
					b.WriteByte(c)
				}
			}
		}
		b.WriteByte('"')
	default:
		b.WriteByte('#')
		b.WriteString(strings.ToUpper(hex.EncodeToString(a)))
		b.WriteByte('#')
	}
}

// suitableEncoding: 0 hex, 1 quoted string, 2 token.
func suitableEncoding(a []byte) int {
	if len(a) == 0 {
		return 1
	}
	if a[0]&0x80 != 0 || a[0] == 0 {
		return 0
	}
	token := true
	for _, c := range a {
		if (c < 0x20 || (c >= 0x7f && c <= 0xa0)) && strings.IndexByte("\b\t\v\n\f\r\"'\\", c) < 0 {
			return 0
		}
		if token && !isTokenChar(c) {
			token = false
		}
	}
	if token && !isDigit(a[0]) {
		return 2
	}
	return 1
}
