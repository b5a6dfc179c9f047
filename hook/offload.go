package hook

import (
	"context"
	"time"

	"offload/machines"
	"offload/sshexec"
)

// offload performs an accepted build on machine m, on the daemon path when the machine
// allows it, else on the shell path (daemonpath.go). A failure before the build starts
// is a *beforeBuildError (another machine may take the build).
//
// On the shell path, one ssh session does it all (sessionScript is
// its remote side; nothing is fetched after a failed build, and the build's time limits
// hold on both sides: docs/hook.md): it asks which inputs the machine lacks,
// sends them under the machine's upload lock, builds with the daemon's limits with the
// log on fd 4, and restores the outputs under the download lock. A failure before the
// build starts is a *beforeBuildError (another machine may take the build).
func (h *Hook) offload(ctx context.Context, m *machines.Machine, t sshexec.Target, req Request, inputs, outputs []string) error {
	conn, err := h.openDaemon(ctx, m, t)
	if err != nil {
		return &beforeBuildError{Err: err}
	}
	if conn != nil {
		return h.offloadDaemon(ctx, m, t, conn, req, inputs, outputs)
	}
	return h.offloadShell(ctx, m, t, req, inputs, outputs)
}

// offloadShell performs an accepted build on m through one remote shell script.
func (h *Hook) offloadShell(ctx context.Context, m *machines.Machine, t sshexec.Target, req Request, inputs, outputs []string) error {
	h.dropSpare() // the session takes the machine's slot itself
	mode, err := ParseCompressionMode(h.Conf.Compression)
	if err != nil {
		h.note("%v; using %s", err, mode)
	}
	// Asking and sending under one lock, as before the session: a hook that waited
	// for another's upload then finds the inputs they share already there.
	upload, err := h.machineLock(ctx, m, "upload", "sending inputs of "+req.Drv)
	if err != nil {
		return &beforeBuildError{Err: err}
	}
	defer upload.Release()
	began := time.Now()
	s, err := h.startSession(ctx, m, t, req, outputs)
	if err != nil {
		return &beforeBuildError{Err: err}
	}
	defer s.abort()
	if err := s.upload(mode, inputs); err != nil {
		return &beforeBuildError{Err: err}
	}
	upload.Release()
	if err := s.build(); err != nil {
		return err
	}
	if len(outputs) == 0 {
		s.wait() // the build succeeded; nothing to fetch, whatever the end of the session
		h.learn(m, req, s.learned, time.Since(began))
		return nil
	}
	if err := s.download(ctx); err != nil {
		return err
	}
	h.learn(m, req, s.learned, time.Since(began))
	h.say("done with offloaded '%s'", req.Drv)
	return nil
}
