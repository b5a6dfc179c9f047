package scheme

import (
	"errors"
	"io"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// builtins are the procedures files like machines.scm call: what real files
// use, plus the few list and string helpers that go with them.
var builtins map[string]Builtin

func init() {
	builtins = map[string]Builtin{
		"list":           biList,
		"cons":           biCons,
		"car":            biCxr("car"),
		"cdr":            biCxr("cdr"),
		"cadr":           biCxr("cadr"),
		"cddr":           biCxr("cddr"),
		"caddr":          biCxr("caddr"),
		"append":         biAppend,
		"string-append":  biStringAppend,
		"map":            biMap,
		"append-map":     biAppendMap,
		"for-each":       biMap,
		"filter":         biFilter,
		"apply":          biApply,
		"length":         biLength,
		"reverse":        biReverse,
		"iota":           biIota,
		"not":            biNot,
		"null?":          Predicate(func(v *Value) bool { return v.k == kNull }),
		"pair?":          Predicate(func(v *Value) bool { return v.k == kPair }),
		"list?":          Predicate(func(v *Value) bool { _, ok := v.slice(); return ok }),
		"string?":        Predicate(func(v *Value) bool { return v.k == kStr }),
		"number?":        Predicate(func(v *Value) bool { return v.k == kNum }),
		"symbol?":        Predicate(func(v *Value) bool { return v.k == kSym }),
		"equal?":         biEqual,
		"eq?":            biEqual,
		"eqv?":           biEqual,
		"string=?":       biEqual,
		"number->string": biNumberToString,
		"string->number": biStringToNumber,
		"symbol->string": biSymbolToString,
		"string->symbol": biStringToSymbol,
		"getenv":         biGetenv,
		// (call-with-input-file FILE get-string-all): how services put a host key
		// read from a file into a record.
		"call-with-input-file": biCallWithInputFile,
		"get-string-all":       biGetStringAll,
		"+":                    biArith("+"),
		"-":                    biArith("-"),
		"*":                    biArith("*"),
		"/":                    biArith("/"),
		"=":                    biCompare("="),
		"<":                    biCompare("<"),
		">":                    biCompare(">"),
		"<=":                   biCompare("<="),
		">=":                   biCompare(">="),
	}
}

func name(call *Value) string {
	if call.car.k == kSym {
		return call.car.str
	}
	if c := call.car; c.k == kPair && (c.car.isSym("@") || c.car.isSym("@@")) {
		if ref, err := parseModuleRef(c); err == nil {
			return ref.name // ((@ (srfi srfi-1) append-map) ...)
		}
	}
	return "procedure"
}

func wantArgs(call *Value, args []*Value, min, max int) error {
	if len(args) < min || max >= 0 && len(args) > max {
		want := strconv.Itoa(min)
		switch {
		case max < 0:
			want = "at least " + want
		case max != min:
			want += " to " + strconv.Itoa(max)
		}
		return Errorf(call.pos, "wrong number of arguments to %s: got %d, want %s", name(call), len(args), want)
	}
	return nil
}

func argErr(call *Value, i int, v *Value, want string) error {
	return Errorf(v.pos, "%s: argument %d is %s, expected %s", name(call), i+1, v.typeName(), want)
}

func biList(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := ev.charge(len(args), call.pos); err != nil {
		return nil, err
	}
	return listOf(args, call.pos), nil
}

func biCons(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 2, 2); err != nil {
		return nil, err
	}
	return cons(args[0], args[1], call.pos), nil
}

func biCxr(path string) Builtin {
	ops := path[1 : len(path)-1]
	return func(ev *Interp, call *Value, args []*Value) (*Value, error) {
		if err := wantArgs(call, args, 1, 1); err != nil {
			return nil, err
		}
		v := args[0]
		for i := len(ops) - 1; i >= 0; i-- {
			if v.k != kPair {
				return nil, Errorf(args[0].pos, "%s: %s is too short", path, args[0])
			}
			if ops[i] == 'a' {
				v = v.car
			} else {
				v = v.cdr
			}
		}
		return v, nil
	}
}

func biAppend(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if len(args) == 0 {
		return mkNull(call.pos), nil
	}
	var items []*Value
	for i, a := range args[:len(args)-1] {
		vs, ok := a.slice()
		if !ok {
			return nil, argErr(call, i, a, "a list")
		}
		items = append(items, vs...)
	}
	if err := ev.charge(len(items), call.pos); err != nil {
		return nil, err
	}
	last := args[len(args)-1]
	if len(items) == 0 {
		return last.at(call.pos), nil
	}
	out := listOf(items, call.pos)
	tail := out
	for tail.cdr.k == kPair {
		tail = tail.cdr
	}
	tail.cdr = last
	return out, nil
}

func biStringAppend(ev *Interp, call *Value, args []*Value) (*Value, error) {
	var b strings.Builder
	for i, a := range args {
		if a.k != kStr {
			return nil, argErr(call, i, a, "a string")
		}
		if b.Len()+len(a.str) > maxStr {
			return nil, Errorf(call.pos, "string-append: result longer than %d bytes", maxStr)
		}
		b.WriteString(a.str)
	}
	if err := ev.charge(b.Len()/64, call.pos); err != nil {
		return nil, err
	}
	return mkStr(b.String(), call.pos), nil
}

// biMap is map and for-each over one or more lists, stopping at the
// shortest as Guile does.
func biMap(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 2, -1); err != nil {
		return nil, err
	}
	fn := args[0]
	if fn.k != kProc {
		return nil, argErr(call, 0, fn, "a procedure")
	}
	lists := make([][]*Value, len(args)-1)
	n := -1
	for i, a := range args[1:] {
		vs, ok := a.slice()
		if !ok {
			return nil, argErr(call, i+1, a, "a list")
		}
		lists[i] = vs
		if n < 0 || len(vs) < n {
			n = len(vs)
		}
	}
	out := make([]*Value, n)
	for j := 0; j < n; j++ {
		callArgs := make([]*Value, len(lists))
		for i := range lists {
			callArgs[i] = lists[i][j]
		}
		v, err := ev.apply(fn, call, callArgs)
		if err != nil {
			return nil, err
		}
		out[j] = v
	}
	if name(call) == "for-each" {
		return mkUnspec(call.pos), nil
	}
	return listOf(out, call.pos), nil
}

func biFilter(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 2, 2); err != nil {
		return nil, err
	}
	if args[0].k != kProc {
		return nil, argErr(call, 0, args[0], "a procedure")
	}
	vs, ok := args[1].slice()
	if !ok {
		return nil, argErr(call, 1, args[1], "a list")
	}
	var out []*Value
	for _, v := range vs {
		keep, err := ev.apply(args[0], call, []*Value{v})
		if err != nil {
			return nil, err
		}
		if keep.truthy() {
			out = append(out, v)
		}
	}
	return listOf(out, call.pos), nil
}

func biApply(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 2, -1); err != nil {
		return nil, err
	}
	last := args[len(args)-1]
	vs, ok := last.slice()
	if !ok {
		return nil, argErr(call, len(args)-1, last, "a list")
	}
	all := append(append([]*Value{}, args[1:len(args)-1]...), vs...)
	return ev.apply(args[0], call, all)
}

func biLength(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 1, 1); err != nil {
		return nil, err
	}
	vs, ok := args[0].slice()
	if !ok {
		return nil, argErr(call, 0, args[0], "a list")
	}
	return mkNum(float64(len(vs)), true, call.pos), nil
}

func biReverse(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 1, 1); err != nil {
		return nil, err
	}
	vs, ok := args[0].slice()
	if !ok {
		return nil, argErr(call, 0, args[0], "a list")
	}
	out := make([]*Value, len(vs))
	for i, v := range vs {
		out[len(vs)-1-i] = v
	}
	return listOf(out, call.pos), nil
}

func isInt(v *Value) bool {
	return v.k == kNum && v.num == math.Trunc(v.num) && !math.IsInf(v.num, 0)
}

// biIota is (iota COUNT [START [STEP]]).
func biIota(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 1, 3); err != nil {
		return nil, err
	}
	if !isInt(args[0]) || args[0].num < 0 {
		return nil, argErr(call, 0, args[0], "a non-negative integer")
	}
	start, step := mkNum(0, true, call.pos), mkNum(1, true, call.pos)
	if len(args) > 1 {
		start = args[1]
	}
	if len(args) > 2 {
		step = args[2]
	}
	for i, v := range []*Value{start, step} {
		if v.k != kNum {
			return nil, argErr(call, i+1, v, "a number")
		}
	}
	if err := ev.charge(int(math.Min(args[0].num, maxSteps+1)), call.pos); err != nil {
		return nil, err
	}
	n := int(args[0].num)
	out := make([]*Value, n)
	for i := range out {
		out[i] = mkNum(start.num+float64(i)*step.num, start.exact && step.exact, call.pos)
	}
	return listOf(out, call.pos), nil
}

func biNot(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 1, 1); err != nil {
		return nil, err
	}
	return mkBool(!args[0].truthy(), call.pos), nil
}

// Predicate returns the one-argument procedure that tells whether f holds of its
// argument: what a record type's NAME? is.
func Predicate(f func(*Value) bool) Builtin {
	return func(ev *Interp, call *Value, args []*Value) (*Value, error) {
		if err := wantArgs(call, args, 1, 1); err != nil {
			return nil, err
		}
		return mkBool(f(args[0]), call.pos), nil
	}
}

func equal(a, b *Value) bool {
	for {
		if a.k != b.k {
			return false
		}
		switch a.k {
		case kNull, kUnspec:
			return true
		case kBool:
			return a.b == b.b
		case kNum:
			return a.num == b.num && a.exact == b.exact
		case kStr, kSym:
			return a.str == b.str
		case kProc:
			return a.proc == b.proc
		case kRecord:
			return a.rec == b.rec
		case kPair:
			if !equal(a.car, b.car) {
				return false
			}
			a, b = a.cdr, b.cdr
		default:
			return false
		}
	}
}

func biEqual(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 2, 2); err != nil {
		return nil, err
	}
	if name(call) == "string=?" {
		for i, a := range args {
			if a.k != kStr {
				return nil, argErr(call, i, a, "a string")
			}
		}
	}
	return mkBool(equal(args[0], args[1]), call.pos), nil
}

func biNumberToString(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 1, 1); err != nil {
		return nil, err
	}
	if args[0].k != kNum {
		return nil, argErr(call, 0, args[0], "a number")
	}
	return mkStr(formatNum(args[0]), call.pos), nil
}

func biStringToNumber(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 1, 1); err != nil {
		return nil, err
	}
	if args[0].k != kStr {
		return nil, argErr(call, 0, args[0], "a string")
	}
	f, exact, ok := parseNumber(args[0].str)
	if !ok {
		return mkBool(false, call.pos), nil
	}
	return mkNum(f, exact, call.pos), nil
}

func biSymbolToString(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 1, 1); err != nil {
		return nil, err
	}
	if args[0].k != kSym {
		return nil, argErr(call, 0, args[0], "a symbol")
	}
	return mkStr(args[0].str, call.pos), nil
}

func biStringToSymbol(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 1, 1); err != nil {
		return nil, err
	}
	if args[0].k != kStr {
		return nil, argErr(call, 0, args[0], "a string")
	}
	return mkSym(args[0].str, call.pos), nil
}

// biGetenv is (getenv NAME): the variable's value, or #f when unset, as in
// Guile; files use it for $HOME in private-key.
func biGetenv(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 1, 1); err != nil {
		return nil, err
	}
	if args[0].k != kStr {
		return nil, argErr(call, 0, args[0], "a string")
	}
	if v := ev.getenv(args[0].str); v != "" {
		return mkStr(v, call.pos), nil
	}
	return mkBool(false, call.pos), nil
}

func biArith(op string) Builtin {
	return func(ev *Interp, call *Value, args []*Value) (*Value, error) {
		for i, a := range args {
			if a.k != kNum {
				return nil, argErr(call, i, a, "a number")
			}
		}
		if (op == "-" || op == "/") && len(args) == 0 {
			return nil, Errorf(call.pos, "wrong number of arguments to %s: got 0, want at least 1", op)
		}
		acc, exact := 0.0, true
		if op == "*" || op == "/" {
			acc = 1
		}
		for i, a := range args {
			exact = exact && a.exact
			if i == 0 && len(args) > 1 && (op == "-" || op == "/") {
				acc = a.num
				continue
			}
			switch op {
			case "+":
				acc += a.num
			case "-":
				acc -= a.num
			case "*":
				acc *= a.num
			case "/":
				if a.num == 0 {
					return nil, Errorf(a.pos, "division by zero")
				}
				acc /= a.num
			}
		}
		if op == "/" && acc != math.Trunc(acc) {
			exact = false
		}
		return mkNum(acc, exact, call.pos), nil
	}
}

func biCompare(op string) Builtin {
	return func(ev *Interp, call *Value, args []*Value) (*Value, error) {
		if err := wantArgs(call, args, 1, -1); err != nil {
			return nil, err
		}
		for i, a := range args {
			if a.k != kNum {
				return nil, argErr(call, i, a, "a number")
			}
		}
		for i := 1; i < len(args); i++ {
			a, b := args[i-1].num, args[i].num
			ok := map[string]bool{"=": a == b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
			if !ok {
				return mkBool(false, call.pos), nil
			}
		}
		return mkBool(true, call.pos), nil
	}
}

// biAppendMap is SRFI-1's (append-map F LIST ...): map, then append the results,
// each of which must be a list.
func biAppendMap(ev *Interp, call *Value, args []*Value) (*Value, error) {
	mapped, err := biMap(ev, call, args)
	if err != nil {
		return nil, err
	}
	results, _ := mapped.slice()
	var items []*Value
	for _, r := range results {
		vs, ok := r.slice()
		if !ok {
			return nil, Errorf(call.pos, "append-map: the procedure returned %s %s, not a list", r.typeName(), r)
		}
		if err := ev.charge(len(vs), call.pos); err != nil {
			return nil, err
		}
		items = append(items, vs...)
	}
	return listOf(items, call.pos), nil
}

// biCallWithInputFile opens FILE, reads it whole (up to maxStr bytes) and applies PROC
// to a port over its text. A file that cannot be opened is an error at the call, in
// Guile's words.
func biCallWithInputFile(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 2, 2); err != nil {
		return nil, err
	}
	if args[0].k != kStr {
		return nil, argErr(call, 0, args[0], "a string")
	}
	if args[1].k != kProc {
		return nil, argErr(call, 1, args[1], "a procedure")
	}
	file := args[0].str
	f, err := os.Open(file)
	if err != nil {
		return nil, Errorf(call.pos, "In procedure open-file: %s: %q", guileErrno(err), file)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStr+1))
	if err != nil {
		return nil, Errorf(call.pos, "In procedure read: %s: %q", guileErrno(err), file)
	}
	if len(data) > maxStr {
		return nil, Errorf(call.pos, "call-with-input-file: %q is longer than %d bytes", file, maxStr)
	}
	if err := ev.charge(len(data)/64, call.pos); err != nil {
		return nil, err
	}
	port := &Value{k: kPort, pos: call.pos, port: &inPort{name: file, text: string(data)}}
	return ev.apply(args[1], call, []*Value{port})
}

// guileErrno writes the system error of err as strerror does: "No such file or
// directory".
func guileErrno(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	msg := err.Error()
	r, size := utf8.DecodeRuneInString(msg)
	return string(unicode.ToUpper(r)) + msg[size:]
}

// biGetStringAll is (get-string-all PORT): the rest of the port's text.
func biGetStringAll(ev *Interp, call *Value, args []*Value) (*Value, error) {
	if err := wantArgs(call, args, 1, 1); err != nil {
		return nil, err
	}
	if args[0].k != kPort {
		return nil, argErr(call, 0, args[0], "an input port")
	}
	p := args[0].port
	rest := p.text[p.off:]
	p.off = len(p.text)
	return mkStr(rest, call.pos), nil
}
