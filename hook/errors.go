package hook

import "errors"

// Exit codes the daemon understands (docs/hook.md, "The daemon's side").
const (
	ExitOK          = 0
	ExitTransient   = 1
	ExitBuildFailed = 100
	ExitTimedOut    = 101
)

// ErrBuildFailed and ErrTimedOut mark errors that are the build's own outcome, as
// opposed to a failure of the hook (network, remote down, bad archive).
var (
	ErrBuildFailed = errors.New("build failed")
	ErrTimedOut    = errors.New("build timed out")
)

// ExitCode maps an error returned by Run to the exit status the daemon expects.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrTimedOut):
		return ExitTimedOut
	case errors.Is(err, ErrBuildFailed):
		return ExitBuildFailed
	default:
		return ExitTransient
	}
}

// beforeBuildError is a failure that happened before the build started on the
// machine: nothing ran there, so the build may go to another machine.
type beforeBuildError struct{ Err error }

func (e *beforeBuildError) Error() string { return e.Err.Error() }

func (e *beforeBuildError) Unwrap() error { return e.Err }

// localError is a failure on our side (the local guix could not export): no machine
// is to blame, and no other machine would do better.
type localError struct{ Err error }

func (e *localError) Error() string { return e.Err.Error() }

func (e *localError) Unwrap() error { return e.Err }

// machineError is a failure of the machine or of the way to it after the build may have
// started (the connection was lost, its daemon died or failed outside the build): not
// the build's own outcome, so the build may be done again elsewhere.
type machineError struct{ Err error }

func (e *machineError) Error() string { return e.Err.Error() }
func (e *machineError) Unwrap() error { return e.Err }
