// Package placement owns where a build is cheapest: on one of the build machines or
// here, by the daemon itself. It estimates, per candidate, the seconds to send the
// inputs the machine lacks (at that link's learned throughput), to build (the learned
// time of that derivation name, scaled by speed and load), to wait for a slot, and the
// fixed cost of an offload; for the local machine, the build alone (docs/hook.md,
// "Choosing a machine").
//
// It keeps what it learns in the hook's state directory (statedir's layout): a bounded
// history per machine (History, Store), the drain marks of `offload drain` (Drain), and
// a cache of a few seconds of which inputs a machine holds (Cache). It runs no ssh and
// no process: what a machine holds comes through a Holdings function and the sizes of
// the inputs through a Sizer, which the caller supplies (package hook).
package placement
