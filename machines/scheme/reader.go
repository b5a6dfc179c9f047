package scheme

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxNesting bounds how deeply lists may nest in the file, so that hostile
// input cannot exhaust the stack.
const maxNesting = 1000

// reader turns the text of a file into values.
type reader struct {
	file string
	src  []byte
	off  int
	line int
	col  int
}

func newReader(file string, src []byte) *reader {
	return &reader{file: file, src: src, line: 1, col: 1}
}

func (r *reader) pos() Pos { return Pos{File: r.file, Line: r.line, Col: r.col} }

func (r *reader) errf(p Pos, format string, args ...any) error {
	return &Error{Pos: p, Msg: fmt.Sprintf(format, args...)}
}

// peek returns the next character without consuming it; -1 at the end.
func (r *reader) peek() rune {
	if r.off >= len(r.src) {
		return -1
	}
	c, _ := utf8.DecodeRune(r.src[r.off:])
	return c
}

func (r *reader) peekAt(n int) rune {
	off := r.off
	for ; n > 0 && off < len(r.src); n-- {
		_, size := utf8.DecodeRune(r.src[off:])
		off += size
	}
	if off >= len(r.src) {
		return -1
	}
	c, _ := utf8.DecodeRune(r.src[off:])
	return c
}

func (r *reader) next() rune {
	if r.off >= len(r.src) {
		return -1
	}
	c, size := utf8.DecodeRune(r.src[r.off:])
	r.off += size
	switch c {
	case '\n':
		r.line++
		r.col = 1
	case '\t':
		// Tab stops every 8 columns, as the GNU coding standards (and
		// Emacs's next-error) count them.
		r.col = (r.col-1)/8*8 + 9
	default:
		r.col++
	}
	return c
}

// readAll reads every top-level datum of the file.
func (r *reader) readAll() ([]*Value, error) {
	var out []*Value
	for {
		if err := r.skipSpace(); err != nil {
			return nil, err
		}
		if r.peek() == -1 {
			return out, nil
		}
		v, err := r.read(0)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
}

// skipSpace skips white space and every kind of comment, including #;
// datum comments.
func (r *reader) skipSpace() error {
	for {
		c := r.peek()
		switch {
		case c == -1:
			return nil
		case unicode.IsSpace(c):
			r.next()
		case c == ';':
			for c := r.peek(); c != -1 && c != '\n'; c = r.peek() {
				r.next()
			}
		case c == '#' && r.peekAt(1) == '|':
			if err := r.skipBlockComment(); err != nil {
				return err
			}
		case c == '#' && r.peekAt(1) == ';':
			r.next()
			r.next()
			if err := r.skipSpace(); err != nil {
				return err
			}
			if r.peek() == -1 {
				return r.errf(r.pos(), "missing datum after #;")
			}
			if _, err := r.read(0); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// skipBlockComment skips a #| ... |# comment, which may nest.
func (r *reader) skipBlockComment() error {
	start := r.pos()
	r.next()
	r.next()
	depth := 1
	for depth > 0 {
		switch c := r.next(); {
		case c == -1:
			return r.errf(r.pos(), "missing |# for block comment opened at %d:%d", start.Line, start.Col)
		case c == '|' && r.peek() == '#':
			r.next()
			depth--
		case c == '#' && r.peek() == '|':
			r.next()
			depth++
		}
	}
	return nil
}

func isDelimiter(c rune) bool {
	return c == -1 || unicode.IsSpace(c) || strings.ContainsRune("()[]\";", c)
}

// read reads one datum; the caller has skipped space before it.
func (r *reader) read(depth int) (*Value, error) {
	p := r.pos()
	if depth > maxNesting {
		return nil, r.errf(p, "lists nested more than %d deep", maxNesting)
	}
	switch c := r.peek(); c {
	case '(', '[':
		return r.readList(depth)
	case ')', ']':
		return nil, r.errf(p, "unexpected '%c'", c)
	case '"':
		return r.readString()
	case '\'', '`', ',':
		r.next()
		name := map[rune]string{'\'': "quote", '`': "quasiquote", ',': "unquote"}[c]
		if c == ',' && r.peek() == '@' {
			r.next()
			name = "unquote-splicing"
		}
		if err := r.skipSpace(); err != nil {
			return nil, err
		}
		if r.peek() == -1 {
			return nil, r.errf(r.pos(), "missing datum after %s", name)
		}
		if c := r.peek(); c == ')' || c == ']' {
			return nil, r.errf(r.pos(), "missing datum after %s", name)
		}
		d, err := r.read(depth + 1)
		if err != nil {
			return nil, err
		}
		return listOf([]*Value{mkSym(name, p), d}, p), nil
	case '#':
		return r.readHash()
	default:
		return r.readAtom()
	}
}

func (r *reader) readList(depth int) (*Value, error) {
	open := r.pos()
	opener := r.next()
	closer := ')'
	if opener == '[' {
		closer = ']'
	}
	var items []*Value
	var tail *Value
	for {
		if err := r.skipSpace(); err != nil {
			return nil, err
		}
		p := r.pos()
		switch c := r.peek(); {
		case c == -1:
			return nil, r.errf(p, "missing close paren for list opened at %d:%d", open.Line, open.Col)
		case c == ')' || c == ']':
			if c != closer {
				return nil, r.errf(p, "'%c' closes list opened with '%c' at %d:%d", c, opener, open.Line, open.Col)
			}
			r.next()
			out := listOf(items, open)
			if tail != nil {
				last := out
				for last.cdr.k == kPair {
					last = last.cdr
				}
				last.cdr = tail
			}
			return out, nil
		case tail != nil:
			return nil, r.errf(p, "more than one datum after '.' in list opened at %d:%d", open.Line, open.Col)
		case c == '.' && isDelimiter(r.peekAt(1)):
			if len(items) == 0 {
				return nil, r.errf(p, "'.' at the start of a list")
			}
			r.next()
			if err := r.skipSpace(); err != nil {
				return nil, err
			}
			if c := r.peek(); c == -1 || c == ')' || c == ']' {
				return nil, r.errf(r.pos(), "missing datum after '.'")
			}
			d, err := r.read(depth + 1)
			if err != nil {
				return nil, err
			}
			tail = d
		default:
			d, err := r.read(depth + 1)
			if err != nil {
				return nil, err
			}
			items = append(items, d)
		}
	}
}

func (r *reader) readString() (*Value, error) {
	start := r.pos()
	r.next()
	var b strings.Builder
	for {
		p := r.pos()
		c := r.next()
		switch c {
		case -1:
			return nil, r.errf(r.pos(), "missing closing quote for string opened at %d:%d", start.Line, start.Col)
		case '"':
			return mkStr(b.String(), start), nil
		case '\\':
			e := r.next()
			switch e {
			case '"', '\\':
				b.WriteRune(e)
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case 'a':
				b.WriteByte('\a')
			case 'f':
				b.WriteByte('\f')
			case 'v':
				b.WriteByte('\v')
			case 'b':
				b.WriteByte('\b')
			case '0':
				b.WriteByte(0)
			case '\n':
				// A backslash before a newline continues the line; Guile
				// drops the newline and the next line's leading blanks.
				for c := r.peek(); c == ' ' || c == '\t'; c = r.peek() {
					r.next()
				}
			case 'x', 'u', 'U':
				n := map[rune]int{'x': 2, 'u': 4, 'U': 6}[e]
				var hex strings.Builder
				for i := 0; i < n; i++ {
					h := r.peek()
					if h == -1 || !strings.ContainsRune("0123456789abcdefABCDEF", h) {
						break
					}
					hex.WriteRune(r.next())
				}
				if e == 'x' && r.peek() == ';' { // R7RS form \x41;
					r.next()
				}
				code, err := strconv.ParseUint(hex.String(), 16, 32)
				if err != nil || hex.Len() == 0 || !utf8.ValidRune(rune(code)) {
					return nil, r.errf(p, "bad \\%c escape in string", e)
				}
				b.WriteRune(rune(code))
			case -1:
				return nil, r.errf(r.pos(), "missing closing quote for string opened at %d:%d", start.Line, start.Col)
			default:
				return nil, r.errf(p, "unknown escape \\%c in string", e)
			}
		default:
			b.WriteRune(c)
		}
	}
}

// readHash reads what starts with '#': booleans; anything else (vectors,
// characters, ...) has no place in the files this interpreter reads.
func (r *reader) readHash() (*Value, error) {
	p := r.pos()
	tok := r.token()
	switch tok {
	case "#t", "#true":
		return mkBool(true, p), nil
	case "#f", "#false":
		return mkBool(false, p), nil
	}
	if tok == "#" && r.peek() == '(' {
		return nil, &Error{Pos: p, Msg: "vectors are not supported", Unsupported: "a vector"}
	}
	// Characters, keywords, bytevectors...: Guile reads them, offload's reader does not.
	return nil, &Error{Pos: p, Msg: fmt.Sprintf("unsupported syntax %q", tok), Unsupported: tok}
}

// token reads up to the next delimiter.
func (r *reader) token() string {
	start := r.off
	for !isDelimiter(r.peek()) {
		r.next()
	}
	return string(r.src[start:r.off])
}

func (r *reader) readAtom() (*Value, error) {
	p := r.pos()
	tok := r.token()
	if tok == "" { // cannot happen: read is called on a non-delimiter
		c := r.next()
		return nil, r.errf(p, "unexpected %q", c)
	}
	if f, exact, ok := parseNumber(tok); ok {
		return mkNum(f, exact, p), nil
	}
	if tok == "." {
		return nil, r.errf(p, "unexpected '.'")
	}
	if strings.ContainsRune(tok, '|') || strings.ContainsRune(tok, '#') && tok[0] == '#' {
		return nil, &Error{Pos: p, Msg: fmt.Sprintf("unsupported syntax %q", tok), Unsupported: tok}
	}
	return mkSym(tok, p), nil
}

// parseNumber parses the numbers users write: 22, -1, +3, 2., 4.0, .5, 1e3.
func parseNumber(tok string) (f float64, exact bool, ok bool) {
	body := strings.TrimLeft(tok, "+-")
	if len(tok)-len(body) > 1 || body == "" {
		return 0, false, false
	}
	digits, dot, exp := 0, false, false
	for i, c := range body {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot && !exp:
			dot = true
		case (c == 'e' || c == 'E') && !exp && digits > 0 && i+1 < len(body):
			exp = true
			rest := body[i+1:]
			rest = strings.TrimLeft(rest, "+-")
			if len(body[i+1:])-len(rest) > 1 || rest == "" || strings.Trim(rest, "0123456789") != "" {
				return 0, false, false
			}
			f, err := strconv.ParseFloat(tok, 64)
			return f, false, err == nil
		default:
			return 0, false, false
		}
	}
	if digits == 0 {
		return 0, false, false
	}
	f, err := strconv.ParseFloat(tok, 64)
	if err != nil {
		return 0, false, false
	}
	return f, !dot, true
}
