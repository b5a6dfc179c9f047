package main

import (
	"os"
	"strings"
)

// Hostile modes, for tests of a client: the first word of the file named by
// WORKERD_HOSTILE_FILE, read at each connection and each request (so a test can turn
// a running daemon hostile). Each breaks one thing:
//
//	no-magic          close each new connection at once, before the handshake (what
//	                  a client sees when sshd refuses the forward or the daemon is gone)
//	hang              accept, then never answer anything
//	garbage           answer each request with a code that is no STDERR code, then close
//	close-mid-export  ExportPath sends about half the item, then the connection closes
//	bad-export-hash   ExportPath sends the item with one content byte changed, then the
//	                  real daemon's "hash of path `P' has changed" error (§4.5)
//	close-mid-import  ImportPaths closes the connection after the first chunk it pulls
//	unsigned          ExportPath sends its items unsigned, even when asked to sign
//	hold-export GATE  ExportPath of an item that is not a .drv (a build's output, not
//	                  the .drv the hook exports early to start the signing helper)
//	                  creates GATE.waiting, then waits until the file GATE exists
func (d *daemon) hostile() (mode string, args []string) {
	if d.hostileFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(d.hostileFile)
	if err != nil {
		return "", nil
	}
	words := strings.Fields(string(b))
	if len(words) == 0 {
		return "", nil
	}
	return words[0], words[1:]
}
