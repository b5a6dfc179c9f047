package scheme

import (
	"errors"
	"os"
)

// Limits that keep a hostile or mistaken file (an endless loop, a string
// doubled a thousand times) from hanging or exhausting the program.
const (
	maxSteps = 2_000_000 // evaluation steps plus values allocated
	maxDepth = 2_000     // nested evaluations (deep recursion)
	maxStr   = 1 << 20   // bytes in one string
)

// Env is one frame of variable bindings.
type Env struct {
	vars   map[string]*Value
	parent *Env
}

func newEnv(parent *Env) *Env { return &Env{vars: map[string]*Value{}, parent: parent} }

func (e *Env) lookup(name string) (*Value, bool) {
	for ; e != nil; e = e.parent {
		if v, ok := e.vars[name]; ok {
			return v, true
		}
	}
	return nil, false
}

// Builtin is a procedure written in Go: call is the calling expression (errors
// point at it, or at the argument at fault), args the evaluated arguments.
type Builtin func(in *Interp, call *Value, args []*Value) (*Value, error)

// Syntax is a special form written in Go, such as a record constructor whose field
// names are not evaluated: form is the whole expression, args its operands
// unevaluated, env where to evaluate them (with Interp.Eval).
type Syntax func(in *Interp, form *Value, args []*Value, env *Env) (*Value, error)

// Interp evaluates the Scheme of one file: it holds the global environment, what
// its user added (DefineSyntax, Define, DefineModule) and the budget of work left.
// It is not safe for concurrent use; make one per file.
type Interp struct {
	steps  int
	depth  int
	getenv func(string) string
	global *Env
	// What the interpreter's user added; nil until then.
	syntax  map[string]Syntax
	procs   map[string]Builtin
	modules map[string][]string
}

// New returns an interpreter whose global environment holds the builtin
// procedures.
func New() *Interp {
	ev := &Interp{getenv: os.Getenv}
	ev.global = newEnv(nil)
	for name, fn := range builtins {
		ev.global.vars[name] = &Value{k: kProc, proc: &proc{name: name, builtin: fn}}
	}
	return ev
}

// Define binds name in the global environment to the procedure fn, and makes fn
// what (@ (MODULE) name) names in the modules DefineModule lists it in.
func (ev *Interp) Define(name string, fn Builtin) {
	if ev.procs == nil {
		ev.procs = map[string]Builtin{}
	}
	ev.procs[name] = fn
	ev.global.vars[name] = &Value{k: kProc, proc: &proc{name: name, builtin: fn}}
}

// DefineSyntax adds the special form name: a list headed by name (unless a file
// binds name itself) is evaluated by fn.
func (ev *Interp) DefineSyntax(name string, fn Syntax) {
	if ev.syntax == nil {
		ev.syntax = map[string]Syntax{}
	}
	ev.syntax[name] = fn
}

// DefineModule lets (@ (MODULE) NAME) and (@@ (MODULE) NAME) reach each of names,
// builtins or syntax of this interpreter (the interpreter's own or added by Define
// and DefineSyntax); module is written as inside the parentheses: "guix offload".
func (ev *Interp) DefineModule(module string, names ...string) {
	if ev.modules == nil {
		ev.modules = map[string][]string{}
	}
	ev.modules[module] = append(ev.modules[module], names...)
}

// special returns the special form name, the interpreter's own or its user's.
func (ev *Interp) special(name string) (Syntax, bool) {
	if fn, ok := ev.syntax[name]; ok {
		return fn, true
	}
	fn, ok := specials[name]
	return fn, ok
}

// builtin returns the procedure name as first defined, the interpreter's own or its
// user's, whatever a file later bound to the name.
func (ev *Interp) builtin(name string) (Builtin, bool) {
	if fn, ok := ev.procs[name]; ok {
		return fn, true
	}
	fn, ok := builtins[name]
	return fn, ok
}

// Read reads every top-level datum of src, the text of file, without evaluating
// anything. A malformed text gives an *Error placed in it.
func Read(file string, src []byte) ([]*Value, error) {
	return newReader(file, src).readAll()
}

// EvalFile reads src, the text of file, and evaluates its top-level forms in order
// in the global environment. It returns the value of the last one, or nil when
// there is none (an empty file, or only comments). Every error is an *Error, placed
// at the fault or else at the top-level form that failed.
func (ev *Interp) EvalFile(file string, src []byte) (*Value, error) {
	forms, err := newReader(file, src).readAll()
	if err != nil {
		return nil, err
	}
	var last *Value
	for _, f := range forms {
		if last, err = ev.eval(f, ev.global); err != nil {
			return nil, asError(err, f.pos)
		}
	}
	return last, nil
}

// Eval evaluates x in env: what a Syntax calls on the operands it evaluates.
func (ev *Interp) Eval(x *Value, env *Env) (*Value, error) { return ev.eval(x, env) }

// charge counts n units of work against the budget.
func (ev *Interp) charge(n int, p Pos) error {
	ev.steps += n
	if ev.steps > maxSteps {
		return Errorf(p, "evaluation takes too long (endless loop?)")
	}
	return nil
}

// specials are the interpreter's own special forms, recognised by the symbol at
// the head of a list.
var specials map[string]Syntax

func init() {
	specials = map[string]Syntax{
		"quote":            evalQuote,
		"quasiquote":       evalQuasiquote,
		"unquote":          evalMisplacedUnquote,
		"unquote-splicing": evalMisplacedUnquote,
		"define":           evalDefine,
		"set!":             evalSet,
		"lambda":           evalLambda,
		"let":              evalLet,
		"let*":             evalLetStar,
		"letrec":           evalLetrec,
		"letrec*":          evalLetrec,
		"if":               evalIf,
		"when":             evalWhen,
		"unless":           evalWhen,
		"cond":             evalCond,
		"begin":            evalBegin,
		"and":              evalAnd,
		"or":               evalOr,
		"use-modules":      evalIgnored,
		"define-module":    evalIgnored,
		"@":                evalModuleRef,
		"@@":               evalModuleRef,
	}
}

func (ev *Interp) eval(x *Value, e *Env) (*Value, error) {
	if err := ev.charge(1, x.pos); err != nil {
		return nil, err
	}
	switch x.k {
	case kSym:
		v, ok := e.lookup(x.str)
		if !ok {
			if _, special := ev.special(x.str); special {
				return nil, Errorf(x.pos, "bad use of syntax '%s'", x.str)
			}
			// Guile may well know it (a procedure or syntax this interpreter does
			// not implement): Unsupported lets the caller hand the file to Guile.
			return nil, &Error{Pos: x.pos, Msg: "unbound variable: " + x.str, Unsupported: x.str}
		}
		return v.at(x.pos), nil
	case kPair:
	default:
		return x, nil
	}
	ev.depth++
	defer func() { ev.depth-- }()
	if ev.depth > maxDepth {
		return nil, Errorf(x.pos, "recursion too deep")
	}
	args, ok := x.cdr.slice()
	if !ok {
		return nil, Errorf(x.pos, "improper list used as an expression")
	}
	if x.car.k == kSym {
		if _, bound := e.lookup(x.car.str); !bound {
			if sf, ok := ev.special(x.car.str); ok {
				return sf(ev, x, args, e)
			}
		}
	}
	if ref, ok := moduleRefForm(x.car, e); ok { // ((@ (MODULE) SYNTAX) ...)
		name, err := ev.resolveModuleRef(ref)
		if err != nil {
			return nil, err
		}
		if sf, ok := ev.special(name); ok {
			return sf(ev, x, args, e)
		}
	}
	fn, err := ev.eval(x.car, e)
	if err != nil {
		return nil, err
	}
	vals := make([]*Value, len(args))
	for i, a := range args {
		if vals[i], err = ev.eval(a, e); err != nil {
			return nil, err
		}
	}
	return ev.apply(fn, x, vals)
}

// apply calls fn with args; call is the calling expression, for errors.
func (ev *Interp) apply(fn *Value, call *Value, args []*Value) (*Value, error) {
	if fn.k != kProc {
		return nil, Errorf(call.pos, "wrong type to apply: %s", fn)
	}
	p := fn.proc
	if p.builtin != nil {
		return p.builtin(ev, call, args)
	}
	if len(args) < len(p.params) || p.rest == "" && len(args) > len(p.params) {
		return nil, Errorf(call.pos, "wrong number of arguments to %s: got %d, want %d", procName(p), len(args), len(p.params))
	}
	ev.depth++
	defer func() { ev.depth-- }()
	if ev.depth > maxDepth {
		return nil, Errorf(call.pos, "recursion too deep")
	}
	frame := newEnv(p.env)
	for i, name := range p.params {
		frame.vars[name] = args[i]
	}
	if p.rest != "" {
		frame.vars[p.rest] = listOf(args[len(p.params):], call.pos)
	}
	return ev.evalBody(p.body, frame)
}

func procName(p *proc) string {
	if p.name == "" {
		return "anonymous procedure"
	}
	return p.name
}

func (ev *Interp) evalBody(body []*Value, e *Env) (*Value, error) {
	var out *Value
	for _, x := range body {
		v, err := ev.eval(x, e)
		if err != nil {
			return nil, err
		}
		out = v
	}
	return out, nil
}

func evalIgnored(_ *Interp, x *Value, _ []*Value, _ *Env) (*Value, error) {
	return mkUnspec(x.pos), nil
}

func evalQuote(_ *Interp, x *Value, args []*Value, _ *Env) (*Value, error) {
	if len(args) != 1 {
		return nil, Errorf(x.pos, "quote takes exactly one datum")
	}
	return args[0].at(x.pos), nil
}

func evalMisplacedUnquote(_ *Interp, x *Value, _ []*Value, _ *Env) (*Value, error) {
	return nil, Errorf(x.pos, "%s outside of quasiquote", x.car.str)
}

func evalQuasiquote(ev *Interp, x *Value, args []*Value, e *Env) (*Value, error) {
	if len(args) != 1 {
		return nil, Errorf(x.pos, "quasiquote takes exactly one datum")
	}
	return ev.qq(args[0], 1, e)
}

// unquoteArg returns the operand of (NAME X), or nil when v is not that form.
func unquoteArg(v *Value, name string) *Value {
	if v.k == kPair && v.car.isSym(name) && v.cdr.k == kPair && v.cdr.cdr.k == kNull {
		return v.cdr.car
	}
	return nil
}

// qq expands a quasiquoted template at nesting level depth.
func (ev *Interp) qq(x *Value, depth int, e *Env) (*Value, error) {
	if err := ev.charge(1, x.pos); err != nil {
		return nil, err
	}
	if x.k != kPair {
		return x, nil
	}
	if a := unquoteArg(x, "unquote"); a != nil {
		if depth == 1 {
			return ev.eval(a, e)
		}
		in, err := ev.qq(a, depth-1, e)
		if err != nil {
			return nil, err
		}
		return listOf([]*Value{x.car, in}, x.pos), nil
	}
	if a := unquoteArg(x, "quasiquote"); a != nil {
		in, err := ev.qq(a, depth+1, e)
		if err != nil {
			return nil, err
		}
		return listOf([]*Value{x.car, in}, x.pos), nil
	}
	var items []*Value
	var tail *Value // set by every way out of the loop
	for cur := x; ; cur = cur.cdr {
		if cur.k != kPair {
			tail = cur
			break
		}
		if unquoteArg(cur, "unquote") != nil && cur != x {
			// (a . ,b): the rest of the list is itself an unquote.
			t, err := ev.qq(cur, depth, e)
			if err != nil {
				return nil, err
			}
			tail = t
			break
		}
		if a := unquoteArg(cur.car, "unquote-splicing"); a != nil && depth == 1 {
			v, err := ev.eval(a, e)
			if err != nil {
				return nil, err
			}
			vs, ok := v.slice()
			if !ok {
				return nil, Errorf(cur.car.pos, "unquote-splicing of %s, not a list", v.typeName())
			}
			if err := ev.charge(len(vs), cur.car.pos); err != nil {
				return nil, err
			}
			items = append(items, vs...)
			continue
		}
		var in *Value
		var err error
		if a := unquoteArg(cur.car, "unquote-splicing"); a != nil {
			in, err = ev.qq(a, depth-1, e)
			in = listOf([]*Value{cur.car.car, in}, cur.car.pos)
		} else {
			in, err = ev.qq(cur.car, depth, e)
		}
		if err != nil {
			return nil, err
		}
		items = append(items, in)
	}
	out := listOf(items, x.pos)
	if tail.k != kNull {
		if len(items) == 0 {
			return tail, nil
		}
		last := out
		for last.cdr.k == kPair {
			last = last.cdr
		}
		last.cdr = tail
	}
	return out, nil
}

// parseParams reads a lambda list: a symbol, a list of symbols, or an
// improper list ending in a symbol.
func parseParams(spec *Value) (params []string, rest string, err error) {
	seen := map[string]bool{}
	add := func(v *Value) error {
		if v.k != kSym {
			return Errorf(v.pos, "bad lambda parameter: %s", v)
		}
		if seen[v.str] {
			return Errorf(v.pos, "duplicate lambda parameter: %s", v.str)
		}
		seen[v.str] = true
		return nil
	}
	cur := spec
	for ; cur.k == kPair; cur = cur.cdr {
		if err := add(cur.car); err != nil {
			return nil, "", err
		}
		params = append(params, cur.car.str)
	}
	if cur.k != kNull {
		if err := add(cur); err != nil {
			return nil, "", err
		}
		rest = cur.str
	}
	return params, rest, nil
}

func evalLambda(_ *Interp, x *Value, args []*Value, e *Env) (*Value, error) {
	if len(args) < 2 {
		return nil, Errorf(x.pos, "lambda needs parameters and a body")
	}
	params, rest, err := parseParams(args[0])
	if err != nil {
		return nil, err
	}
	return &Value{k: kProc, pos: x.pos, proc: &proc{params: params, rest: rest, body: args[1:], env: e}}, nil
}

func evalDefine(ev *Interp, x *Value, args []*Value, e *Env) (*Value, error) {
	if len(args) == 0 {
		return nil, Errorf(x.pos, "define needs a name and a value")
	}
	target := args[0]
	if target.k == kPair { // (define (name . params) body ...)
		if target.car.k != kSym {
			return nil, Errorf(target.car.pos, "bad name in define: %s", target.car)
		}
		if len(args) < 2 {
			return nil, Errorf(x.pos, "define of procedure %s has no body", target.car.str)
		}
		params, rest, err := parseParams(target.cdr)
		if err != nil {
			return nil, err
		}
		e.vars[target.car.str] = &Value{k: kProc, pos: x.pos,
			proc: &proc{name: target.car.str, params: params, rest: rest, body: args[1:], env: e}}
		return mkUnspec(x.pos), nil
	}
	if target.k != kSym {
		return nil, Errorf(target.pos, "bad name in define: %s", target)
	}
	if len(args) != 2 {
		return nil, Errorf(x.pos, "define of %s needs exactly one value", target.str)
	}
	v, err := ev.eval(args[1], e)
	if err != nil {
		return nil, err
	}
	if v.k == kProc && v.proc.builtin == nil && v.proc.name == "" {
		named := *v.proc
		named.name = target.str
		v = &Value{k: kProc, pos: v.pos, proc: &named}
	}
	e.vars[target.str] = v
	return mkUnspec(x.pos), nil
}

func evalSet(ev *Interp, x *Value, args []*Value, e *Env) (*Value, error) {
	if len(args) != 2 || args[0].k != kSym {
		return nil, Errorf(x.pos, "set! needs a variable and a value")
	}
	v, err := ev.eval(args[1], e)
	if err != nil {
		return nil, err
	}
	for f := e; f != nil; f = f.parent {
		if _, ok := f.vars[args[0].str]; ok {
			f.vars[args[0].str] = v
			return mkUnspec(x.pos), nil
		}
	}
	return nil, Errorf(args[0].pos, "unbound variable: %s", args[0].str)
}

// bindings reads ((name expr) ...) of a let form.
func bindings(form string, spec *Value) (names []string, exprs []*Value, err error) {
	items, ok := spec.slice()
	if !ok {
		return nil, nil, Errorf(spec.pos, "bad %s bindings: %s", form, spec)
	}
	for _, b := range items {
		parts, ok := b.slice()
		if !ok || len(parts) != 2 || parts[0].k != kSym {
			return nil, nil, Errorf(b.pos, "bad %s binding: %s (expected (NAME VALUE))", form, b)
		}
		names = append(names, parts[0].str)
		exprs = append(exprs, parts[1])
	}
	return names, exprs, nil
}

func evalLet(ev *Interp, x *Value, args []*Value, e *Env) (*Value, error) {
	if len(args) >= 1 && args[0].k == kSym { // named let
		if len(args) < 3 {
			return nil, Errorf(x.pos, "named let needs bindings and a body")
		}
		names, exprs, err := bindings("let", args[1])
		if err != nil {
			return nil, err
		}
		vals := make([]*Value, len(exprs))
		for i, ex := range exprs {
			if vals[i], err = ev.eval(ex, e); err != nil {
				return nil, err
			}
		}
		loopEnv := newEnv(e)
		loop := &Value{k: kProc, pos: x.pos, proc: &proc{name: args[0].str, params: names, body: args[2:], env: loopEnv}}
		loopEnv.vars[args[0].str] = loop
		return ev.apply(loop, x, vals)
	}
	if len(args) < 2 {
		return nil, Errorf(x.pos, "let needs bindings and a body")
	}
	names, exprs, err := bindings("let", args[0])
	if err != nil {
		return nil, err
	}
	frame := newEnv(e)
	for i, ex := range exprs {
		v, err := ev.eval(ex, e)
		if err != nil {
			return nil, err
		}
		frame.vars[names[i]] = v
	}
	return ev.evalBody(args[1:], frame)
}

func evalLetStar(ev *Interp, x *Value, args []*Value, e *Env) (*Value, error) {
	if len(args) < 2 {
		return nil, Errorf(x.pos, "let* needs bindings and a body")
	}
	names, exprs, err := bindings("let*", args[0])
	if err != nil {
		return nil, err
	}
	frame := e
	for i, ex := range exprs {
		v, err := ev.eval(ex, frame)
		if err != nil {
			return nil, err
		}
		frame = newEnv(frame)
		frame.vars[names[i]] = v
	}
	return ev.evalBody(args[1:], newEnv(frame))
}

func evalLetrec(ev *Interp, x *Value, args []*Value, e *Env) (*Value, error) {
	if len(args) < 2 {
		return nil, Errorf(x.pos, "%s needs bindings and a body", x.car.str)
	}
	names, exprs, err := bindings(x.car.str, args[0])
	if err != nil {
		return nil, err
	}
	frame := newEnv(e)
	for i, ex := range exprs {
		v, err := ev.eval(ex, frame)
		if err != nil {
			return nil, err
		}
		frame.vars[names[i]] = v
	}
	return ev.evalBody(args[1:], frame)
}

func evalIf(ev *Interp, x *Value, args []*Value, e *Env) (*Value, error) {
	if len(args) != 2 && len(args) != 3 {
		return nil, Errorf(x.pos, "if needs a test, a consequent and an optional alternative")
	}
	t, err := ev.eval(args[0], e)
	if err != nil {
		return nil, err
	}
	if t.truthy() {
		return ev.eval(args[1], e)
	}
	if len(args) == 3 {
		return ev.eval(args[2], e)
	}
	return mkUnspec(x.pos), nil
}

func evalWhen(ev *Interp, x *Value, args []*Value, e *Env) (*Value, error) {
	if len(args) < 2 {
		return nil, Errorf(x.pos, "%s needs a test and a body", x.car.str)
	}
	t, err := ev.eval(args[0], e)
	if err != nil {
		return nil, err
	}
	if t.truthy() == (x.car.str == "when") {
		return ev.evalBody(args[1:], e)
	}
	return mkUnspec(x.pos), nil
}

func evalCond(ev *Interp, x *Value, args []*Value, e *Env) (*Value, error) {
	for i, clause := range args {
		parts, ok := clause.slice()
		if !ok || len(parts) == 0 {
			return nil, Errorf(clause.pos, "bad cond clause: %s", clause)
		}
		if parts[0].isSym("else") {
			if i != len(args)-1 || len(parts) < 2 {
				return nil, Errorf(clause.pos, "bad else clause in cond")
			}
			return ev.evalBody(parts[1:], e)
		}
		t, err := ev.eval(parts[0], e)
		if err != nil {
			return nil, err
		}
		if t.truthy() {
			if len(parts) == 1 {
				return t, nil
			}
			return ev.evalBody(parts[1:], e)
		}
	}
	return mkUnspec(x.pos), nil
}

func evalBegin(ev *Interp, x *Value, args []*Value, e *Env) (*Value, error) {
	if len(args) == 0 {
		return mkUnspec(x.pos), nil
	}
	return ev.evalBody(args, e)
}

func evalAnd(ev *Interp, x *Value, args []*Value, e *Env) (*Value, error) {
	out := mkBool(true, x.pos)
	for _, a := range args {
		v, err := ev.eval(a, e)
		if err != nil {
			return nil, err
		}
		if !v.truthy() {
			return v, nil
		}
		out = v
	}
	return out, nil
}

func evalOr(ev *Interp, x *Value, args []*Value, e *Env) (*Value, error) {
	for _, a := range args {
		v, err := ev.eval(a, e)
		if err != nil {
			return nil, err
		}
		if v.truthy() {
			return v, nil
		}
	}
	return mkBool(false, x.pos), nil
}

// asError returns err as an *Error, placing errors without a position at p.
func asError(err error, p Pos) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Pos: p, Msg: err.Error()}
}
