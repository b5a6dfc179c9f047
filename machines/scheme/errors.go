package scheme

import "fmt"

// Pos is a place in a file. Line and Col are 1-based; Col counts characters, not
// bytes, with tab stops every 8 columns (GNU style).
type Pos struct {
	File      string
	Line, Col int
}

// String returns "FILE:LINE:COL", or "FILE" when the line is not known (0).
func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Error is a file that cannot be read or evaluated, with the place of the fault.
type Error struct {
	Pos Pos
	Msg string
	// Unsupported, when not "", says that the fault is only the interpreter's: the file
	// uses something that is valid Guile but that this interpreter does not implement
	// (a procedure or syntax it does not know, such as primitive-load, or a module
	// binding outside its table). It names that thing, so that a caller may have Guile
	// evaluate the file instead.
	Unsupported string
}

// Error returns "FILE:LINE:COL: MSG".
func (e *Error) Error() string {
	return e.Pos.String() + ": " + e.Msg
}

// Errorf returns an *Error at p.
func Errorf(p Pos, format string, args ...any) error {
	return &Error{Pos: p, Msg: fmt.Sprintf(format, args...)}
}
