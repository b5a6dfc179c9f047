package main

import "time"

// costs are the delays that make the stand-in cost what the real daemon costs
// (WORKER-PROTOCOL.md §7, measured on a real guix-daemon 0x163): WORKERD_COSTS=guix
// turns them on; tests run without them. The queries themselves (well under a
// millisecond on the real daemon) are not slowed.
type costs struct {
	// handshake: forking the worker and opening the store, once per connection.
	handshake time.Duration
	// agent: starting the `guix authenticate` agent (a Guile process), once per
	// connection, on its first signed export or signature check.
	agent time.Duration
}

func costsFor(name string) costs {
	if name == "guix" {
		return costs{handshake: 9 * time.Millisecond, agent: 200 * time.Millisecond}
	}
	return costs{}
}

func (costs) sleep(d time.Duration) {
	if d > 0 {
		time.Sleep(d)
	}
}
