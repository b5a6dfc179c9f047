package hook

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"offload/locking"
	"offload/machines"
	"offload/sshexec"
	"offload/storeio"
)

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

// rootsDir is where the remote GC roots of builds in flight live, relative to the
// remote user's home directory (where ssh starts remote commands).
const rootsDir = ".cache/guix/offload"

// sessionScript is all an offload does on the machine after the accept, in one ssh
// session and one remote shell, run as
//
//	sh -c SCRIPT sh ROOTS ROOT DRV TOKEN MAX-SILENT TIMEOUT SLOTS HOLDER [OUTPUT...]
//
// (MAX-SILENT and TIMEOUT are "" for no limit; SLOTS is the machine's parallel-builds
// and HOLDER "HOST PID", see remoteSlotScript); one line, so that --verbose traces
// show all of it. Framing, one line each unless said:
//
//	stdin  (hook → machine)  the wanted paths (the .drv and its inputs), space-separated
//	stdout (machine → hook)  "offload-has zstd", "offload-has gzip": decompressors it has
//	                         "offload-root NAME": each entry of ROOTS and of gcroots/tmp
//	                         the paths it lacks, one a line (`guix archive --missing`)
//	                         "offload-missing-end"
//	stdin                    only for a machine that fetches substitutes itself
//	                         (OFFLOAD_SUBSTITUTES): "substitute PATH...", missing inputs
//	stdout                   then, once `guix build --keep-going PATH...` fetched what
//	                         it could (substituteFuncs), the PATHs still missing, one a
//	                         line, "offload-missing-end"
//	stdin                    "COMP send|skip [STALE...]": the compression of both bulk
//	                         streams (zstd, gzip, or anything else for none), whether a
//	                         bundle follows, and the root names to remove first; then,
//	                         with "send", the bundle in COMP up to the end of stdin
//	stdout                   "offload-imported" (the bundle is in its store)
//	                         "offload-waiting-slot", about once a second, while every
//	                         one of the machine's own build slots is taken
//	                         "offload-building" (the build starts: from here on a
//	                         failure is the build's, and no other machine may take it)
//	                         "offload-alive" every second while the build runs
//	                         (aliveScript)
//	                         "offload-built" (the build succeeded), then the export of
//	                         the OUTPUTs in COMP up to the end of stdout
//
// A failed step ends the script with that step's exit status, so the last stdout line
// says how far it went and nothing is exported after a failed build. stderr carries
// the steps' messages, split by the lines "\037offload-phase TOKEN build" and
// "... export": what comes between them is the build log (relayed to fd 4 and
// classified); TOKEN, random per offload, keeps a builder from faking a split.
//
// GC roots. guix-daemon's collector (nix/libstore/gc.cc, findRoots) keeps every store
// path that a symlink under $state/gcroots points to, and follows one more symlink
// for a link there that points outside the store: that is how `guix build -r LINK`
// roots the build's outputs, with LINK under ROOTS and gcroots/auto/HASH -> LINK made
// by the daemon. The build itself takes -r: the same guix process as the build. The
// .drv (just imported, and protected by nothing until the build's daemon takes it
// as a temporary root) is rooted as Guix's own hook does (guix/scripts/offload.scm,
// register-gc-root): a symlink gcroots/tmp/ROOT.drv -> DRV, with no guix process,
// under $GUIX_STATE_DIRECTORY or /var/guix as the remote guix has it, when the daemon
// made gcroots there and the user may write in it (root, usually); otherwise by
// `guix build -d -r ROOTS/ROOT.drv`, which goes through the daemon. The roots are
// removed when the script exits, however it ends; the hook names, in its header line,
// those that earlier hooks of this host left behind when they were killed.
var sessionScript = strings.Join([]string{
	transferFuncs,
	`d=$1 r=$2 drv=$3 tok=$4 mst=$5 to=$6 ns=$7 who=$8`,
	`shift 8`,
	`set -f`,
	`state=${GUIX_STATE_DIRECTORY:-/var/guix}`,
	`tmp=$state/gcroots/tmp`,
	`bye() { set +f; rm -f -- "$d/$r.drv" "$d/$r" "$d/$r"-[0-9]* "$tmp/$r.drv"; }`,
	`trap bye EXIT`,
	`trap "exit 129" HUP`,
	`trap "exit 130" INT`,
	`trap "exit 141" PIPE`,
	`trap "exit 143" TERM`,
	`for c in zstd gzip; do if command -v "$c" >/dev/null 2>&1; then printf "` + toolPrefix + `%s\n" "$c"; fi; done`,
	// Names with a blank cannot be ours, and the framing is one name a line.
	`for dir in "$d" "$tmp"; do [ -d "$dir" ] || continue; set +f; for p in "$dir"/*; do n=${p##*/}; ` +
		`case $n in *["$IFS"]*) continue ;; esac; ` +
		`if [ -e "$p" ] || [ -L "$p" ]; then printf "` + rootPrefix + `%s\n" "$n"; fi; done; set -f; done`,
	`IFS= read -r want || { echo "offload: no paths from the hook" >&2; exit 2; }`,
	`printf "%s\n" $want | guix archive --missing || exit`,
	`echo ` + lineMissingEnd,
	substituteFuncs,
	`read -r comp send stale || { echo "offload: no header from the hook" >&2; exit 2; }`,
	`if [ "$comp" = ` + substituteWord + ` ]; then substitute $send $stale || exit; echo ` + lineMissingEnd + `; ` +
		`read -r comp send stale || { echo "offload: no header from the hook" >&2; exit 2; }; fi`,
	`rmstale() { for n in $stale; do set -- "$@" "$d/$n" "$tmp/$n"; done; rm -f -- "$@"; }`,
	`[ -z "$stale" ] || rmstale`,
	`if [ "$send" = send ]; then case $comp in zstd | gzip) import_z "$comp" || exit ;; *) guix archive --import >&2 || exit ;; esac; fi`,
	`echo ` + lineImported,
	`[ -d "$d" ] || mkdir -p "$d" || exit`,
	`if [ -d "$state/gcroots" ] && { [ -d "$tmp" ] || mkdir "$tmp" 2>/dev/null; } && ln -sf "$drv" "$tmp/$r.drv" 2>/dev/null; then :; ` +
		`else guix build -d -r "$d/$r.drv" "$drv" </dev/null >/dev/null || exit; fi`,
	remoteSlotScript,
	`echo ` + lineBuilding,
	`printf "\037offload-phase %s build\n" "$tok" >&2`,
	`guix build -r "$d/$r" --verbosity=3 ${mst:+"--max-silent-time=$mst"} ${to:+"--timeout=$to"} "$drv" </dev/null >/dev/null & b=$!`,
	aliveScript,
	`wait "$b"; st=$?; kill "$w" 2>/dev/null; wait "$w" 2>/dev/null; exec 9>&-; [ "$st" -eq 0 ] || exit "$st"`,
	`printf "\037offload-phase %s export\n" "$tok" >&2`,
	`echo ` + lineBuilt,
	`[ $# -gt 0 ] || exit 0`,
	`case $comp in zstd | gzip) export_z "$comp" "$@" ;; *) guix archive --export "$@" ;; esac`,
}, "; ")

// remoteSlotScript takes one of the machine's own build slots before the build, so
// that parallel-builds holds on the machine whatever the number of hosts that offload
// to it: the slot files are SLOTS-DIR/0 .. SLOTS-1, SLOTS-DIR being $OFFLOAD_SLOTS_DIR
// in the machine's environment or ROOTS/slots (relative to the remote user's home,
// like ROOTS). A slot is an flock(1) on fd 9 of the script's shell, so it lasts as
// long as the shell and what inherits fd 9: the `guix build` client, which lives as
// long as the build (the daemon's builders do not inherit it), and it is released
// after the build, before the export. A session that ends (the host died, its
// connection broke) frees its slot when its shell exits: at the build's next write to
// the closed session (SIGPIPE), or at its end. The holder writes "HOST PID DRV" in the
// slot for `offload status`; the file is opened for appending, so that a slot taken by
// someone else is never truncated. With every slot taken (other hosts took them since
// the probe) it waits, trying every 0.1 s and writing "offload-waiting-slot" on stdout
// every second or so, which also ends it (SIGPIPE) if the session is gone. A machine
// without flock has no shared slots: one line on stderr, and the build goes on.
// Probed by factsScript.
const remoteSlotScript = `if [ "$ns" -gt 0 ] 2>/dev/null; then if command -v flock >/dev/null 2>&1; then ` +
	`sd=${` + slotsDirEnv + `:-$d/slots}; [ -d "$sd" ] || mkdir -p "$sd" || exit; k=0; ` +
	`while :; do i=0; while [ "$i" -lt "$ns" ]; do exec 9>>"$sd/$i"; if flock -n 9; then break 2; fi; exec 9>&-; i=$((i + 1)); done; ` +
	`[ $((k % 10)) -ne 0 ] || echo ` + lineWaiting + `; k=$((k + 1)); sleep 0.1 2>/dev/null || sleep 1; done; ` +
	`: >"$sd/$i"; printf "%s %s\n" "$who" "$drv" >&9; ` +
	`else echo "offload: no flock(1) on this machine (util-linux): its parallel-builds is not shared with other hosts" >&2; fi; fi`

// aliveScript watches, while the build runs (pid $b), that the session is still
// there, writing "offload-alive" on stdout every second: when the host died or lost
// its connection, the write fails (sshd closes the session's stdout when the client's
// side of the channel is gone, even when ssh's connection sharing keeps the
// connection; it keeps draining stderr, so the build's log would not tell) and it
// stops the build, whose `guix build` holds the machine's slot (remoteSlotScript).
// Neither it nor its sleep keeps fd 9 or stdout beyond itself, so that neither the
// slot nor the session outlives the build. Its pid is $w.
const aliveScript = `{ trap '' PIPE; while sleep 1 >/dev/null 2>&1; do kill -0 "$b" 2>/dev/null || exit 0; echo ` + lineAlive + ` 2>/dev/null || break; done; kill "$b" 2>/dev/null; } 9>&- & w=$!`

// slotsDirEnv, in the machine's environment, puts its shared build slots elsewhere than
// under the remote user's home (remoteSlotScript), e.g. where several remote users
// share them.
const slotsDirEnv = "OFFLOAD_SLOTS_DIR"

// maxRootNames bounds the root names a machine may list (those of builds in flight).
const maxRootNames = 100_000

// The session script's stdout lines (see sessionScript); toolPrefix is the other.
const (
	rootPrefix     = "offload-root "
	lineMissingEnd = "offload-missing-end"
	lineImported   = "offload-imported"
	lineWaiting    = "offload-waiting-slot"
	lineBuilding   = "offload-building"
	lineBuilt      = "offload-built"
	lineAlive      = "offload-alive"
)

// offload performs an accepted build on machine m in one ssh session (sessionScript is
// its remote side; nothing is fetched after a failed build, and the build's time limits
// hold on both sides: docs/hook.md): it asks which inputs the machine lacks,
// sends them under the machine's upload lock, builds with the daemon's limits with the
// log on fd 4, and restores the outputs under the download lock. A failure before the
// build starts is a *beforeBuildError (another machine may take the build).
func (h *Hook) offload(ctx context.Context, m *machines.Machine, t sshexec.Target, req Request, inputs, outputs []string) error {
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
		h.learn(m, req, s, time.Since(began))
		return nil
	}
	if err := s.download(ctx); err != nil {
		return err
	}
	h.learn(m, req, s, time.Since(began))
	h.say("done with offloaded '%s'", req.Drv)
	return nil
}

// session is the local side of one run of sessionScript.
type session struct {
	h       *Hook
	m       *machines.Machine
	req     Request
	outputs []string
	root    string      // this build's GC roots' name
	comp    Compression // both bulk streams', once the machine said what it has

	ctx    context.Context
	cancel context.CancelFunc
	// stdin and stdout are OS pipes handed to ssh as they are, so that nothing of
	// ours sits between ssh's exit and the end of RunRemote.
	stdin    *os.File
	sent     *countingWriter // counts what went into stdin
	stdout   *bufio.Reader
	stdoutR  *os.File
	stderr   *stderrRouter
	done     chan struct{} // closed when RunRemote returned
	runErr   error         // RunRemote's error, once done
	timedOut atomic.Bool   // the session was cut for the build timeout
	// framingErr is set when the machine's stdout broke the framing.
	framingErr error

	localMu  sync.Mutex
	localErr error // our own side's failure while sending

	// What placement learns (learn): the upload's uncompressed bytes and time, and
	// the build's time from its start on the machine.
	sentRaw             int64
	sendTime, buildTime time.Duration
}

// startSession starts the ssh session running sessionScript on m.
func (h *Hook) startSession(ctx context.Context, m *machines.Machine, t sshexec.Target, req Request, outputs []string) (*session, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	var tok [8]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, err
	}
	token := hex.EncodeToString(tok[:])
	limit := func(secs int) string {
		if secs <= 0 {
			return ""
		}
		return strconv.Itoa(secs)
	}
	s := &session{h: h, m: m, req: req, outputs: outputs, root: rootName(req.Drv),
		stdin: inW, sent: &countingWriter{w: inW}, stdout: bufio.NewReaderSize(outR, 64<<10), stdoutR: outR,
		stderr: newStderrRouter(token, h.Log), done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(ctx)
	argv := append([]string{"sh", "-c", sessionScript, "sh", rootsDir, s.root, req.Drv, token,
		limit(h.Conf.MaxSilentTime), limit(h.Conf.BuildTimeout), strconv.Itoa(max(m.ParallelBuilds, 1)),
		rootHost() + " " + strconv.Itoa(os.Getpid())}, outputs...)
	go func() {
		err := h.Runner.RunRemote(s.ctx, t, argv, sshexec.Stdio{Stdin: inR, Stdout: outW, Stderr: s.stderr})
		s.runErr = err
		close(s.done)
		// Our copies of ssh's ends: once closed, a write to stdin fails and stdout
		// ends (as soon as the ssh master, which may hold them too, let go).
		inR.Close()
		outW.Close()
	}()
	return s, nil
}

// wait waits for the session's end and returns RunRemote's error.
func (s *session) wait() error {
	<-s.done
	return s.runErr
}

// ended tells whether the session is over.
func (s *session) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// abort ends the session, whatever it was doing (a no-op once it ended), and waits for
// it. ssh does not signal the remote script: it notices its closed streams, and its
// trap removes its roots.
func (s *session) abort() {
	s.cancel()
	s.stdin.Close()
	s.stdoutR.Close()
	<-s.done
}

// line reads the next framing line of the session's stdout. An error means that the
// session ended (failure says why), or that the machine sent a line longer than any
// the script writes (framingErr: the session is aborted).
func (s *session) line() (string, error) {
	l, err := s.stdout.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull:
		s.framingErr = fmt.Errorf("machine '%s' sent a line of more than %d bytes where the offload script writes store paths", s.m.Display(), len(l))
		s.abort()
		return "", s.framingErr
	case err == io.EOF && len(l) > 0:
		return "", io.ErrUnexpectedEOF
	case err != nil:
		return "", err
	}
	return strings.TrimSuffix(string(l), "\n"), nil
}

// failure says why the session ended while the machine ran step, from RunRemote's
// error and the stderr of the phase: what names the failure with the machine (it
// takes m.Display() for its %s), bare without it, for errors that name it themselves.
func (s *session) failure(step, what, bare string, tail *sshexec.Tail) error {
	if s.framingErr != nil {
		return s.framingErr
	}
	err := s.wait()
	what = fmt.Sprintf(what, s.m.Display())
	var re *sshexec.RemoteError
	switch {
	case err == nil:
		return fmt.Errorf("%s: the session ended during %s", what, step)
	case s.ctx.Err() != nil && !errors.As(err, &re):
		return fmt.Errorf("%s: %w", what, s.ctx.Err())
	case errors.As(err, &re):
		msg := fmt.Sprintf("%s: %s exited with status %d", what, step, re.Code)
		if t := sshexec.LastLines(tail.String(), 3); t != "" {
			msg += ": " + t
		}
		return errors.New(msg)
	}
	return fmt.Errorf("%s: %w", bare, err)
}

// protocol is a session whose stdout broke the framing (a broken shell start-up
// printing on stdout, or a machine that lies).
func (s *session) protocol(got, want string) error {
	return fmt.Errorf("machine '%s' said %q where the offload script says %q (does the remote user's shell start-up print on stdout?)", s.m.Display(), got, want)
}

// upload asks which of the .drv and inputs the machine lacks, tells it how the
// transfers will go and which stale roots to remove, and sends what it lacks: one
// stream of `guix archive --export`, compressed as mode and the machine allow.
func (s *session) upload(mode string, inputs []string) error {
	h, m := s.h, s.m
	asking := func() error {
		return s.failure("`guix archive --missing`", "asking machine '%s' which inputs it lacks", "asking which inputs it lacks", s.stderr.tails[0])
	}
	want := uniqueSorted(append([]string{s.req.Drv}, inputs...))
	if _, err := io.WriteString(s.stdin, strings.Join(want, " ")+"\n"); err != nil {
		return asking()
	}
	wanted := map[string]bool{}
	for _, p := range want {
		wanted[p] = true
	}
	has, lacked := map[string]bool{}, map[string]bool{}
	var names, missing []string
	for {
		l, err := s.line()
		if err != nil {
			return asking()
		}
		if l == lineMissingEnd {
			break
		}
		if tool, ok := strings.CutPrefix(l, toolPrefix); ok {
			if tool == string(CompressZstd) || tool == string(CompressGzip) {
				has[tool] = true
			}
			continue
		}
		if name, ok := strings.CutPrefix(l, rootPrefix); ok {
			names = append(names, name)
			continue
		}
		for _, p := range strings.Fields(l) {
			if !wanted[p] {
				return fmt.Errorf("machine '%s' answered `guix archive --missing` with a path we did not ask about: %q", m.Display(), p)
			}
			if !lacked[p] {
				lacked[p] = true
				missing = append(missing, p)
			}
		}
		if len(names) > maxRootNames {
			s.abort()
			return fmt.Errorf("machine '%s' listed more than %d entries in its GC roots directories", m.Display(), maxRootNames)
		}
	}
	var subNote string
	if subs := substituteCandidates(missing, s.req.Drv); h.Conf.Substitutes.For(m) && len(subs) > 0 {
		still, got, err := s.substitute(subs)
		if err != nil {
			return err
		}
		missing = slices.DeleteFunc(missing, func(p string) bool { return p != s.req.Drv && !still[p] })
		subNote = s.substituteNote(got)
	}
	comp, note := ChooseCompression(mode, has)
	if note != "" {
		h.note("machine '%s': %s", m.Display(), note)
	}
	s.comp = comp
	verb := "send"
	if len(missing) == 0 {
		verb = "skip"
	}
	header := strings.Join(append([]string{string(comp), verb}, removableRoots(names, s.root)...), " ") + "\n"
	if _, err := io.WriteString(s.stdin, header); err != nil {
		return s.failure("the offload script", "starting the transfer to machine '%s'", "starting the transfer", s.stderr.tails[0])
	}
	if len(missing) == 0 {
		s.stdin.Close()
		if subNote != "" {
			h.note("%s; nothing to send", subNote)
			return s.expect(lineImported, "the offload script", "preparing the build on machine '%s'", "preparing the build")
		}
		h.note("machine '%s' already has the %d inputs", m.Display(), len(want))
		return s.expect(lineImported, "the offload script", "preparing the build on machine '%s'", "preparing the build")
	}

	n := len(missing)
	sending, bare := fmt.Sprintf("sending %d store items to machine '%%s'", n), fmt.Sprintf("sending %d store items", n)
	if subNote != "" {
		h.note("%s; sending %d store item%s%s (%s)...", subNote, n, plural(n), s.sizeNote(missing), comp)
	} else {
		h.note("sending %d store item%s to '%s' (%s)...", n, plural(n), m.Display(), comp)
	}
	start := time.Now()
	raw := &countingWriter{}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		s.send(missing, comp, raw)
	}()
	stop := make(chan struct{})
	go h.reportProgress("sending to '"+m.Display()+"'", &s.sent.n, stop)
	l, err := s.line()
	close(stop)
	switch {
	case err != nil:
		<-sent
		if local := s.local(); local != nil {
			return fmt.Errorf("%s: %w", bare, local)
		}
		return s.failure("`guix archive --import`", sending, bare, s.stderr.tails[0])
	case l != lineImported:
		s.abort()
		<-sent
		return s.protocol(l, lineImported)
	}
	<-sent
	if local := s.local(); local != nil {
		// The machine took a bundle cut short for complete: ours is the failure.
		s.abort()
		return fmt.Errorf("%s: %w", bare, local)
	}
	s.sentRaw, s.sendTime = raw.n.Load(), time.Since(start)
	h.note("sent %d store item%s (%s) to '%s' in %.1fs", n, plural(n),
		comp.describe(s.sent.n.Load(), raw.n.Load()), m.Display(), time.Since(start).Seconds())
	return nil
}

// expect reads the next framing line, which must be want; otherwise the session
// failed during step (see failure) or broke the framing.
func (s *session) expect(want, step, what, bare string) error {
	l, err := s.line()
	switch {
	case err != nil:
		return s.failure(step, what, bare, s.stderr.tails[0])
	case l != want:
		s.abort()
		return s.protocol(l, want)
	}
	return nil
}

// send streams the local `guix archive --export PATHS`, compressed with comp, into the
// session's stdin and closes it; raw counts the export itself. A failure of the
// export while the session lives is ours (localError); once the session ended, it is
// the consequence of the machine's failure, which the caller reports.
func (s *session) send(paths []string, comp Compression, raw *countingWriter) {
	zw, err := newCompressor(comp, s.sent)
	if err != nil {
		s.setLocal(&localError{fmt.Errorf("%s compressor: %w", comp, err)})
		s.stdin.Close()
		return
	}
	raw.w = s.sent
	if zw != nil {
		raw.w = zw
	}
	argv := append([]string{s.h.Conf.Guix, "archive", "--export"}, paths...)
	if err := s.h.Runner.Run(s.ctx, argv, sshexec.Stdio{Stdout: raw}); err != nil {
		if !s.ended() && s.ctx.Err() == nil {
			s.setLocal(&localError{fmt.Errorf("local `guix archive --export`: %w", err)})
		}
		s.stdin.Close() // no end of stream: the machine sees it cut short
		if zw != nil {
			zw.Close() // fails at once on the closed pipe; frees the encoder
		}
		return
	}
	if zw != nil {
		// The end of the stream; a failure here is the reader's doing (the import
		// ended), and the machine's status reports it.
		zw.Close()
	}
	s.stdin.Close()
}

func (s *session) setLocal(err error) {
	s.localMu.Lock()
	defer s.localMu.Unlock()
	if s.localErr == nil {
		s.localErr = err
	}
}

func (s *session) local() error {
	s.localMu.Lock()
	defer s.localMu.Unlock()
	return s.localErr
}

// removableRoots picks, from the names in the machine's roots directories, those to
// remove before the build: those of this host's dead hooks (staleRoots), and any of
// this build's own names, which can only be left by an earlier process with our pid
// (`guix build -r` refuses to replace a root).
func removableRoots(names []string, root string) []string {
	out := staleRoots(names, processAlive)
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, root)
		if !ok {
			continue
		}
		digits, numbered := strings.CutPrefix(rest, "-") // ROOT-0, ROOT-1...: several outputs
		if rest == "" || rest == ".drv" || numbered && digits != "" && strings.Trim(digits, "0123456789") == "" {
			out = append(out, n)
		}
	}
	return out
}

// build waits for the build to start on the machine and to end, with its log relayed
// to fd 4, and classifies its failure. A failure before it starts is a
// *beforeBuildError.
func (s *session) build() error {
	h, m, drv := s.h, s.m, s.req.Drv
	if err := s.buildStarts(); err != nil {
		return &beforeBuildError{Err: err}
	}
	h.say("offloading '%s' to '%s'...", drv, m.Display())
	h.say("@ build-remote %s %s", drv, m.Display())
	began := time.Now()
	var timer *time.Timer
	if h.Conf.BuildTimeout > 0 {
		// Stop waiting locally too, so a hung connection cannot keep us alive.
		timer = time.AfterFunc(time.Duration(h.Conf.BuildTimeout)*time.Second+buildMargin, func() {
			s.timedOut.Store(true)
			s.cancel()
		})
	}
	l, err := s.line()
	for err == nil && l == lineAlive {
		l, err = s.line()
	}
	if timer != nil && !timer.Stop() {
		s.wait()
		return fmt.Errorf("no result from machine '%s' %s after the build timeout: %w", m.Display(), buildMargin, ErrTimedOut)
	}
	switch {
	case err == nil && l == lineBuilt:
		s.buildTime = time.Since(began)
		return nil
	case err == nil:
		s.abort()
		return s.protocol(l, lineBuilt)
	}
	var re *sshexec.RemoteError
	if errors.As(s.wait(), &re) {
		switch classify(s.stderr.tails[1].String(), drv) {
		case ExitTimedOut:
			return fmt.Errorf("derivation '%s' offloaded to '%s' timed out: %w", drv, m.Display(), ErrTimedOut)
		case ExitBuildFailed:
			return fmt.Errorf("derivation '%s' offloaded to '%s' failed: %w", drv, m.Display(), ErrBuildFailed)
		}
	}
	return s.failure("`guix build`", "running guix build on machine '%s'", "building '"+drv+"'", s.stderr.tails[1])
}

// buildStarts waits for "offload-building", through the machine's wait for one of
// its own build slots (remoteSlotScript), which it tells the user about once, then
// every ProgressEvery (which also resets the daemon's max-silent-time clock).
func (s *session) buildStarts() error {
	h, m, drv := s.h, s.m, s.req.Drv
	step, what, bare := "`guix build -d -r`", "rooting "+drv+" on machine '%s'", "rooting "+drv
	every := h.ProgressEvery
	if every <= 0 {
		every = progressEvery
	}
	var since, said time.Time
	for {
		l, err := s.line()
		switch {
		case err != nil:
			return s.failure(step, what, bare, s.stderr.tails[0])
		case l == lineBuilding:
			return nil
		case l != lineWaiting:
			s.abort()
			return s.protocol(l, lineBuilding)
		case since.IsZero():
			since, said = time.Now(), time.Now()
			step, what, bare = "the wait for a build slot", "waiting for a build slot of machine '%s'", "waiting for a build slot"
			n := max(m.ParallelBuilds, 1)
			h.say("offload: all %d build slots of machine '%s' are taken on the machine, by other hosts too; '%s' waits for one there", n, m.Display(), drv)
		case time.Since(said) >= every:
			said = time.Now()
			h.say("offload: '%s' still waits for a build slot on machine '%s' (%s so far)", drv, m.Display(), said.Sub(since).Round(time.Second))
		}
	}
}

// download restores the outputs that follow the build on the session's stdout into the
// local store, checking each item's signature against the local ACL (the daemon holds
// the output locks, so `guix archive --import` would deadlock: PROTOCOL.md). The
// machine's export waits in its pipe until we hold the download lock.
func (s *session) download(ctx context.Context) error {
	h, m, outputs := s.h, s.m, s.outputs
	lock, err := h.machineLock(ctx, m, "download", "retrieving "+strings.Join(outputs, " "))
	if err != nil {
		return err
	}
	defer lock.Release()

	h.cleanStaleTemps()
	acl, err := storeio.LoadACL(path.Join(h.Conf.ConfDir, "acl"))
	if err != nil {
		return fmt.Errorf("cannot check what machine '%s' returns: %w", m.Display(), err)
	}
	comp := s.comp
	h.say("retrieving %d store item%s from '%s' (%s)...", len(outputs), plural(len(outputs)), m.Display(), comp)
	start := time.Now()
	cr := &countingReader{r: endStatus{s}}
	stop := make(chan struct{})
	go h.reportProgress("retrieving from '"+m.Display()+"'", &cr.n, stop)
	// ImportBundle reads to the end of the stream before it places anything: for a
	// compressed stream, through the decompressor's own checksum, and in any case to
	// the end of the session's stdout, which comes after the machine's exit status.
	var bundle io.Reader = cr
	if comp.streamed() {
		dec := newDecompressor(comp, cr)
		defer dec.Close()
		bundle = dec
	}
	raw := &countingReader{r: bundle}
	items, impErr := storeio.ImportBundle(raw, storeio.ImportOptions{
		StoreDir: h.Conf.StoreDir,
		Allowed:  outputs,
		ACL:      acl,
		Log:      h.Out,
		Replace:  true, // the daemon asked for them: whatever is there is not valid
	})
	close(stop)
	machineFirst := s.ended() // the machine's export ended before the import failed
	if impErr != nil {
		s.abort() // stop the machine's export: we refuse what it sends
	}
	runErr := s.wait()
	exportFailed := func() error {
		return s.failure("`guix archive --export`", "retrieving outputs from machine '%s'", "retrieving outputs", s.stderr.tails[2])
	}
	if runErr != nil && impErr != nil && machineFirst {
		return exportFailed()
	}
	if impErr != nil && storeio.IsRefusal(impErr) {
		return fmt.Errorf("refusing what machine '%s' returned: %w", m.Display(), impErr)
	}
	if impErr != nil {
		return fmt.Errorf("restoring the outputs from machine '%s' into %s: %w", m.Display(), h.Conf.StoreDir, impErr)
	}
	if runErr != nil {
		return exportFailed()
	}
	if err := allReturned(m, outputs, items); err != nil {
		return err
	}
	h.note("retrieved %d store item%s (%s) from '%s' in %.1fs", len(items), plural(len(items)), comp.describe(cr.n.Load(), raw.n.Load()), m.Display(), time.Since(start).Seconds())
	return nil
}

// endStatus reads the rest of the session's stdout and ends it with the session's
// error, if any, rather than a plain end of file: the import refuses a stream whose
// export failed on the machine, however complete it looks.
type endStatus struct{ s *session }

func (e endStatus) Read(p []byte) (int, error) {
	n, err := e.s.stdout.Read(p)
	if err == io.EOF {
		// Our copy of ssh's stdout closes only after RunRemote returned.
		if runErr := e.s.wait(); runErr != nil {
			err = runErr
		}
	}
	return n, err
}

// stderrRouter sorts the session's stderr by the script's phase markers (see
// sessionScript): before the build (tails[0]), the build (tails[1], and the log),
// the export (tails[2]). Bytes pass at once, but for the start of a line that may
// be the next marker (it starts with \037), held until it is told apart.
type stderrRouter struct {
	mu      sync.Mutex
	markers [2][]byte
	phase   int
	held    []byte
	midLine bool
	log     io.Writer
	tails   [3]*sshexec.Tail
}

func newStderrRouter(token string, log io.Writer) *stderrRouter {
	r := &stderrRouter{log: log, tails: [3]*sshexec.Tail{sshexec.NewTail(16 << 10), sshexec.NewTail(64 << 10), sshexec.NewTail(16 << 10)}}
	for i, name := range []string{"build", "export"} {
		r.markers[i] = []byte("\037offload-phase " + token + " " + name + "\n")
	}
	return r
}

func (r *stderrRouter) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(p)
	for len(p) > 0 && r.phase < 2 {
		if !r.midLine {
			need := r.markers[r.phase][len(r.held):]
			k := 0
			for k < len(need) && k < len(p) && p[k] == need[k] {
				k++
			}
			switch {
			case k == len(need): // the whole marker: the next phase
				r.held, p = r.held[:0], p[k:]
				r.phase++
				continue
			case k == len(p): // a marker so far
				r.held = append(r.held, p...)
				return n, nil
			}
			r.emit(r.held)
			r.held = r.held[:0]
			r.midLine = true
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			r.emit(p)
			return n, nil
		}
		r.emit(p[:i+1])
		p = p[i+1:]
		r.midLine = false
	}
	r.emit(p)
	return n, nil
}

func (r *stderrRouter) emit(p []byte) {
	if len(p) == 0 {
		return
	}
	r.tails[r.phase].Write(p)
	if r.phase == 1 {
		r.log.Write(p)
	}
}

// allReturned checks that every output the daemon asked for came back: a machine that
// returns some of them must not get an exit 0 (the daemon would then fail with "failed
// to produce output path", or register a partial result).
func allReturned(m *machines.Machine, outputs []string, items []storeio.ItemInfo) error {
	got := map[string]bool{}
	for _, it := range items {
		got[it.Path] = true
	}
	for _, o := range outputs {
		if !got[o] {
			return fmt.Errorf("machine '%s' did not return output %s", m.Display(), o)
		}
	}
	return nil
}

// cleanStaleTemps removes the leftovers of hooks the daemon killed mid-import (it
// uses SIGKILL).
func (h *Hook) cleanStaleTemps() {
	if removed, err := storeio.CleanStaleTemps(h.Conf.StoreDir); err == nil && len(removed) > 0 {
		h.note("removed %d stale temporary director%s from %s", len(removed), map[bool]string{true: "y", false: "ies"}[len(removed) == 1], h.Conf.StoreDir)
	}
}

// rootName names this build's remote GC roots after this host and process, so that
// concurrent hooks and hosts never share one.
func rootName(drv string) string {
	return fmt.Sprintf("%s-%d-%s", rootHost(), os.Getpid(), strings.TrimSuffix(path.Base(drv), ".drv"))
}

// rootHost is this host's name as it starts our remote GC roots' names.
func rootHost() string {
	host, _ := os.Hostname()
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r < ' ' {
			return '_'
		}
		return r
	}, host)
}

// staleRoots picks, from the names of the remote roots directory, those this host's
// hooks made and whose process is gone: a hook killed by the daemon (SIGKILL) or cut
// off from the machine could not remove them, and they would keep the outputs from
// the machine's garbage collector for ever.
func staleRoots(names []string, alive func(pid int) bool) []string {
	prefix := rootHost() + "-"
	var stale []string
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, prefix)
		// The names travel space-separated to the machine's shell: none with a blank.
		if !ok || strings.ContainsAny(n, "/\x00 \t\r\n") || strings.HasPrefix(n, "-") {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 || alive(pid) {
			continue
		}
		stale = append(stale, n)
	}
	return stale
}

// processAlive tells whether a local process exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// machineLock takes a machine's upload or download lock, saying who holds it while
// waiting: one transfer each way at a time per machine, so that concurrent offloads do
// not trample each other's imports (docs/hook.md).
func (h *Hook) machineLock(ctx context.Context, m *machines.Machine, kind, reason string) (*locking.Lock, error) {
	file := h.layout.TransferLock(m.ID(), kind)
	if l, ok, err := locking.TryAcquire(file, reason); err != nil {
		return nil, err
	} else if ok {
		return l, nil
	}
	if pid, why, held, _ := locking.Holder(file); held {
		h.note("waiting for the %s lock of machine '%s' (held by process %d: %s)", kind, m.Display(), pid, why)
	}
	wait := h.Conf.LockWait
	if wait <= 0 {
		wait = 30 * time.Minute
	}
	lctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return locking.Acquire(lctx, file, reason)
}

// buildMargin is how long after the build timeout we keep waiting for the machine.
const buildMargin = 60 * time.Second

// classify tells, from the end of `guix build`'s stderr, whether the build itself
// failed or timed out (the daemon's own messages, nix/libstore/build.cc), as opposed
// to guix not running at all.
func classify(stderr, drv string) int {
	timedOut, failed := false, false
	for _, line := range strings.Split(stderr, "\n") {
		if !strings.Contains(line, drv) {
			continue
		}
		switch {
		case strings.Contains(line, "timed out after"):
			timedOut = true
		case strings.HasPrefix(line, "@ build-failed "+drv),
			strings.Contains(line, "build of `"+drv+"' failed"),
			strings.Contains(line, "builder for `"+drv+"' failed"):
			failed = true
		}
	}
	switch {
	case timedOut:
		return ExitTimedOut
	case failed:
		return ExitBuildFailed
	}
	return ExitTransient
}

func uniqueSorted(ps []string) []string {
	sort.Strings(ps)
	out := ps[:0]
	for i, p := range ps {
		if i == 0 || p != ps[i-1] {
			out = append(out, p)
		}
	}
	return out
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// countingReader counts the bytes read through it (read by another goroutine).
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// countingWriter counts the bytes written through it (read by another goroutine).
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// progressEvery is how often a long transfer says how far it got (Hook.ProgressEvery
// overrides it). Besides informing the user, each line resets the daemon's
// max-silent-time clock, which also runs while we transfer.
const progressEvery = 15 * time.Second

// reportProgress prints the bytes counted in n so far every progressEvery until stop
// is closed.
func (h *Hook) reportProgress(what string, n *atomic.Int64, stop <-chan struct{}) {
	h.everyProgress(stop, func() { h.note("%s: %s so far", what, mib(n.Load())) })
}

// everyProgress calls say every progress interval (Hook.ProgressEvery, else
// progressEvery) until stop is closed. Each line also resets the daemon's
// max-silent-time clock, which runs while we transfer or wait.
func (h *Hook) everyProgress(stop <-chan struct{}, say func()) {
	every := h.ProgressEvery
	if every <= 0 {
		every = progressEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			say()
		}
	}
}
