package machines

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func f64(f float64) *float64 { return &f }

// defaults returns a machine with Guix's documented defaults (written out
// from the manual, not taken from our code) for the given required fields.
func defaults(name, user string, systems ...string) Machine {
	return Machine{
		Name: name, Port: 22, Systems: systems, User: user,
		PrivateKey:        "/home/tester/.ssh/id_rsa",
		ParallelBuilds:    1,
		Speed:             1.0,
		OverloadThreshold: f64(0.8),
		Compression:       "zlib@openssh.com,zlib",
		CompressionLevel:  3,
		DaemonSocket:      "/var/guix/daemon-socket/socket",
	}
}

// same compares machines ignoring Pos and the nil/empty slice distinction.
func same(t *testing.T, got *Machine, want Machine) {
	t.Helper()
	g := *got
	g.Pos = Pos{}
	norm := func(m *Machine) {
		for _, s := range []*[]string{&m.Systems, &m.Features, &m.SSHOptions} {
			if len(*s) == 0 {
				*s = nil
			}
		}
	}
	norm(&g)
	norm(&want)
	if !reflect.DeepEqual(g, want) {
		t.Errorf("machine %s:\n got %+v (threshold %v)\nwant %+v (threshold %v)", want.Name, g, deref(g.OverloadThreshold), want, deref(want.OverloadThreshold))
	}
}

func deref(p *float64) any {
	if p == nil {
		return "#f"
	}
	return *p
}

func TestManualExample(t *testing.T) {
	t.Setenv("HOME", "/home/tester")
	ms, ws, err := Load("testdata/manual.scm")
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 0 {
		t.Errorf("warnings: %v", ws)
	}
	if len(ms) != 2 {
		t.Fatalf("got %d machines, want 2", len(ms))
	}
	a := defaults("eightysix.example.org", "bob", "x86_64-linux", "i686-linux")
	a.HostKey = "ssh-ed25519 AAAAC3Nza... root@(none)"
	a.Speed = 2
	same(t, ms[0], a)
	b := defaults("armeight.example.org", "alice", "aarch64-linux")
	b.HostKey = "ssh-rsa AAAAB3Nza..."
	b.PrivateKey = "/root/.ssh/identity-for-guix"
	same(t, ms[1], b)
	if got, want := ms[0].Pos, (Pos{File: "testdata/manual.scm", Line: 1, Col: 7}); got != want {
		t.Errorf("pos = %v, want %v", got, want)
	}
	if got, want := ms[1].Pos.String(), "testdata/manual.scm:8:7"; got != want {
		t.Errorf("pos = %v, want %v", got, want)
	}
}

func TestSchemeForms(t *testing.T) {
	t.Setenv("HOME", "/home/tester")
	ms, ws, err := Load("testdata/forms.scm")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 4 {
		t.Fatalf("got %d machines, want 4", len(ms))
	}
	for i, host := range []string{"n1", "n2"} {
		w := defaults(host+".lan", "offload", "x86_64-linux")
		w.Port = 2222
		w.HostKey = "ssh-ed25519 AAAAnode"
		w.PrivateKey = "/etc/guix/keys/" + host + ".key"
		w.Speed = []float64{2, 4}[i]
		w.Features = []string{"kvm", "big-mem"}
		same(t, ms[i], w)
	}
	arm := defaults("arm64.example.org", "alice", "aarch64-linux", "armhf-linux")
	arm.HostKey = "ssh-ed25519 AAAAarm"
	arm.ParallelBuilds = 4
	arm.OverloadThreshold = nil
	arm.SSHOptions = []string{"-o ServerAliveInterval=10"}
	same(t, ms[2], arm)
	old := defaults("old.example.org", "root", "i686-linux")
	old.HostKey = "ssh-rsa AAAAold \"quoted\" back\\slash\ttab"
	old.Speed = 0.5
	old.OverloadThreshold = f64(0.6)
	old.Compression = "none"
	old.CompressionLevel = 9
	old.DaemonSocket = "/run/guix/socket"
	old.SSHOptions = []string{"-o", "Ciphers=aes128-ctr"}
	old.UsedSystemField = true
	same(t, ms[3], old)

	sshOptions := "warning: ssh-options is not a field of Guix's build-machine: Guix's own hook refuses this file; put ssh options in ssh_config instead (README)"
	wantWarn := []string{"testdata/forms.scm:36:20: " + sshOptions,
		"testdata/forms.scm:42:8: warning: the 'system' field is deprecated, use 'systems' instead",
		"testdata/forms.scm:50:20: " + sshOptions}
	if got := warnStrings(ws); !reflect.DeepEqual(got, wantWarn) {
		t.Errorf("warnings:\n got %q\nwant %q", got, wantWarn)
	}
	if got, want := ms[0].Pos.String(), "testdata/forms.scm:15:3"; got != want {
		t.Errorf("pos of a record made in a procedure = %s, want %s", got, want)
	}
}

func warnStrings(ws []Warning) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.String())
	}
	return out
}

// record wraps fields into a one-machine file.
func record(fields string) string {
	return `(list (build-machine (name "m") (user "u") (systems '("x86_64-linux")) (host-key "k") ` + fields + `))`
}

func TestFields(t *testing.T) {
	t.Setenv("HOME", "/home/tester")
	base := func() Machine {
		m := defaults("m", "u", "x86_64-linux")
		m.HostKey = "k"
		return m
	}
	tests := []struct {
		fields string
		change func(*Machine)
	}{
		{``, func(m *Machine) {}},
		{`(port 2222)`, func(m *Machine) { m.Port = 2222 }},
		{`(private-key "/k")`, func(m *Machine) { m.PrivateKey = "/k" }},
		{`(parallel-builds 8)`, func(m *Machine) { m.ParallelBuilds = 8 }},
		{`(speed 3)`, func(m *Machine) { m.Speed = 3 }},
		{`(speed 2.5)`, func(m *Machine) { m.Speed = 2.5 }},
		{`(speed .5)`, func(m *Machine) { m.Speed = 0.5 }},
		{`(features (list "kvm"))`, func(m *Machine) { m.Features = []string{"kvm"} }},
		{`(features '())`, func(m *Machine) {}},
		{`(overload-threshold 0.5)`, func(m *Machine) { m.OverloadThreshold = f64(0.5) }},
		{`(overload-threshold 1)`, func(m *Machine) { m.OverloadThreshold = f64(1) }},
		{`(overload-threshold #f)`, func(m *Machine) { m.OverloadThreshold = nil }},
		{`(overload-threshold #false)`, func(m *Machine) { m.OverloadThreshold = nil }},
		{`(compression "none")`, func(m *Machine) { m.Compression = "none" }},
		{`(compression-level 6)`, func(m *Machine) { m.CompressionLevel = 6 }},
		{`(compression-level -1)`, func(m *Machine) { m.CompressionLevel = -1 }},
		{`(parallel-builds -1)`, func(m *Machine) { m.ParallelBuilds = -1 }},
		{`(daemon-socket "/s")`, func(m *Machine) { m.DaemonSocket = "/s" }},
		{`(ssh-options '("-4"))`, func(m *Machine) { m.SSHOptions = []string{"-4"} }},
		{`(ssh-options "-4 -C")`, func(m *Machine) { m.SSHOptions = []string{"-4 -C"} }},
		{`(port (+ 2000 22))`, func(m *Machine) { m.Port = 2022 }},
		{`(port 22.)`, func(m *Machine) {}},
		{`(private-key (string-append "a" "\x41;\n"))`, func(m *Machine) { m.PrivateKey = "aA\n" }},
	}
	for _, tc := range tests {
		t.Run(tc.fields, func(t *testing.T) {
			ms, _, err := Parse("f.scm", []byte(record(tc.fields)))
			if err != nil {
				t.Fatal(err)
			}
			want := base()
			tc.change(&want)
			same(t, ms[0], want)
		})
	}
}

func TestSystemsField(t *testing.T) {
	t.Setenv("HOME", "/home/tester")
	tests := []struct {
		src      string
		systems  []string
		usedOld  bool
		warnings int
	}{
		{`(list (build-machine (name "m") (user "u") (host-key "k") (system "i686-linux")))`, []string{"i686-linux"}, true, 1},
		{`(list (build-machine (name "m") (user "u") (host-key "k") (systems (list "a" "b"))))`, []string{"a", "b"}, false, 0},
		// Guix prefers systems when both are given.
		{`(list (build-machine (name "m") (user "u") (host-key "k") (system "x") (systems (list "a"))))`, []string{"a"}, false, 1},
	}
	for _, tc := range tests {
		ms, ws, err := Parse("f.scm", []byte(tc.src))
		if err != nil {
			t.Fatalf("%s: %v", tc.src, err)
		}
		if !reflect.DeepEqual(ms[0].Systems, tc.systems) || ms[0].UsedSystemField != tc.usedOld || len(ws) != tc.warnings {
			t.Errorf("%s: systems %q used-system %v warnings %v", tc.src, ms[0].Systems, ms[0].UsedSystemField, ws)
		}
	}
}

func TestPrivateKeyDefault(t *testing.T) {
	t.Setenv("HOME", "/var/lib/hooker")
	ms, _, err := Parse("f.scm", []byte(record("")))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ms[0].PrivateKey, "/var/lib/hooker/.ssh/id_rsa"; got != want {
		t.Errorf("private-key = %q, want %q", got, want)
	}
	t.Setenv("HOME", "")
	ms, _, err = Parse("f.scm", []byte(record("")))
	if err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 && ms[0].PrivateKey != "/root/.ssh/id_rsa" {
		t.Errorf("private-key without HOME as root = %q, want /root/.ssh/id_rsa", ms[0].PrivateKey)
	}
}

func TestForms(t *testing.T) {
	t.Setenv("HOME", "/home/tester")
	t.Setenv("OFFLOAD_TEST_USER", "carol")
	m := func(fields string) string {
		return `(build-machine (systems '("s")) (host-key "k") ` + fields + `)`
	}
	tests := []struct {
		name, src string
		names     []string // machine names
		users     []string // machine users, when checked
	}{
		{"quote list", `'()`, nil, nil},
		{"define and reference", `(define u "x") (define a ` + m(`(name "a") (user u)`) + `) (list a)`, []string{"a"}, []string{"x"}},
		{"cons", `(cons ` + m(`(name "a") (user "u")`) + ` '())`, []string{"a"}, nil},
		{"append three", `(append (list ` + m(`(name "a") (user "u")`) + `) '() (list ` + m(`(name "b") (user "u")`) + `))`, []string{"a", "b"}, nil},
		{"let", `(let ((n "a") (u "v")) (list ` + m(`(name n) (user u)`) + `))`, []string{"a"}, []string{"v"}},
		{"let* sees earlier", `(let* ((n "a") (u (string-append n "-user"))) (list ` + m(`(name n) (user u)`) + `))`, []string{"a"}, []string{"a-user"}},
		{"map lambda", `(map (lambda (n) ` + m(`(name n) (user "u")`) + `) '("a" "b" "c"))`, []string{"a", "b", "c"}, nil},
		{"map two lists", `(map (lambda (n u) ` + m(`(name n) (user u)`) + `) '("a" "b") '("x" "y" "z"))`, []string{"a", "b"}, []string{"x", "y"}},
		{"quasiquote splice", "`(,@(map (lambda (n) " + m(`(name n) (user "u")`) + `) (list "a" "b")) ,` + m(`(name "c") (user "u")`) + `)`, []string{"a", "b", "c"}, nil},
		{"inherit", `(define base ` + m(`(name "a") (user "u") (port 2)`) + `) (list base (build-machine (inherit base) (name "b")))`, []string{"a", "b"}, []string{"u", "u"}},
		{"define procedure", `(define (mk n) ` + m(`(name n) (user "u")`) + `) (list (mk "a") (mk "b"))`, []string{"a", "b"}, nil},
		{"iota and number->string", `(map (lambda (i) ` + m(`(name (string-append "n" (number->string i))) (user "u")`) + `) (iota 3 1))`, []string{"n1", "n2", "n3"}, nil},
		{"getenv", `(list ` + m(`(name "a") (user (or (getenv "OFFLOAD_TEST_USER") "nobody"))`) + `)`, []string{"a"}, []string{"carol"}},
		{"if and filter", `(filter (lambda (x) (if (equal? x 1) #f #t)) (list 1 ` + m(`(name "a") (user "u")`) + `))`, []string{"a"}, nil},
		{"last expression wins", `(list ` + m(`(name "a") (user "u")`) + `) (list ` + m(`(name "b") (user "u")`) + `)`, []string{"b"}, nil},
		{"square brackets", `(let ([n "a"]) (list ` + m(`(name n) (user "u")`) + `))`, []string{"a"}, nil},
		{"datum comment", `(list #;(oops) ` + m(`(name "a") (user "u")`) + `)`, []string{"a"}, nil},
		{"named let", `(let loop ((i 0) (acc '())) (if (= i 2) acc (loop (+ i 1) (cons ` + m(`(name (number->string i)) (user "u")`) + ` acc))))`, []string{"1", "0"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, _, err := Parse("f.scm", []byte(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			var names, users []string
			for _, m := range ms {
				names = append(names, m.Name)
				users = append(users, m.User)
			}
			if !reflect.DeepEqual(names, tc.names) {
				t.Errorf("names = %q, want %q", names, tc.names)
			}
			if tc.users != nil && !reflect.DeepEqual(users, tc.users) {
				t.Errorf("users = %q, want %q", users, tc.users)
			}
		})
	}
}

func TestInheritKeepsFields(t *testing.T) {
	src := `(define base (build-machine (name "a") (user "u") (systems '("s")) (host-key "k") (port 2) (speed 3)))
(list (build-machine (inherit base) (name "b") (speed 1.5)))`
	ms, _, err := Parse("f.scm", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if m := ms[0]; m.Name != "b" || m.Port != 2 || m.Speed != 1.5 || m.User != "u" || m.HostKey != "k" {
		t.Errorf("inherited machine = %+v", m)
	}
}

// okRecord is a valid record, for broken files built around it.
const okRecord = `(build-machine (name "a") (user "u") (systems '("s")) (host-key "k"))`

// errorCases are broken files with the exact error each must give.
var errorCases = []struct{ src, want string }{
	// unbalanced parens
	{"(list\n  (build-machine (name \"a\")", `f.scm:2:28: missing close paren for list opened at 2:3`},
	{"(list " + okRecord + "))", `f.scm:1:77: unexpected ')'`},
	{"(list (build-machine (name \"a\"]))", `f.scm:1:31: ']' closes list opened with '(' at 1:22`},
	// wrong types
	{"(list (build-machine (name \"a\") (user \"u\") (systems '(\"s\"))\n  (port \"22\")))", `f.scm:2:9: wrong type for field 'port': expected an integer, got a string "22"`},
	{`(list (build-machine (name 'a) (user "u") (systems '("s"))))`, `f.scm:1:28: wrong type for field 'name': expected a string, got a symbol a`},
	{`(list (build-machine (name "a") (user "u") (systems "s")))`, `f.scm:1:53: wrong type for field 'systems': expected a list of strings, got a string "s"`},
	{`(list (build-machine (name "a") (user "u") (systems (list "s" 5))))`, `f.scm:1:63: wrong type in field 'systems': expected a list of strings, got an integer 5 in it`},
	{`(list (build-machine (name "a") (user "u") (systems '("s")) (speed "fast")))`, `f.scm:1:68: wrong type for field 'speed': expected a real number, got a string "fast"`},
	{`(list (build-machine (name "a") (user "u") (systems '("s")) (overload-threshold #t)))`, `f.scm:1:81: wrong type for field 'overload-threshold': expected a real number or #f, got a boolean #t`},
	{`(list (build-machine (name "a") (user "u") (systems '("s")) (parallel-builds 1.5)))`, `f.scm:1:78: wrong type for field 'parallel-builds': expected an integer, got a real number 1.5`},
	{`(list (build-machine (name "a") (user "u") (systems '("s")) (port 70000)))`, `f.scm:1:67: field 'port' is 70000, out of range [1, 65535]`},
	// a wrong type reached through a variable points at the use
	{"(define p \"22\")\n(list (build-machine (name \"a\") (user \"u\") (systems '(\"s\")) (port p)))", `f.scm:2:67: wrong type for field 'port': expected an integer, got a string "22"`},
	// columns count characters, with tab stops every 8
	{"(list (build-machine (name \"é\") (user \"u\") (systems '(\"s\")) (cores 4)))", `f.scm:1:62: unknown build-machine field 'cores'`},
	{"(list\n\t(build-machine (name \"a\") (user \"u\") (systems '(\"s\"))\n\t\t  (cores 4)))", `f.scm:3:20: unknown build-machine field 'cores'`},
	// unknown field, missing fields, duplicates
	{`(list (build-machine (name "a") (user "u") (systems '("s")) (cores 4)))`, `f.scm:1:62: unknown build-machine field 'cores'`},
	{`(list (build-machine (name "a") (systems '("s"))))`, `f.scm:1:7: build-machine record lacks required field 'user'`},
	{`(list (build-machine (user "u") (systems '("s"))))`, `f.scm:1:7: build-machine record lacks required field 'name'`},
	{`(list (build-machine (name "a") (user "u")))`, `f.scm:1:7: build-machine record lacks required field 'systems'`},
	{`(list (build-machine (name "a") (name "b") (user "u") (systems '("s"))))`, `f.scm:1:34: duplicate build-machine field 'name'`},
	{`(list (build-machine name))`, `f.scm:1:22: bad build-machine field: name (expected (FIELD VALUE))`},
	// an error inside a field's value (the interpreter's own errors are tested in package scheme)
	{`(list (build-machine (name (string-append "a" 1)) (user "u") (systems '("s"))))`, `f.scm:1:47: string-append: argument 2 is an integer, expected a string`},
	// the file's value
	{`"machines"`, `f.scm:1:1: the machines file must end with a list of build-machine records, not a string`},
	{"(list\n " + okRecord + "\n \"oops\")", `f.scm:3:2: element 2 of the machine list is a string "oops", not a build-machine record`},
	{"; only a comment\n", `f.scm:1:1: the machines file is empty; it must end with a list of build-machine records`},
	{`(use-modules (gnu))`, `f.scm:1:1: the machines file must end with a list of build-machine records, not an unspecified value`},
}

func TestErrors(t *testing.T) {
	for _, tc := range errorCases {
		t.Run(tc.want, func(t *testing.T) {
			ms, _, err := Parse("f.scm", []byte(tc.src))
			if err == nil {
				t.Fatalf("no error; machines %v", ms)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Errorf("error %v (%T) is not an *Error", err, err)
			}
			if ms != nil {
				t.Errorf("machines returned with an error: %v", ms)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("error\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		src  string
		want []string
	}{
		{`(list (build-machine (name "a") (user "u") (systems '("s"))))`,
			[]string{`f.scm:1:7: warning: build-machine 'a' has no host-key field`}},
		{record(`(parallel-builds 0)`), []string{`f.scm:1:104: warning: parallel-builds is 0: nothing will be offloaded to this machine`}},
		{record(`(speed 0)`), []string{`f.scm:1:94: warning: speed is 0: it should be positive`}},
		{record(`(speed -1.5)`), []string{`f.scm:1:94: warning: speed is -1.5: it should be positive`}},
		{record(`(overload-threshold 1.5)`), []string{`f.scm:1:107: warning: overload-threshold is 1.5, outside [0, 1]`}},
		{record(`(overload-threshold -0.1)`), []string{`f.scm:1:107: warning: overload-threshold is -0.1, outside [0, 1]`}},
		// the same machine once per system: fine
		{"(list (build-machine (name \"a\") (user \"u\") (host-key \"k\") (systems '(\"x\")))\n      (build-machine (name \"a\") (user \"u\") (host-key \"k\") (systems '(\"y\"))))", nil},
		// the same machine with different settings
		{"(list (build-machine (name \"a\") (user \"u\") (host-key \"k\") (systems '(\"x\")))\n      (build-machine (name \"a\") (user \"v\") (host-key \"k\") (systems '(\"y\")) (parallel-builds 2)))",
			[]string{`f.scm:2:7: warning: machine 'a:22' is also defined at 1:7 with a different user and parallel-builds`}},
		// another port is another machine
		{"(list (build-machine (name \"a\") (user \"u\") (host-key \"k\") (systems '(\"x\")))\n      (build-machine (name \"a\") (port 23) (user \"v\") (host-key \"k\") (systems '(\"y\"))))", nil},
		// a record made by map warns once per machine, not once per file
		{`(map (lambda (n) (build-machine (name n) (user "u") (systems '("s")))) '("a" "b"))`,
			[]string{`f.scm:1:18: warning: build-machine 'a' has no host-key field`, `f.scm:1:18: warning: build-machine 'b' has no host-key field`}},
	}
	for _, tc := range tests {
		_, ws, err := Parse("f.scm", []byte(tc.src))
		if err != nil {
			t.Errorf("%s: %v", tc.src, err)
			continue
		}
		if got := warnStrings(ws); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %q\nwant %q", tc.src, got, tc.want)
		}
	}
}

func TestLoadMissing(t *testing.T) {
	_, _, err := Load(filepath.Join(t.TempDir(), "machines.scm"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("error %v does not wrap fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), "machines.scm") {
		t.Errorf("error %q does not name the file", err)
	}
}

func TestMatches(t *testing.T) {
	m := &Machine{Name: "m", Port: 22, Systems: []string{"x86_64-linux", "i686-linux"}, Features: []string{"kvm", "big-mem"}}
	tests := []struct {
		system   string
		features []string
		ok       bool
		why      string
	}{
		{"x86_64-linux", nil, true, ""},
		{"i686-linux", []string{"kvm"}, true, ""},
		{"x86_64-linux", []string{"big-mem", "kvm"}, true, ""},
		{"aarch64-linux", nil, false, `system "aarch64-linux" not in (x86_64-linux i686-linux)`},
		{"x86_64-linux", []string{"kvm", "gpu"}, false, `lacks feature "gpu"`},
	}
	for _, tc := range tests {
		ok, why := m.Matches(tc.system, tc.features)
		if ok != tc.ok || why != tc.why {
			t.Errorf("Matches(%q, %q) = %v, %q; want %v, %q", tc.system, tc.features, ok, why, tc.ok, tc.why)
		}
	}
	if got := m.ID(); got != "m:22" {
		t.Errorf("ID() = %q", got)
	}
}

func TestParseRequestFeatures(t *testing.T) {
	tests := map[string][]string{
		"":            nil,
		"kvm":         {"kvm"},
		"kvm,big-mem": {"kvm", "big-mem"},
		"kvm,,x ":     {"kvm", "x"},
	}
	for in, want := range tests {
		if got := ParseRequestFeatures(in); !reflect.DeepEqual(got, want) {
			t.Errorf("ParseRequestFeatures(%q) = %q, want %q", in, got, want)
		}
	}
}
