package scheme

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// run evaluates src as the file f.scm in a new interpreter and writes its value.
func run(t *testing.T, src string) string {
	t.Helper()
	v, err := New().EvalFile("f.scm", []byte(src))
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	if v == nil {
		t.Fatalf("%s: no value", src)
	}
	return v.String()
}

func TestEval(t *testing.T) {
	t.Setenv("SCHEME_TEST_USER", "carol")
	t.Setenv("SCHEME_TEST_EMPTY", "")
	keyFile := filepath.Join(t.TempDir(), "key.pub")
	if err := os.WriteFile(keyFile, []byte("ssh-ed25519 AAAAfile c\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ src, want string }{
		{`'()`, `()`},
		{`'(a "b" 1 2.5 #t #f)`, `(a "b" 1 2.5 #t #f)`},
		{`(define u "x") (list u u)`, `("x" "x")`},
		{`(cons 1 '(2))`, `(1 2)`},
		{`(cons 1 2)`, `(1 . 2)`},
		{`'(1 . (2 . (3 . ())))`, `(1 2 3)`},
		{`(append '(1) '() '(2 3) 4)`, `(1 2 3 . 4)`},
		{`(let ((n "a") (u "v")) (list n u))`, `("a" "v")`},
		{`(let* ((n "a") (u (string-append n "-user"))) u)`, `"a-user"`},
		{`(letrec ((even? (lambda (n) (if (= n 0) #t (odd? (- n 1))))) (odd? (lambda (n) (if (= n 0) #f (even? (- n 1)))))) (even? 10))`, `#t`},
		{`(let loop ((i 0) (acc '())) (if (= i 3) acc (loop (+ i 1) (cons i acc))))`, `(2 1 0)`},
		{`(map (lambda (n) (string-append n "!")) '("a" "b"))`, `("a!" "b!")`},
		{`(map (lambda (n u) (list n u)) '("a" "b") '("x" "y" "z"))`, `(("a" "x") ("b" "y"))`},
		{`(define (f . rest) rest) (f 1 2)`, `(1 2)`},
		{`(define (f a . rest) (list a rest)) (f 1)`, `(1 ())`},
		{`(define g (lambda args (length args))) (list (g) (g 1 2 3) g)`, `(0 3 #<procedure g>)`},
		{`(apply + 1 '(2 3))`, `6`},
		{"`(1 ,@(map (lambda (x) (* x x)) '(2 3)) ,(+ 2 2))", `(1 4 9 4)`},
		{"`(a . ,(+ 1 1))", `(a . 2)`},
		{"`(1 `(2 ,(3 ,(+ 1 3))))", `(1 (quasiquote (2 (unquote (3 4)))))`},
		{`(iota 3 1)`, `(1 2 3)`},
		{`(iota 3 0 .5)`, `(0.0 0.5 1.0)`},
		{`(map number->string (list 1 2.5 -3 (/ 1 4) (/ 4 2)))`, `("1" "2.5" "-3" "0.25" "2")`},
		{`(list (string->number "22") (string->number "2.") (string->number "x"))`, `(22 2.0 #f)`},
		{`(list (symbol->string 'a) (string->symbol "b"))`, `("a" b)`},
		{`(list (getenv "SCHEME_TEST_USER") (getenv "SCHEME_TEST_EMPTY"))`, `("carol" #f)`},
		{`(filter (lambda (x) (if (equal? x 1) #f #t)) (list 1 2 1 3))`, `(2 3)`},
		{`(list (if '() 1 2) (if 0 1 2) (if "" 1 2) (if #f 1 2))`, `(1 1 1 2)`},
		{`(if #f 1)`, `#<unspecified>`},
		{`(list (when #t 1 2) (unless #f 3))`, `(2 3)`},
		{`(cond ((= 1 2) 'a) (2) (else 'c))`, `2`},
		{`(cond (#f 1) (else 'c))`, `c`},
		{`(list (and) (and 1 2) (and 1 #f 3) (or) (or #f 2))`, `(#t 2 #f #f 2)`},
		{`(define x 1) (set! x (+ x 1)) x`, `2`},
		{`(begin)`, `#<unspecified>`},
		{`(list (< 1 2 3) (<= 1 1 0) (>= 2 2) (> 3 1) (= 1 1.0))`, `(#t #f #t #t #t)`},
		{`(list (null? '()) (pair? '()) (list? '(1)) (list? (cons 1 2)) (string? "a") (number? 1) (symbol? 'a) (not #f))`, `(#t #f #t #f #t #t #t #t)`},
		{`(list (car '(1 2 3)) (cdr '(1 2 3)) (cadr '(1 2 3)) (cddr '(1 2 3)) (caddr '(1 2 3)))`, `(1 (2 3) 2 (3) 3)`},
		{`(reverse '(1 2 3))`, `(3 2 1)`},
		{`(let ([n "a"]) n)`, `"a"`},
		{`(list #;(oops) 1 #| block #| nested |# |# 2) ; comment`, `(1 2)`},
		{`(list 1 2) (list 3)`, `(3)`},
		{"\"a\\x41;\\n\\t\\\\\"", `"aA\n\t\\"`},
		{"\"line \\\n    continued\"", `"line continued"`},
		{`(use-modules (srfi srfi-1) (ice-9 textual-ports)) (append-map (lambda (x) (list x x)) '(1 2))`, `(1 1 2 2)`},
		{`(append-map (lambda (a b) (list a b)) '(1) '(2 3))`, `(1 2)`},
		{`((@ (srfi srfi-1) append-map) list '(1 2))`, `(1 2)`},
		{`((@@ (srfi srfi-1) append-map) list '(1 2))`, `(1 2)`},
		{`((@ (guile) list) 1)`, `(1)`},
		{`(define (list . x) 'mine) (list ((@ (guile) list) 1) (@ (srfi srfi-1) list))`, `mine`},
		{`(define (list . x) 'mine) ((@ (guile) cons) 1 '())`, `(1)`},
		{`(call-with-input-file "` + keyFile + `" get-string-all)`, `"ssh-ed25519 AAAAfile c\n"`},
		{`(call-with-input-file "` + keyFile + `" (lambda (port) (get-string-all port) (get-string-all port)))`, `""`},
	}
	for _, tc := range tests {
		t.Run(tc.src, func(t *testing.T) {
			if got := run(t, tc.src); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestEvalEmpty(t *testing.T) {
	for _, src := range []string{"", "; only a comment\n", "#| block |#", "#;(x)"} {
		v, err := New().EvalFile("f.scm", []byte(src))
		if v != nil || err != nil {
			t.Errorf("%q: %v, %v; want no value and no error", src, v, err)
		}
	}
}

// errorCases are broken files with the exact error each must give and, for valid Guile
// that the interpreter does not implement, what Unsupported names.
var errorCases = []struct{ src, want, unsupported string }{
	// reading
	{"(list\n  (list \"a\")", `f.scm:2:13: missing close paren for list opened at 1:1`, ""},
	{"(list 1))", `f.scm:1:9: unexpected ')'`, ""},
	{"(list (list \"a\"]))", `f.scm:1:16: ']' closes list opened with '(' at 1:7`, ""},
	{"(list \"abc", `f.scm:1:11: missing closing quote for string opened at 1:7`, ""},
	{`(list "a\qb")`, `f.scm:1:9: unknown escape \q in string`, ""},
	{`(list "a\x")`, `f.scm:1:9: bad \x escape in string`, ""},
	{"#| a #| b |# c\n", `f.scm:2:1: missing |# for block comment opened at 1:1`, ""},
	{"(list 1) #;", `f.scm:1:12: missing datum after #;`, ""},
	{"(list #;)", `f.scm:1:9: unexpected ')'`, ""},
	{"(list ')", `f.scm:1:8: missing datum after quote`, ""},
	{`(list . 1 2)`, `f.scm:1:11: more than one datum after '.' in list opened at 1:1`, ""},
	{`(. 1)`, `f.scm:1:2: '.' at the start of a list`, ""},
	{`(list #\a)`, `f.scm:1:7: unsupported syntax "#\\a"`, `#\a`},
	{`(list #(1 2))`, `f.scm:1:7: vectors are not supported`, "a vector"},
	{`(use-modules ((srfi srfi-1) #:select (append-map)))`, `f.scm:1:29: unsupported syntax "#:select"`, "#:select"},
	// columns count characters, with tab stops every 8
	{"(list \"é\" (foo))", `f.scm:1:12: unbound variable: foo`, "foo"},
	{"(list\n  \t(foo))", `f.scm:2:10: unbound variable: foo`, "foo"},
	// unknown procedures and bad calls
	{"(list\n  (make-machine \"a\"))", `f.scm:2:4: unbound variable: make-machine`, "make-machine"},
	{"(if (primitive-load \"/gnu/store/x-check.scm\")\n    '() '())", `f.scm:1:6: unbound variable: primitive-load`, "primitive-load"},
	{`(list (string-join '("a") ","))`, `f.scm:1:8: unbound variable: string-join`, "string-join"},
	{`(string-append "a" 1)`, `f.scm:1:20: string-append: argument 2 is an integer, expected a string`, ""},
	{`(list ("a" 1))`, `f.scm:1:7: wrong type to apply: "a"`, ""},
	{`(map (lambda (a b) a) '(1))`, `f.scm:1:1: wrong number of arguments to anonymous procedure: got 1, want 2`, ""},
	{`(cons 1)`, `f.scm:1:1: wrong number of arguments to cons: got 1, want 2`, ""},
	{`(iota 1 2 3 4)`, `f.scm:1:1: wrong number of arguments to iota: got 4, want 1 to 3`, ""},
	{`(car '())`, `f.scm:1:6: car: () is too short`, ""},
	{`(/ 1 0)`, `f.scm:1:6: division by zero`, ""},
	{`(set! y 1)`, `f.scm:1:7: unbound variable: y`, ""},
	{`(lambda (a a) a)`, `f.scm:1:12: duplicate lambda parameter: a`, ""},
	{`(let ((a)) a)`, `f.scm:1:7: bad let binding: (a) (expected (NAME VALUE))`, ""},
	{`(cond (else 1) (#t 2))`, `f.scm:1:7: bad else clause in cond`, ""},
	{"(define x 1)\n,x", `f.scm:2:1: unquote outside of quasiquote`, ""},
	{"`(,@1)", `f.scm:1:3: unquote-splicing of an integer, not a list`, ""},
	{`(list if)`, `f.scm:1:7: bad use of syntax 'if'`, ""},
	// runaway evaluation
	{`(define (f) (f)) (f)`, `f.scm:1:13: recursion too deep`, ""},
	{`(let loop () (loop))`, `f.scm:1:14: recursion too deep`, ""},
	{`(iota 100000000)`, `f.scm:1:1: evaluation takes too long (endless loop?)`, ""},
	{`(define (d s) (d (string-append s s))) (d "ab")`, `f.scm:1:18: string-append: result longer than 1048576 bytes`, ""},
	// the forms of generated machines files
	{`(call-with-input-file 1 get-string-all)`, `f.scm:1:23: call-with-input-file: argument 1 is an integer, expected a string`, ""},
	{`(call-with-input-file "/nonexistent/k.pub" get-string-all)`, `f.scm:1:1: In procedure open-file: No such file or directory: "/nonexistent/k.pub"`, ""},
	{`(get-string-all "x")`, `f.scm:1:17: get-string-all: argument 1 is a string, expected an input port`, ""},
	{`(append-map (lambda (x) x) '(1))`, `f.scm:1:1: append-map: the procedure returned an integer 1, not a list`, ""},
	{`((@ (srfi srfi-1) append-map) (lambda (x) x) 5)`, `f.scm:1:46: append-map: argument 2 is an integer, expected a list`, ""},
	// module references
	{`(list (@ (srfi srfi-1)))`, `f.scm:1:7: bad module reference (@ (srfi srfi-1)): expected (@ (MODULE NAME ...) VARIABLE)`, ""},
	{`(list (@ srfi append-map))`, `f.scm:1:7: bad module reference (@ srfi append-map): expected (@ (MODULE NAME ...) VARIABLE)`, ""},
	{`((@ (gnu services herd) current-service) 'vm)`, `f.scm:1:2: offload's evaluator does not know (@ (gnu services herd) current-service)`, "(@ (gnu services herd) current-service)"},
	{`((@@ (srfi srfi-1) fold) cons '() '())`, `f.scm:1:2: offload's evaluator does not know (@@ (srfi srfi-1) fold)`, "(@@ (srfi srfi-1) fold)"},
	{`((@ (guile) append-map) list '())`, `f.scm:1:2: offload's evaluator does not know (@ (guile) append-map)`, "(@ (guile) append-map)"},
}

func TestErrors(t *testing.T) {
	for _, tc := range errorCases {
		t.Run(tc.want, func(t *testing.T) {
			v, err := New().EvalFile("f.scm", []byte(tc.src))
			if err == nil {
				t.Fatalf("no error; value %v", v)
			}
			if v != nil {
				t.Errorf("a value with an error: %v", v)
			}
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
}

// Read reads data without evaluating them, placed where they were written.
func TestRead(t *testing.T) {
	forms, err := Read("r.scm", []byte("(a \"b\")\n  (undefined-procedure 1) ; not called\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(forms) != 2 || forms[0].String() != `(a "b")` || forms[1].String() != `(undefined-procedure 1)` {
		t.Fatalf("forms %v", forms)
	}
	if got := forms[1].Pos().String(); got != "r.scm:2:3" {
		t.Errorf("position %s", got)
	}
	items, ok := forms[0].List()
	if !ok || len(items) != 2 || !items[0].IsSymbol("a") {
		t.Fatalf("items %v", items)
	}
	if s, ok := items[1].Str(); !ok || s != "b" || items[1].Pos().String() != "r.scm:1:4" {
		t.Errorf("string %q %v at %v", s, ok, items[1].Pos())
	}
	if _, err := Read("r.scm", []byte("(a")); err == nil || err.Error() != "r.scm:1:3: missing close paren for list opened at 1:1" {
		t.Errorf("error %v", err)
	}
}
