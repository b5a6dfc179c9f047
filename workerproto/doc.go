// Package workerproto is a client of guix-daemon's worker protocol (0x163), for the
// operations a build hook needs: validity and path-info queries, adding a .drv as text,
// temp roots, builds, and moving store items out of and into the daemon (ExportPath,
// ExportItems, ImportPaths).
//
// It owns the protocol's framing (frame.go: 8-byte little-endian ints, padded strings,
// lists, with every length bounded), the handshake, the STDERR loop that precedes every
// reply (logs, data, errors) and the framing of each request by the daemon's version.
// One Conn is one daemon worker process: the temp roots it adds, its settings and the
// daemon's signing agent live exactly as long as the Conn.
//
// It does not start ssh or set up socket forwarding, choose machines, or read or write
// nars and export bundles (storeio does; ExportItems and ImportPaths only move their
// bytes).
package workerproto
