package scheme

import (
	"errors"
	"testing"
)

// point is a record type of the test's own, added the way package machines adds
// build-machine: (point NAME) is syntax whose operand is not evaluated.
type point struct{ name string }

func (p *point) RecordType() string { return "point" }
func (p *point) RecordName() string { return p.name }

func withPoints() *Interp {
	in := New()
	in.DefineSyntax("point", func(in *Interp, form *Value, args []*Value, env *Env) (*Value, error) {
		if len(args) != 2 {
			return nil, Errorf(form.Pos(), "point takes a name and a value")
		}
		name, ok := args[0].Symbol()
		if !ok {
			return nil, Errorf(args[0].Pos(), "point: the name is %s, not a symbol", args[0].TypeName())
		}
		if _, err := in.Eval(args[1], env); err != nil {
			return nil, err
		}
		return NewRecord(&point{name}, form.Pos()), nil
	})
	in.Define("point?", Predicate(func(v *Value) bool {
		r, ok := v.Record()
		_, isPoint := r.(*point)
		return ok && isPoint
	}))
	in.DefineModule("geometry points", "point", "point?")
	return in
}

// What a user adds works as the interpreter's own syntax, procedures and modules do.
func TestDefine(t *testing.T) {
	tests := []struct{ src, want string }{
		{`(point a 1)`, `#<point a>`},
		{`(let ((x 2)) (point b (+ x 1)))`, `#<point b>`},
		{`(list (point? (point a 1)) (point? 1) (point? '()))`, `(#t #f #f)`},
		{`(filter point? (list 1 (point a 1) "x"))`, `(#<point a>)`},
		{`((@ (geometry points) point) c 1)`, `#<point c>`},
		{`((@@ (geometry points) point) c 1)`, `#<point c>`},
		{`(filter (@ (geometry points) point?) (list 1 (point a 1)))`, `(#<point a>)`},
		{`(define p (point a 1)) (list (equal? p p) (eq? p (point a 1)))`, `(#t #f)`},
		// A file's own binding of the name wins over the syntax, and (@ ...) still
		// reaches the module's.
		{`(define (point x y) (list x y)) (point 1 2)`, `(1 2)`},
		{`(define (point? x) 'mine) (list (point? 1) ((@ (geometry points) point?) 1))`, `(mine #f)`},
	}
	for _, tc := range tests {
		t.Run(tc.src, func(t *testing.T) {
			v, err := withPoints().EvalFile("f.scm", []byte(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			if got := v.String(); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
	v, err := withPoints().EvalFile("f.scm", []byte("\n  (point here 1)"))
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := v.Record(); !ok || r.(*point).name != "here" || v.TypeName() != "a point record" || v.Pos().String() != "f.scm:2:3" {
		t.Errorf("record %v %v, type %q, at %v", r, ok, v.TypeName(), v.Pos())
	}
}

func TestDefineErrors(t *testing.T) {
	tests := []struct{ src, want, unsupported string }{
		{"(list\n  (point 1 2))", `f.scm:2:10: point: the name is an integer, not a symbol`, ""},
		{"(point a (car '()))", `f.scm:1:15: car: () is too short`, ""},
		{`(list point)`, `f.scm:1:7: bad use of syntax 'point'`, ""},
		{`(list (@ (geometry points) point))`, `f.scm:1:7: bad use of syntax 'point'`, ""},
		{`(point? 1 2)`, `f.scm:1:1: wrong number of arguments to point?: got 2, want 1`, ""},
		{`((@ (geometry points) line) 1)`, `f.scm:1:2: offload's evaluator does not know (@ (geometry points) line)`, "(@ (geometry points) line)"},
		// What a user adds is not Guile's own.
		{`((@ (guile) point?) 1)`, `f.scm:1:2: offload's evaluator does not know (@ (guile) point?)`, "(@ (guile) point?)"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			_, err := withPoints().EvalFile("f.scm", []byte(tc.src))
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("error %v (%T) is not an *Error", err, err)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("error\n got %s\nwant %s", got, tc.want)
			}
			if se.Unsupported != tc.unsupported {
				t.Errorf("Unsupported = %q, want %q", se.Unsupported, tc.unsupported)
			}
		})
	}
	// Another interpreter knows nothing of them.
	if _, err := New().EvalFile("f.scm", []byte(`(point a 1)`)); err == nil || err.Error() != "f.scm:1:2: unbound variable: point" {
		t.Errorf("a new interpreter: %v", err)
	}
}
