package scheme

import (
	"strings"
)

// moduleBindings are the module references, (@ MODULE NAME) or (@@ MODULE NAME), that
// the interpreter resolves itself: the procedures that generated machines files take
// from Guile's modules (Guix System's file calls (@ (srfi srfi-1) append-map),
// services read host keys with (@ (ice-9 textual-ports) get-string-all)). Each name
// is the builtin of the same name. The interpreter's user adds its own modules
// (DefineModule); any other reference is an Unsupported error.
var moduleBindings = map[string][]string{
	"srfi srfi-1": {"append-map", "filter", "iota", "map", "for-each", "append", "reverse",
		"length", "cons", "list", "car", "cdr", "cadr", "cddr", "caddr", "null?", "pair?", "list?"},
	"ice-9 textual-ports": {"get-string-all"},
}

// guileCore reports whether name is reachable as (@ (guile) NAME): the interpreter's
// builtins that are Guile's own procedures (all but those of the modules above).
func guileCore(name string) bool {
	_, ok := builtins[name]
	return ok && name != "append-map" && name != "get-string-all"
}

// moduleRef is a parsed (@ MODULE NAME) form.
type moduleRef struct {
	form   *Value
	module []string
	name   string
}

func (r moduleRef) String() string {
	return "(" + r.form.car.str + " (" + strings.Join(r.module, " ") + ") " + r.name + ")"
}

// moduleRefForm reports whether x is an (@ ...) or (@@ ...) form, with @ not rebound.
func moduleRefForm(x *Value, e *Env) (*Value, bool) {
	if x.k != kPair || x.car.k != kSym || x.car.str != "@" && x.car.str != "@@" {
		return nil, false
	}
	_, bound := e.lookup(x.car.str)
	return x, !bound
}

// parseModuleRef checks the shape of (@ (NAME ...) SYMBOL).
func parseModuleRef(x *Value) (moduleRef, error) {
	args, _ := x.cdr.slice()
	bad := Errorf(x.pos, "bad module reference %s: expected (%s (MODULE NAME ...) VARIABLE)", x, x.car.str)
	if len(args) != 2 || args[1].k != kSym {
		return moduleRef{}, bad
	}
	parts, ok := args[0].slice()
	if !ok || len(parts) == 0 {
		return moduleRef{}, bad
	}
	ref := moduleRef{form: x, name: args[1].str}
	for _, p := range parts {
		if p.k != kSym {
			return moduleRef{}, bad
		}
		ref.module = append(ref.module, p.str)
	}
	return ref, nil
}

// resolveModuleRef returns the name of the builtin or special form that x, an (@ ...)
// form, refers to; a reference outside moduleBindings and the modules the
// interpreter's user defined is an Unsupported error.
func (ev *Interp) resolveModuleRef(x *Value) (string, error) {
	ref, err := parseModuleRef(x)
	if err != nil {
		return "", err
	}
	mod := strings.Join(ref.module, " ")
	known := mod == "guile" && guileCore(ref.name)
	for _, n := range moduleBindings[mod] {
		known = known || n == ref.name
	}
	for _, n := range ev.modules[mod] {
		known = known || n == ref.name
	}
	if !known {
		return "", &Error{Pos: x.pos, Msg: "offload's evaluator does not know " + ref.String(), Unsupported: ref.String()}
	}
	return ref.name, nil
}

// evalModuleRef is (@ MODULE NAME) used as a value: the procedure it names.
func evalModuleRef(ev *Interp, x *Value, _ []*Value, _ *Env) (*Value, error) {
	name, err := ev.resolveModuleRef(x)
	if err != nil {
		return nil, err
	}
	if _, special := ev.special(name); special {
		return nil, Errorf(x.pos, "bad use of syntax '%s'", name)
	}
	fn, ok := ev.builtin(name) // the module's own, even where the file redefined the name
	if !ok {
		return nil, Errorf(x.pos, "unbound variable: %s", name)
	}
	return &Value{k: kProc, pos: x.pos, proc: &proc{name: name, builtin: fn}}, nil
}
