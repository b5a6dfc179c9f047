package machines

import (
	"errors"
	"fmt"
	"os"
)

// Limits that keep a hostile or mistaken file (an endless loop, a string
// doubled a thousand times) from hanging or exhausting the hook.
const (
	maxSteps = 2_000_000 // evaluation steps plus values allocated
	maxDepth = 2_000     // nested evaluations (deep recursion)
	maxStr   = 1 << 20   // bytes in one string
)

// env is one frame of variable bindings.
type env struct {
	vars   map[string]*val
	parent *env
}

func newEnv(parent *env) *env { return &env{vars: map[string]*val{}, parent: parent} }

func (e *env) lookup(name string) (*val, bool) {
	for ; e != nil; e = e.parent {
		if v, ok := e.vars[name]; ok {
			return v, true
		}
	}
	return nil, false
}

// evaluator runs the Scheme of one machines file.
type evaluator struct {
	steps      int
	depth      int
	warnings   []Warning
	getenv     func(string) string
	privateKey string // default private-key
	global     *env
}

func newEvaluator() *evaluator {
	ev := &evaluator{getenv: os.Getenv, privateKey: defaultPrivateKey()}
	ev.global = newEnv(nil)
	for name, fn := range builtins {
		ev.global.vars[name] = &val{k: kProc, proc: &proc{name: name, builtin: fn}}
	}
	return ev
}

func errAt(p Pos, format string, args ...any) error {
	return &Error{Pos: p, Msg: fmt.Sprintf(format, args...)}
}

// charge counts n units of work against the budget.
func (ev *evaluator) charge(n int, p Pos) error {
	ev.steps += n
	if ev.steps > maxSteps {
		return errAt(p, "evaluation takes too long (endless loop?)")
	}
	return nil
}

// special forms, recognised by the symbol at the head of a list.
var specials map[string]func(ev *evaluator, x *val, args []*val, e *env) (*val, error)

func init() {
	specials = map[string]func(ev *evaluator, x *val, args []*val, e *env) (*val, error){
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
		"build-machine":    evalBuildMachine,
		"@":                evalModuleRef,
		"@@":               evalModuleRef,
	}
}

func (ev *evaluator) eval(x *val, e *env) (*val, error) {
	if err := ev.charge(1, x.pos); err != nil {
		return nil, err
	}
	switch x.k {
	case kSym:
		v, ok := e.lookup(x.str)
		if !ok {
			if _, special := specials[x.str]; special {
				return nil, errAt(x.pos, "bad use of syntax '%s'", x.str)
			}
			// Guile may well know it (a procedure or syntax offload does not
			// implement): guix can evaluate the file, see LoadWith.
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
		return nil, errAt(x.pos, "recursion too deep")
	}
	args, ok := x.cdr.slice()
	if !ok {
		return nil, errAt(x.pos, "improper list used as an expression")
	}
	if x.car.k == kSym {
		if _, bound := e.lookup(x.car.str); !bound {
			if sf, ok := specials[x.car.str]; ok {
				return sf(ev, x, args, e)
			}
		}
	}
	if ref, ok := moduleRefForm(x.car, e); ok { // ((@ (guix offload) build-machine) ...)
		name, err := resolveModuleRef(ref)
		if err != nil {
			return nil, err
		}
		if sf, ok := specials[name]; ok {
			return sf(ev, x, args, e)
		}
	}
	fn, err := ev.eval(x.car, e)
	if err != nil {
		return nil, err
	}
	vals := make([]*val, len(args))
	for i, a := range args {
		if vals[i], err = ev.eval(a, e); err != nil {
			return nil, err
		}
	}
	return ev.apply(fn, x, vals)
}

// apply calls fn with args; call is the calling expression, for errors.
func (ev *evaluator) apply(fn *val, call *val, args []*val) (*val, error) {
	if fn.k != kProc {
		return nil, errAt(call.pos, "wrong type to apply: %s", fn)
	}
	p := fn.proc
	if p.builtin != nil {
		return p.builtin(ev, call, args)
	}
	if len(args) < len(p.params) || p.rest == "" && len(args) > len(p.params) {
		return nil, errAt(call.pos, "wrong number of arguments to %s: got %d, want %d", procName(p), len(args), len(p.params))
	}
	ev.depth++
	defer func() { ev.depth-- }()
	if ev.depth > maxDepth {
		return nil, errAt(call.pos, "recursion too deep")
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

func (ev *evaluator) evalBody(body []*val, e *env) (*val, error) {
	var out *val
	for _, x := range body {
		v, err := ev.eval(x, e)
		if err != nil {
			return nil, err
		}
		out = v
	}
	return out, nil
}

func evalIgnored(_ *evaluator, x *val, _ []*val, _ *env) (*val, error) { return mkUnspec(x.pos), nil }

func evalQuote(_ *evaluator, x *val, args []*val, _ *env) (*val, error) {
	if len(args) != 1 {
		return nil, errAt(x.pos, "quote takes exactly one datum")
	}
	return args[0].at(x.pos), nil
}

func evalMisplacedUnquote(_ *evaluator, x *val, _ []*val, _ *env) (*val, error) {
	return nil, errAt(x.pos, "%s outside of quasiquote", x.car.str)
}

func evalQuasiquote(ev *evaluator, x *val, args []*val, e *env) (*val, error) {
	if len(args) != 1 {
		return nil, errAt(x.pos, "quasiquote takes exactly one datum")
	}
	return ev.qq(args[0], 1, e)
}

// unquoteArg returns the operand of (NAME X), or nil when v is not that form.
func unquoteArg(v *val, name string) *val {
	if v.k == kPair && v.car.isSym(name) && v.cdr.k == kPair && v.cdr.cdr.k == kNull {
		return v.cdr.car
	}
	return nil
}

// qq expands a quasiquoted template at nesting level depth.
func (ev *evaluator) qq(x *val, depth int, e *env) (*val, error) {
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
		return listOf([]*val{x.car, in}, x.pos), nil
	}
	if a := unquoteArg(x, "quasiquote"); a != nil {
		in, err := ev.qq(a, depth+1, e)
		if err != nil {
			return nil, err
		}
		return listOf([]*val{x.car, in}, x.pos), nil
	}
	var items []*val
	var tail *val // set by every way out of the loop
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
				return nil, errAt(cur.car.pos, "unquote-splicing of %s, not a list", v.typeName())
			}
			if err := ev.charge(len(vs), cur.car.pos); err != nil {
				return nil, err
			}
			items = append(items, vs...)
			continue
		}
		var in *val
		var err error
		if a := unquoteArg(cur.car, "unquote-splicing"); a != nil {
			in, err = ev.qq(a, depth-1, e)
			in = listOf([]*val{cur.car.car, in}, cur.car.pos)
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
func parseParams(spec *val) (params []string, rest string, err error) {
	seen := map[string]bool{}
	add := func(v *val) error {
		if v.k != kSym {
			return errAt(v.pos, "bad lambda parameter: %s", v)
		}
		if seen[v.str] {
			return errAt(v.pos, "duplicate lambda parameter: %s", v.str)
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

func evalLambda(_ *evaluator, x *val, args []*val, e *env) (*val, error) {
	if len(args) < 2 {
		return nil, errAt(x.pos, "lambda needs parameters and a body")
	}
	params, rest, err := parseParams(args[0])
	if err != nil {
		return nil, err
	}
	return &val{k: kProc, pos: x.pos, proc: &proc{params: params, rest: rest, body: args[1:], env: e}}, nil
}

func evalDefine(ev *evaluator, x *val, args []*val, e *env) (*val, error) {
	if len(args) == 0 {
		return nil, errAt(x.pos, "define needs a name and a value")
	}
	target := args[0]
	if target.k == kPair { // (define (name . params) body ...)
		if target.car.k != kSym {
			return nil, errAt(target.car.pos, "bad name in define: %s", target.car)
		}
		if len(args) < 2 {
			return nil, errAt(x.pos, "define of procedure %s has no body", target.car.str)
		}
		params, rest, err := parseParams(target.cdr)
		if err != nil {
			return nil, err
		}
		e.vars[target.car.str] = &val{k: kProc, pos: x.pos,
			proc: &proc{name: target.car.str, params: params, rest: rest, body: args[1:], env: e}}
		return mkUnspec(x.pos), nil
	}
	if target.k != kSym {
		return nil, errAt(target.pos, "bad name in define: %s", target)
	}
	if len(args) != 2 {
		return nil, errAt(x.pos, "define of %s needs exactly one value", target.str)
	}
	v, err := ev.eval(args[1], e)
	if err != nil {
		return nil, err
	}
	if v.k == kProc && v.proc.builtin == nil && v.proc.name == "" {
		named := *v.proc
		named.name = target.str
		v = &val{k: kProc, pos: v.pos, proc: &named}
	}
	e.vars[target.str] = v
	return mkUnspec(x.pos), nil
}

func evalSet(ev *evaluator, x *val, args []*val, e *env) (*val, error) {
	if len(args) != 2 || args[0].k != kSym {
		return nil, errAt(x.pos, "set! needs a variable and a value")
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
	return nil, errAt(args[0].pos, "unbound variable: %s", args[0].str)
}

// bindings reads ((name expr) ...) of a let form.
func bindings(form string, spec *val) (names []string, exprs []*val, err error) {
	items, ok := spec.slice()
	if !ok {
		return nil, nil, errAt(spec.pos, "bad %s bindings: %s", form, spec)
	}
	for _, b := range items {
		parts, ok := b.slice()
		if !ok || len(parts) != 2 || parts[0].k != kSym {
			return nil, nil, errAt(b.pos, "bad %s binding: %s (expected (NAME VALUE))", form, b)
		}
		names = append(names, parts[0].str)
		exprs = append(exprs, parts[1])
	}
	return names, exprs, nil
}

func evalLet(ev *evaluator, x *val, args []*val, e *env) (*val, error) {
	if len(args) >= 1 && args[0].k == kSym { // named let
		if len(args) < 3 {
			return nil, errAt(x.pos, "named let needs bindings and a body")
		}
		names, exprs, err := bindings("let", args[1])
		if err != nil {
			return nil, err
		}
		vals := make([]*val, len(exprs))
		for i, ex := range exprs {
			if vals[i], err = ev.eval(ex, e); err != nil {
				return nil, err
			}
		}
		loopEnv := newEnv(e)
		loop := &val{k: kProc, pos: x.pos, proc: &proc{name: args[0].str, params: names, body: args[2:], env: loopEnv}}
		loopEnv.vars[args[0].str] = loop
		return ev.apply(loop, x, vals)
	}
	if len(args) < 2 {
		return nil, errAt(x.pos, "let needs bindings and a body")
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

func evalLetStar(ev *evaluator, x *val, args []*val, e *env) (*val, error) {
	if len(args) < 2 {
		return nil, errAt(x.pos, "let* needs bindings and a body")
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

func evalLetrec(ev *evaluator, x *val, args []*val, e *env) (*val, error) {
	if len(args) < 2 {
		return nil, errAt(x.pos, "%s needs bindings and a body", x.car.str)
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

func evalIf(ev *evaluator, x *val, args []*val, e *env) (*val, error) {
	if len(args) != 2 && len(args) != 3 {
		return nil, errAt(x.pos, "if needs a test, a consequent and an optional alternative")
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

func evalWhen(ev *evaluator, x *val, args []*val, e *env) (*val, error) {
	if len(args) < 2 {
		return nil, errAt(x.pos, "%s needs a test and a body", x.car.str)
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

func evalCond(ev *evaluator, x *val, args []*val, e *env) (*val, error) {
	for i, clause := range args {
		parts, ok := clause.slice()
		if !ok || len(parts) == 0 {
			return nil, errAt(clause.pos, "bad cond clause: %s", clause)
		}
		if parts[0].isSym("else") {
			if i != len(args)-1 || len(parts) < 2 {
				return nil, errAt(clause.pos, "bad else clause in cond")
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

func evalBegin(ev *evaluator, x *val, args []*val, e *env) (*val, error) {
	if len(args) == 0 {
		return mkUnspec(x.pos), nil
	}
	return ev.evalBody(args, e)
}

func evalAnd(ev *evaluator, x *val, args []*val, e *env) (*val, error) {
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

func evalOr(ev *evaluator, x *val, args []*val, e *env) (*val, error) {
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
