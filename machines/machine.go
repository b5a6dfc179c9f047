package machines

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"offload/machines/scheme"
	"offload/sshexec"
)

// Machine is one build-machine record of the machines file, with Guix's
// defaults filled in.
type Machine struct {
	Name              string
	Port              int      // default 22
	Systems           []string // from `systems`, or `system` (deprecated)
	User              string
	PrivateKey        string   // default $HOME/.ssh/id_rsa of the user running the hook
	HostKey           string   // "" when absent
	ParallelBuilds    int      // default 1
	Speed             float64  // default 1.0
	Features          []string // default empty
	OverloadThreshold *float64 // default 0.8; nil means #f (ignore load)
	Compression       string   // default "zlib@openssh.com,zlib"
	CompressionLevel  int      // default 3
	DaemonSocket      string   // default "/var/guix/daemon-socket/socket"
	// SSHOptions holds extra ssh client options. The file may give a list of
	// strings or one string; one string is kept as a one-element list and
	// split into words by package sshexec.
	SSHOptions      []string
	Pos             Pos  // where its (build-machine ...) starts
	UsedSystemField bool // the deprecated `system` field was used
}

// Defaults of the build-machine fields, as in Guix.
const (
	DefaultPort             = 22
	DefaultParallelBuilds   = 1
	DefaultSpeed            = 1.0
	DefaultOverloadThresh   = 0.8
	DefaultCompression      = "zlib@openssh.com,zlib"
	DefaultCompressionLevel = 3
	DefaultDaemonSocket     = "/var/guix/daemon-socket/socket"
)

// Pos is a place in a machines file: FILE:LINE:COL, as offload's Scheme interpreter
// counts it.
type Pos = scheme.Pos

// ID returns "NAME:PORT", the name used for the machine's lock, slot and
// state files. Two records with the same ID are the same machine.
func (m *Machine) ID() string {
	return m.Name + ":" + strconv.Itoa(m.Port)
}

// StateKey names the machine's backoff and probe-cache state: its ID and a hash of
// what makes a connection to it (name, port, user, private key, host key), so that an
// edited machines file starts from a clean slate on the next request instead of
// inheriting the backoff that the old settings earned.
func (m *Machine) StateKey() string {
	h := sha256.New()
	hostKey := strings.Fields(m.HostKey)
	if len(hostKey) > 2 {
		hostKey = hostKey[:2] // the comment does not change the key
	}
	for _, s := range append([]string{m.Name, strconv.Itoa(m.Port), m.User, m.PrivateKey}, hostKey...) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return m.ID() + "-" + hex.EncodeToString(h.Sum(nil))[:12]
}

// Target is how sshexec reaches the machine, from its fields as the file gave them.
func (m *Machine) Target() sshexec.Target {
	return sshexec.Target{
		Name:             m.Name,
		Port:             m.Port,
		User:             m.User,
		PrivateKey:       m.PrivateKey,
		HostKey:          m.HostKey,
		Compression:      m.Compression,
		CompressionLevel: m.CompressionLevel,
		SSHOptions:       m.SSHOptions,
		DaemonSocket:     m.DaemonSocket,
	}
}

// Display returns the name used in messages: always NAME:PORT, the one form in which
// every message names a machine (several entries may share a name).
func (m *Machine) Display() string {
	return m.ID()
}

// Matches reports whether m can build a derivation for system that requires
// features. When it cannot, why says which requirement failed, e.g.
// `system "aarch64-linux" not in (x86_64-linux i686-linux)` or
// `lacks feature "kvm"`.
func (m *Machine) Matches(system string, features []string) (ok bool, why string) {
	if !slices.Contains(m.Systems, system) {
		return false, fmt.Sprintf("system %q not in (%s)", system, strings.Join(m.Systems, " "))
	}
	for _, f := range features {
		if !slices.Contains(m.Features, f) {
			return false, fmt.Sprintf("lacks feature %q", f)
		}
	}
	return true, ""
}

// Warning is something suspicious in the machines file that does not stop
// it from being used.
type Warning struct {
	Pos Pos
	Msg string
}

// String returns "FILE:LINE:COL: warning: MSG".
func (w Warning) String() string {
	return w.Pos.String() + ": warning: " + w.Msg
}

// Error is a machines file that cannot be used, with the place of the fault. When
// its Unsupported is set, the fault is only offload's evaluator's (the file uses valid
// Guile that the evaluator does not implement, such as primitive-load): LoadWith then
// has guix evaluate the file.
type Error = scheme.Error

// Load reads and parses the machines file at path. A missing file gives an
// error wrapping fs.ErrNotExist, which callers treat as "no machines"; a
// file that cannot be used gives an *Error.
func Load(path string) ([]*Machine, []Warning, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read machines file: %w", err)
	}
	return Parse(path, src)
}

// ParseRequestFeatures splits the FEATURES field of a daemon request,
// "kvm,big-mem", into its features; "" gives nil.
func ParseRequestFeatures(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// defaultPrivateKey returns ~/.ssh/id_rsa of the user running us, as Guix
// does; the daemon may start the hook without HOME, so fall back to the
// user database, and to /root for root.
func defaultPrivateKey() string {
	home := os.Getenv("HOME")
	if home == "" {
		if u, err := user.Current(); err == nil && u.HomeDir != "" {
			home = u.HomeDir
		} else if os.Getuid() == 0 {
			home = "/root"
		}
	}
	if home == "" {
		return ""
	}
	return filepath.Join(home, ".ssh", "id_rsa")
}

// Unique returns ms without the later entries of a machine already listed (same
// name and port: a machine may be listed once per system).
func Unique(ms []*Machine) []*Machine {
	var out []*Machine
	seen := map[string]bool{}
	for _, m := range ms {
		if !seen[m.ID()] {
			seen[m.ID()] = true
			out = append(out, m)
		}
	}
	return out
}
