package machines

import (
	"strings"
)

// moduleBindings are the module references, (@ MODULE NAME) or (@@ MODULE NAME), that
// offload's evaluator resolves itself: the procedures and syntax that generated
// machines files take from Guile and Guix modules (Guix System's file calls
// (@ (srfi srfi-1) append-map), services read host keys with
// (@ (ice-9 textual-ports) get-string-all)). Each name is the builtin or special
// form of the same name. Any other reference is left to guix (an Unsupported error).
var moduleBindings = map[string][]string{
	"srfi srfi-1": {"append-map", "filter", "iota", "map", "for-each", "append", "reverse",
		"length", "cons", "list", "car", "cdr", "cadr", "cddr", "caddr", "null?", "pair?", "list?"},
	"ice-9 textual-ports": {"get-string-all"},
	// The module that defines the build-machine record: (guix offload) since 2025,
	// (guix scripts offload) before.
	"guix offload":         {"build-machine", "build-machine?"},
	"guix scripts offload": {"build-machine", "build-machine?"},
}

// guileCore reports whether name is reachable as (@ (guile) NAME): the builtins that
// are Guile's own procedures (all but those of the modules above).
func guileCore(name string) bool {
	_, ok := builtins[name]
	return ok && name != "append-map" && name != "get-string-all" && name != "build-machine?"
}

// moduleRef is a parsed (@ MODULE NAME) form.
type moduleRef struct {
	form   *val
	module []string
	name   string
}

func (r moduleRef) String() string {
	return "(" + r.form.car.str + " (" + strings.Join(r.module, " ") + ") " + r.name + ")"
}

// moduleRefForm reports whether x is an (@ ...) or (@@ ...) form, with @ not rebound.
func moduleRefForm(x *val, e *env) (*val, bool) {
	if x.k != kPair || x.car.k != kSym || x.car.str != "@" && x.car.str != "@@" {
		return nil, false
	}
	_, bound := e.lookup(x.car.str)
	return x, !bound
}

// parseModuleRef checks the shape of (@ (NAME ...) SYMBOL).
func parseModuleRef(x *val) (moduleRef, error) {
	args, _ := x.cdr.slice()
	bad := errAt(x.pos, "bad module reference %s: expected (%s (MODULE NAME ...) VARIABLE)", x, x.car.str)
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
// form, refers to; a reference outside moduleBindings is an Unsupported error.
func resolveModuleRef(x *val) (string, error) {
	ref, err := parseModuleRef(x)
	if err != nil {
		return "", err
	}
	mod := strings.Join(ref.module, " ")
	known := mod == "guile" && guileCore(ref.name)
	for _, n := range moduleBindings[mod] {
		known = known || n == ref.name
	}
	if !known {
		return "", &Error{Pos: x.pos, Msg: "offload's evaluator does not know " + ref.String(), Unsupported: ref.String()}
	}
	return ref.name, nil
}

// evalModuleRef is (@ MODULE NAME) used as a value: the procedure it names.
func evalModuleRef(ev *evaluator, x *val, _ []*val, _ *env) (*val, error) {
	name, err := resolveModuleRef(x)
	if err != nil {
		return nil, err
	}
	if _, special := specials[name]; special {
		return nil, errAt(x.pos, "bad use of syntax '%s'", name)
	}
	fn, ok := builtins[name] // the module's own, even where the file redefined the name
	if !ok {
		return nil, errAt(x.pos, "unbound variable: %s", name)
	}
	return &val{k: kProc, pos: x.pos, proc: &proc{name: name, builtin: fn}}, nil
}
