package sshexec

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const testHostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKdHG4fMzN+vwhFx6HQc2/l+UoXi9fdLjjbrddwdq7vx root@(none)"

// optValue returns the value of the first "-o NAME=value" in argv before "--".
func optValue(argv []string, name string) (string, bool) {
	for i := 0; i+1 < len(argv) && argv[i] != "--"; i++ {
		if argv[i] == "-o" && strings.HasPrefix(argv[i+1], name+"=") {
			return strings.TrimPrefix(argv[i+1], name+"="), true
		}
	}
	return "", false
}

// flagValue returns the word after the first flag (like -p) before "--".
func flagValue(argv []string, flag string) (string, bool) {
	for i := 0; i+1 < len(argv) && argv[i] != "--"; i++ {
		if argv[i] == flag {
			return argv[i+1], true
		}
	}
	return "", false
}

func TestSSHArgv(t *testing.T) {
	state := "/var/guix/offload"
	base := Target{Name: "build1.example.org", Port: 2222, User: "bob", PrivateKey: "/root/.ssh/id_guix", HostKey: testHostKey}
	tests := []struct {
		name   string
		r      Runner
		t      func(Target) Target
		remote []string
		check  func(t *testing.T, argv []string)
	}{
		{
			name: "identity user port and fixed options",
			check: func(t *testing.T, argv []string) {
				want := []string{"ssh", "-i", "/root/.ssh/id_guix", "-l", "bob", "-p", "2222",
					"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5", "-o", "Compression=no",
					"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=/var/guix/offload/known_hosts.d/build1.example.org_2222",
					"-o", "GlobalKnownHostsFile=/dev/null", "-o", "HostKeyAlias=build1.example.org_2222", "-o", "UpdateHostKeys=no",
					"-o", "ControlMaster=auto", "-o", "ControlPersist=60s", "-o", "ControlPath=SOCKET",
					"--", "build1.example.org", "guix build /gnu/store/x.drv"}
				sock, _ := optValue(argv, "ControlPath")
				if !regexp.MustCompile(`^/var/guix/offload/ssh/[0-9a-f]{24}$`).MatchString(sock) {
					t.Errorf("ControlPath=%s", sock)
				}
				want[indexOf(want, "ControlPath=SOCKET")] = "ControlPath=" + sock
				if !equal(argv, want) {
					t.Errorf("argv =\n%q\nwant\n%q", argv, want)
				}
			},
		},
		{
			name: "ssh program, timeout and persistence from the runner",
			r:    Runner{SSH: "/usr/bin/ssh", ConnectTimeout: 1500 * time.Millisecond, ControlPersist: 10 * time.Minute},
			check: func(t *testing.T, argv []string) {
				if argv[0] != "/usr/bin/ssh" {
					t.Errorf("program %q", argv[0])
				}
				if v, _ := optValue(argv, "ConnectTimeout"); v != "2" {
					t.Errorf("ConnectTimeout=%s, want 2 (rounded up)", v)
				}
				if v, _ := optValue(argv, "ControlPersist"); v != "600s" {
					t.Errorf("ControlPersist=%s", v)
				}
			},
		},
		{
			name: "negative persistence disables sharing",
			r:    Runner{ControlPersist: -1},
			check: func(t *testing.T, argv []string) {
				if v, _ := optValue(argv, "ControlMaster"); v != "no" {
					t.Errorf("ControlMaster=%s", v)
				}
				if v, _ := optValue(argv, "ControlPath"); v != "none" {
					t.Errorf("ControlPath=%s", v)
				}
				if _, ok := optValue(argv, "ControlPersist"); ok {
					t.Error("ControlPersist set")
				}
			},
		},
		{
			name: "default port, no user, no key",
			t:    func(m Target) Target { m.Port, m.User, m.PrivateKey = 0, "", ""; return m },
			check: func(t *testing.T, argv []string) {
				if v, _ := flagValue(argv, "-p"); v != "22" {
					t.Errorf("-p %s", v)
				}
				for _, f := range []string{"-i", "-l"} {
					if _, ok := flagValue(argv, f); ok {
						t.Errorf("%s given", f)
					}
				}
				if v, _ := optValue(argv, "HostKeyAlias"); v != "build1.example.org_22" {
					t.Errorf("HostKeyAlias=%s", v)
				}
			},
		},
		{
			name: "compression",
			t:    func(m Target) Target { m.Compression = "zlib@openssh.com,zlib"; m.CompressionLevel = 9; return m },
			check: func(t *testing.T, argv []string) {
				if v, _ := optValue(argv, "Compression"); v != "yes" {
					t.Errorf("Compression=%s", v)
				}
			},
		},
		{
			name: "compression no",
			t:    func(m Target) Target { m.Compression = "no"; return m },
			check: func(t *testing.T, argv []string) {
				if v, _ := optValue(argv, "Compression"); v != "no" {
					t.Errorf("Compression=%s", v)
				}
			},
		},
		{
			name: "ssh-options list taken word for word",
			t: func(m Target) Target {
				m.SSHOptions = []string{"-o", "ProxyJump=gw example", "-4"}
				return m
			},
			check: func(t *testing.T, argv []string) {
				i := indexOf(argv, "--")
				if got := argv[i-3 : i]; !equal(got, []string{"-o", "ProxyJump=gw example", "-4"}) {
					t.Errorf("options before -- = %q", got)
				}
			},
		},
		{
			name: "one ssh-options string split like a shell",
			t: func(m Target) Target {
				m.SSHOptions = []string{`-o "ProxyJump=gw example" -4 -o 'SetEnv=A=b c'`}
				return m
			},
			check: func(t *testing.T, argv []string) {
				i := indexOf(argv, "--")
				if got := argv[i-5 : i]; !equal(got, []string{"-o", "ProxyJump=gw example", "-4", "-o", "SetEnv=A=b c"}) {
					t.Errorf("options before -- = %q", got)
				}
			},
		},
		{
			name: "user ssh-options come after the pinning options",
			t:    func(m Target) Target { m.SSHOptions = []string{"-o StrictHostKeyChecking=no"}; return m },
			check: func(t *testing.T, argv []string) {
				// OpenSSH keeps the first value: ours.
				if v, _ := optValue(argv, "StrictHostKeyChecking"); v != "yes" {
					t.Errorf("first StrictHostKeyChecking=%s", v)
				}
			},
		},
		{
			name: "no host key with the user's known_hosts",
			r:    Runner{UseKnownHosts: true},
			t:    func(m Target) Target { m.HostKey = ""; return m },
			check: func(t *testing.T, argv []string) {
				if v, _ := optValue(argv, "StrictHostKeyChecking"); v != "yes" {
					t.Errorf("StrictHostKeyChecking=%s", v)
				}
				for _, o := range []string{"UserKnownHostsFile", "HostKeyAlias", "GlobalKnownHostsFile"} {
					if _, ok := optValue(argv, o); ok {
						t.Errorf("%s given", o)
					}
				}
			},
		},
		{
			name:   "daemon socket",
			t:      func(m Target) Target { m.DaemonSocket = "/run/guix daemon/socket"; return m },
			remote: []string{"guix", "build", "--version"},
			check: func(t *testing.T, argv []string) {
				if got, want := argv[len(argv)-1], `env 'GUIX_DAEMON_SOCKET=/run/guix daemon/socket' guix build --version`; got != want {
					t.Errorf("remote command %q, want %q", got, want)
				}
			},
		},
		{
			name:   "default daemon socket adds nothing",
			t:      func(m Target) Target { m.DaemonSocket = DefaultDaemonSocket; return m },
			remote: []string{"guix", "build", "--version"},
			check: func(t *testing.T, argv []string) {
				if got := argv[len(argv)-1]; got != "guix build --version" {
					t.Errorf("remote command %q", got)
				}
			},
		},
		{
			name: "odd host name gets a hashed alias",
			t:    func(m Target) Target { m.Name = "fe80::1%eth0"; return m },
			check: func(t *testing.T, argv []string) {
				v, _ := optValue(argv, "HostKeyAlias")
				if !strings.HasPrefix(v, "h") || strings.ContainsAny(v, ":%") || !strings.HasSuffix(v, "_2222") {
					t.Errorf("HostKeyAlias=%s", v)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.r
			r.StateDir = state
			m := base
			if tc.t != nil {
				m = tc.t(m)
			}
			remote := tc.remote
			if remote == nil {
				remote = []string{"guix", "build", "/gnu/store/x.drv"}
			}
			argv, err := r.SSHArgv(m, remote)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, argv)
		})
	}
}

func TestSSHArgvErrors(t *testing.T) {
	r := Runner{StateDir: "/var/guix/offload"}
	base := Target{Name: "b", User: "u", HostKey: testHostKey}
	tests := []struct {
		name string
		t    func(Target) Target
		want string
	}{
		{"no host key", func(m Target) Target { m.HostKey = ""; return m }, "ssh-keyscan -p 22 b"},
		{"malformed host key", func(m Target) Target { m.HostKey = "ssh-ed25519"; return m }, "not a public key line"},
		{"bad base64", func(m Target) Target { m.HostKey = "ssh-ed25519 !!!"; return m }, "invalid base64"},
		{"type differs from key data", func(m Target) Target { m.HostKey = strings.Replace(testHostKey, "ssh-ed25519", "ssh-rsa", 1); return m }, "does not hold a key of type ssh-rsa"},
		{"unbalanced ssh-options", func(m Target) Target { m.SSHOptions = []string{`-o "ProxyJump=x`}; return m }, "ssh-options"},
		{"name like an option", func(m Target) Target { m.Name = "-oProxyCommand=x"; return m }, "invalid machine name"},
		{"empty name", func(m Target) Target { m.Name = ""; return m }, "invalid machine name"},
		{"bad port", func(m Target) Target { m.Port = 70000; return m }, "invalid port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.SSHArgv(tc.t(base), []string{"true"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	var nh *NoHostKeyError
	if _, err := r.SSHArgv(Target{Name: "b", Port: 2200}, []string{"true"}); !errors.As(err, &nh) || nh.Port != 2200 {
		t.Errorf("no host key: %v, want *NoHostKeyError for port 2200", err)
	}
	if _, err := r.SSHArgv(base, nil); err == nil {
		t.Error("empty remote command accepted")
	}
	if _, err := (&Runner{StateDir: "/var/my state"}).SSHArgv(base, []string{"true"}); err == nil {
		t.Error("state directory with a blank accepted; ssh would split the path")
	}
}

func TestControlDirFitsSocketPath(t *testing.T) {
	for _, state := range []string{"/var/guix/offload", "/tmp/" + strings.Repeat("x", 200)} {
		r := Runner{StateDir: state}
		dir, err := r.ControlDir()
		if err != nil {
			t.Fatal(err)
		}
		// ssh binds DIR/%C.XXXXXXXXXXXXXXXX (40 hex digits, then a random suffix of 17)
		// and sun_path holds 108 bytes with the NUL.
		if n := len(dir) + 1 + 40 + 17; n >= 108 {
			t.Errorf("StateDir %.30s...: control socket path would be %d bytes", state, n)
		}
	}
	short := Runner{StateDir: "/var/guix/offload"}
	if dir, _ := short.ControlDir(); dir != "/var/guix/offload/ssh" {
		t.Errorf("ControlDir = %s, want it under the state directory", dir)
	}
	a, _ := (&Runner{StateDir: "/tmp/" + strings.Repeat("a", 100)}).ControlDir()
	b, _ := (&Runner{StateDir: "/tmp/" + strings.Repeat("b", 100)}).ControlDir()
	if a == b {
		t.Errorf("two long state directories share the control directory %s", a)
	}
}

func TestPrepareWritesPrivateKnownHosts(t *testing.T) {
	r := Runner{StateDir: filepath.Join(t.TempDir(), "offload"), ControlPersist: -1}
	m := Target{Name: "build1", HostKey: testHostKey}
	if err := r.prepare(m); err != nil {
		t.Fatal(err)
	}
	file, _ := r.KnownHostsFile(m)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(testHostKey)
	if got, want := string(b), "build1_22 "+fields[0]+" "+fields[1]+"\n"; got != want {
		t.Errorf("known hosts = %q, want %q", got, want)
	}
	st, _ := os.Stat(file)
	dst, _ := os.Stat(filepath.Dir(file))
	if st.Mode().Perm() != 0o600 || dst.Mode().Perm() != 0o700 {
		t.Errorf("modes: file %v dir %v, want 0600 and 0700", st.Mode(), dst.Mode())
	}
	// A changed host-key replaces the pin.
	other := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5lAIX2TQKAcCmM7l7V3oWdpp2TLr7k6QhbvPY9JsWm"
	m.HostKey = other
	if err := r.prepare(m); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(file); !strings.Contains(string(b), strings.Fields(other)[1]) {
		t.Errorf("pin not replaced: %q", b)
	}
}

func TestControlSocketPerConnection(t *testing.T) {
	r := Runner{StateDir: "/var/guix/offload"}
	m := Target{Name: "b", User: "u", HostKey: testHostKey}
	sock := func(m Target) string {
		argv, err := r.SSHArgv(m, []string{"true"})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := optValue(argv, "ControlPath")
		return v
	}
	same := sock(m)
	if sock(m) != same {
		t.Error("control socket differs between calls")
	}
	for name, other := range map[string]Target{
		"port": {Name: "b", Port: 2222, User: "u", HostKey: testHostKey},
		"user": {Name: "b", User: "v", HostKey: testHostKey},
		"key":  {Name: "b", User: "u", HostKey: testHostKey, PrivateKey: "/k"},
		"opts": {Name: "b", User: "u", HostKey: testHostKey, SSHOptions: []string{"-4"}},
	} {
		if sock(other) == same {
			t.Errorf("a different %s shares the control socket", name)
		}
	}
}

func indexOf(s []string, w string) int {
	for i, x := range s {
		if x == w {
			return i
		}
	}
	return -1
}
