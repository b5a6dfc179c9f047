// Package diagnose owns the commands that look at the build farm without building:
// `offload test` (Checker: each machine checked the way the hook uses it, with a fix
// per failure), `offload status` (GatherStatus: each machine's state, load, disk,
// clock and slots, in one ssh round trip per machine) and `offload explain` (Explain:
// what the hook would answer now, and why).
//
// It is built on package hook's exported API (DecideDryRun, AskMachine, AskMissing,
// GuixLoadOptions), so that what it reports is what the hook does. It does not decide
// anything itself, take build slots, or write state other than ending the backoff of
// a machine that just answered.
package diagnose
