// Command workerd stands in for guix-daemon in tests: it listens on a Unix socket and
// serves the subset of worker protocol 0x163 that a build hook uses
// (../shared/spec/WORKER-PROTOCOL.md; what it implements is listed in ops.go), byte
// for byte, over the fake store of offload/integration/drv. Each connection gets its
// own worker goroutine, whose settings, temporary roots and signing agent live exactly
// as long as the connection. Builds run with integration/builder, the engine behind
// fakeguix's `guix build`.
//
//	workerd [-listen SOCKET]
//
// The socket defaults to $GUIX_DAEMON_SOCKET, else
// $GUIX_STATE_DIRECTORY/daemon-socket/socket. A stale socket file is replaced. SIGTERM
// or SIGINT closes every connection (interrupting their builds), removes the socket and
// exits 0.
//
// Environment: NIX_STORE_DIR, FAKEGUIX_STORE, FAKEGUIX_DB (the store, as fakeguix reads
// it); GUIX_CONFIGURATION_DIRECTORY (signing-key.sec and acl; default /etc/guix);
// GUIX_STATE_DIRECTORY (temproots/; default /var/guix); WORKERD_COSTS=guix (sleep what
// the real daemon costs: costs.go); WORKERD_HOSTILE_FILE (a file whose first word
// makes the daemon misbehave: hostile.go); WORKERD_ROOT_UNTRUSTED=1 (treat a root
// peer as untrusted, as a real remote daemon treats the non-root account an offload
// logs in as: the test farm's machines log in as the user running the tests);
// FAKEGUIX_SUBSTITUTES (the substitute server BuildPaths fetches plain items from when
// the client asks for substitutes: substitute.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"offload/integration/drv"
	"offload/integration/subst"
)

func main() {
	listen := flag.String("listen", "", "socket to listen on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d := newDaemon(os.Getenv)
	if c := d.costs; c != (costs{}) {
		// Said once, so that whoever started it can see the setting arrived.
		fmt.Fprintf(os.Stderr, "workerd: modelling Guix's costs: handshake %s, signing agent %s\n", c.handshake, c.agent)
	}
	path := *listen
	if path == "" {
		path = d.defaultSocket()
	}
	if err := d.serve(ctx, path); err != nil {
		fmt.Fprintf(os.Stderr, "workerd: %v\n", err)
		os.Exit(1)
	}
}

// daemon is what every connection shares.
type daemon struct {
	store         drv.Store
	conf          string // GUIX_CONFIGURATION_DIRECTORY
	state         string // GUIX_STATE_DIRECTORY
	socket        string // GUIX_DAEMON_SOCKET
	costs         costs
	hostileFile   string
	rootUntrusted bool
	substitutes   subst.Server // FAKEGUIX_SUBSTITUTES
	substMu       sync.Mutex   // held while an item is fetched (substitute.go)

	nextID atomic.Int64
	wg     sync.WaitGroup
}

func newDaemon(getenv func(string) string) *daemon {
	d := &daemon{store: drv.StoreFromEnv(getenv), conf: getenv("GUIX_CONFIGURATION_DIRECTORY"),
		state: getenv("GUIX_STATE_DIRECTORY"), socket: getenv("GUIX_DAEMON_SOCKET"),
		costs: costsFor(getenv("WORKERD_COSTS")), hostileFile: getenv("WORKERD_HOSTILE_FILE"),
		rootUntrusted: getenv("WORKERD_ROOT_UNTRUSTED") == "1", substitutes: subst.Server(getenv("FAKEGUIX_SUBSTITUTES"))}
	if d.conf == "" {
		d.conf = "/etc/guix"
	}
	if d.state == "" {
		d.state = "/var/guix"
	}
	return d
}

func (d *daemon) defaultSocket() string {
	if d.socket != "" {
		return d.socket
	}
	return filepath.Join(d.state, "daemon-socket", "socket")
}

// serve accepts connections on path until ctx ends, then closes them all and waits for
// their workers (and the builders they run) to end.
func (d *daemon) serve(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	// As the real daemon does at start: a socket file left by a dead daemon is replaced.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	// Anyone may connect, as on a real installation (mode 0666).
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return err
	}
	var mu sync.Mutex
	conns := map[*net.UnixConn]bool{}
	go func() {
		<-ctx.Done()
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return err
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			break
		}
		conns[c] = true
		mu.Unlock()
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			newWorker(d, c, d.nextID.Add(1)).serve(ctx)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
	d.wg.Wait()
	return nil
}
