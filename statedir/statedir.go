// Package statedir owns the layout of the hook's state directory,
// $GUIX_STATE_DIRECTORY/offload: every path under it, with one escaping rule for the
// names of machines in them (Escape). What lives there:
//
//	NAME:PORT/0 .. N-1          build slots (the names Guix's own hook uses)
//	NAME:PORT.queue/0 .. N-1    places of builds waiting for a slot
//	NAME:PORT.upload.lock       transfer locks, one each way
//	NAME:PORT.download.lock
//	NAME:PORT-HASH.state        backoff and probe cache (HASH: the connection settings)
//	NAME:PORT.drained           present while `offload drain` keeps new builds away
//	placement/NAME:PORT.learned what placement learned of the machine (transfers,
//	                            build times per derivation name)
//	placement/NAME:PORT.holdings
//	                            which inputs it holds, cached for a few seconds
//	known_hosts.d/ALIAS         the pinned host key of each machine
//	ssh/                        ssh control sockets (under /tmp when the path would be
//	                            too long for a socket)
//
// It only names paths: package locking takes the locks, machines.State reads and writes
// the state files, package placement its learned data, caches and drain marks, sshexec
// writes the pins and runs the sockets.
package statedir

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
)

// Layout is a state directory.
type Layout struct{ Dir string }

// Escape makes a machine's name, ID or key one file name that cannot point outside the
// directory: URL path escaping, which leaves host names, addresses, ':' and '-' as they
// are (so the slot directories keep Guix's names) and escapes '/', '%' and the like.
func Escape(name string) string {
	e := url.PathEscape(name)
	if e == "." || e == ".." || e == "" {
		e = "%2E" + e // "." and ".." are names that point elsewhere
	}
	return e
}

// Slots is the directory of machine id's build slots.
func (l Layout) Slots(id string) string { return filepath.Join(l.Dir, Escape(id)) }

// Queue is the directory of machine id's queue places.
func (l Layout) Queue(id string) string { return filepath.Join(l.Dir, Escape(id)+".queue") }

// TransferLock is machine id's lock of the given kind ("upload", "download").
func (l Layout) TransferLock(id, kind string) string {
	return filepath.Join(l.Dir, Escape(id)+"."+kind+".lock")
}

// MachineState is the backoff and probe-cache file of the machine whose state key is key
// (machines.Machine.StateKey).
func (l Layout) MachineState(key string) string {
	return filepath.Join(l.Dir, Escape(key)+".state")
}

// Drained is the file whose presence keeps new builds off machine id (`offload drain`).
func (l Layout) Drained(id string) string { return filepath.Join(l.Dir, Escape(id)+".drained") }

// Learned is the file of what placement learned of machine id.
func (l Layout) Learned(id string) string {
	return filepath.Join(l.Dir, "placement", Escape(id)+".learned")
}

// Holdings is placement's short-lived cache of which inputs machine id holds.
func (l Layout) Holdings(id string) string {
	return filepath.Join(l.Dir, "placement", Escape(id)+".holdings")
}

// KnownHosts is the known-hosts file that pins the host key of the machine ssh knows
// by alias.
func (l Layout) KnownHosts(alias string) string {
	return filepath.Join(l.Dir, "known_hosts.d", Escape(alias))
}

// maxControlDir is the longest control socket directory that keeps ssh's ControlPath
// within the 108-byte sun_path: the directory, "/", a socket's name (24 hex digits),
// and the ".XXXXXXXXXXXXXXXX" suffix ssh adds while it creates the socket, with a margin.
const maxControlDir = 60

// ControlDir is the directory of the ssh control sockets: Dir/ssh, or, when that is too
// long for a socket path, a short directory under /tmp named after the user and Dir.
func (l Layout) ControlDir() string {
	dir := filepath.Join(l.Dir, "ssh")
	if len(dir) > maxControlDir {
		sum := sha256.Sum256([]byte(l.Dir))
		dir = fmt.Sprintf("/tmp/offload-ssh-%d-%s", os.Geteuid(), hex.EncodeToString(sum[:6]))
	}
	return dir
}

// WriteAtomic replaces file with data by a rename from a temporary file beside it, so
// that a reader (another hook) never sees half of it. Every state file is written so.
func WriteAtomic(file string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}
