package hook

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"offload/machines"
	"offload/placement"
	"offload/sshexec"
	"offload/statedir"
	"offload/storeio"
	"offload/workerproto"
)

// Config is what the daemon tells the hook (its arguments and environment).
type Config struct {
	System          string // the daemon's own system type (first argument)
	MaxSilentTime   int    // seconds; 0 = none
	PrintBuildTrace bool
	BuildTimeout    int // seconds; 0 = none

	MachinesFile string // $GUIX_CONFIGURATION_DIRECTORY/machines.scm
	ConfDir      string // $GUIX_CONFIGURATION_DIRECTORY (acl)
	StateDir     string // $GUIX_STATE_DIRECTORY/offload
	StoreDir     string // $NIX_STORE_DIR
	Guix         string // the local guix program, for `guix archive --export`
	GuixErr      error  // why no local guix was found (Guix is then ""); reported when needed
	Fallback     string // $OFFLOAD_FALLBACK: "" (build locally when all machines are down) or "wait"
	Compression  string // $OFFLOAD_COMPRESSION: auto (default), zstd, gzip, none or ssh
	ProbeMaxAge  time.Duration
	LockWait     time.Duration // bound on waiting for a machine's upload/download lock

	// Substitutes ($OFFLOAD_SUBSTITUTES) says which machines fetch substitutes themselves.
	Substitutes Substitutes

	// Path ($OFFLOAD_PATH) forces the daemon or the shell path (daemonpath.go); "" decides
	// per machine.
	Path string
	// LocalDaemon is the local guix-daemon's socket ($GUIX_DAEMON_SOCKET when it is a
	// file name, else $GUIX_STATE_DIRECTORY/daemon-socket/socket), for local exports
	// without a guix process.
	LocalDaemon string
	// BulkThreshold ($OFFLOAD_BULK_THRESHOLD), when positive, is the bundle size in bytes
	// above which transfers go by the streamed path instead of the daemon connection
	// (else it follows the round trip: daemon_upload.go).
	BulkThreshold int64
	// Attempts ($OFFLOAD_ATTEMPTS) bounds how often an accepted build is tried (retry.go).
	Attempts int
	// LocalSpeed ($OFFLOAD_LOCAL_SPEED) is this machine's speed for placement, on
	// the scale of the machines' speed field; "" is 1.
	LocalSpeed string
	// Placement ($OFFLOAD_PLACEMENT) is "off" to rank machines by speed and load
	// only, as Guix does: no estimates, no local candidate, no question about inputs.
	Placement string
}

// ConfigFromEnv fills the parts of Config that come from the environment.
func ConfigFromEnv(getenv func(string) string) Config {
	conf := getenv("GUIX_CONFIGURATION_DIRECTORY")
	if conf == "" {
		conf = "/etc/guix"
	}
	state := getenv("GUIX_STATE_DIRECTORY")
	if state == "" {
		state = "/var/guix"
	}
	store := getenv("NIX_STORE_DIR")
	if store == "" {
		store = "/gnu/store"
	}
	return Config{
		MachinesFile:  filepath.Join(conf, "machines.scm"),
		ConfDir:       conf,
		StateDir:      filepath.Join(state, "offload"),
		StoreDir:      strings.TrimRight(store, "/"),
		Fallback:      getenv("OFFLOAD_FALLBACK"),
		Compression:   getenv(CompressionEnv),
		ProbeMaxAge:   5 * time.Second,
		LockWait:      30 * time.Minute,
		Substitutes:   ParseSubstitutes(getenv(SubstitutesEnv)),
		Path:          parsePath(getenv(PathEnv)),
		Attempts:      parseAttempts(getenv(AttemptsEnv)),
		BulkThreshold: parseBulkThreshold(getenv(BulkThresholdEnv)),
		LocalDaemon:   localDaemonSocket(getenv("GUIX_DAEMON_SOCKET"), state),
		LocalSpeed:    getenv(placement.LocalSpeedEnv),
		Placement:     getenv(placement.Env),
	}
}

// parsePath reads $OFFLOAD_PATH: "daemon" or "shell" force a path, anything else decides.
func parsePath(v string) string {
	switch v {
	case pathDaemon, pathShell:
		return v
	}
	return ""
}

// localDaemonSocket is where the local guix-daemon listens: $GUIX_DAEMON_SOCKET when it
// names a file (a guix:// or other URI is not ours to speak), else the state directory's.
func localDaemonSocket(env, state string) string {
	if strings.HasPrefix(env, "/") {
		return env
	}
	if p, ok := strings.CutPrefix(env, "file://"); ok && strings.HasPrefix(p, "/") {
		return p
	}
	if env != "" {
		return ""
	}
	return filepath.Join(state, "daemon-socket", "socket")
}

// Hook serves one hook process: the daemon's requests on In, answers and messages on
// Out (fd 1/2, one pipe), the build log on Log (fd 4).
type Hook struct {
	Conf   Config
	In     io.Reader
	Answer io.Writer // where "# accept" and the like go (fd 1); nil: Out
	Out    io.Writer // messages for the user (fd 2, the same pipe as fd 1)
	Log    io.Writer // the build log (fd 4); nil: Out
	Runner *sshexec.Runner
	Now    func() time.Time
	Rand   *rand.Rand

	// dryRun: decide without taking a build slot or a queue place and without writing
	// the machines' state (see DecideDryRun).
	dryRun bool
	// ProgressEvery is how often long transfers report (default 15 s).
	ProgressEvery time.Duration
	// Holdings tells which inputs a machine holds, for placement (nil: one
	// `guix archive --missing` over ssh, AskMissing); the hook caches its answers.
	Holdings placement.Holdings
	// Sizes gives the size of a local input (nil: storeio.NarSize of the path).
	Sizes placement.Sizer
	// loadHere reads this machine's normalized load (nil: placement.LocalLoad).
	loadHere func() float64

	state  machines.State
	layout statedir.Layout // of Conf.StateDir

	localOnce sync.Once
	local     *workerproto.Conn // the local daemon, once dialled (nil: none answered)
	localWhy  error
	infoMu    sync.Mutex
	infos     map[string]workerproto.PathInfo // the local daemon's records, once asked (localInfo)
	keyOnce   sync.Once
	key       *storeio.SecretKey // this host's signing key, once read (nil: not readable)
	rtt       time.Duration      // the round trip to the chosen machine's daemon, measured
	learned   learned            // what the daemon path's current attempt teaches placement
	spare     spareSlot          // a remote slot taken before the accept (speculate)
}

func (h *Hook) init() {
	if h.Now == nil {
		h.Now = time.Now
	}
	if h.Rand == nil {
		h.Rand = rand.New(rand.NewSource(time.Now().UnixNano() ^ int64(os.Getpid())))
	}
	if h.Log == nil {
		h.Log = h.Out
	}
	if h.Answer == nil {
		h.Answer = h.Out
	}
	h.state = machines.State{Dir: h.Conf.StateDir}
	h.layout = statedir.Layout{Dir: h.Conf.StateDir}
}

// say prints one line for the user (the daemon copies it to the client).
func (h *Hook) say(format string, args ...any) {
	fmt.Fprintf(h.Out, format+"\n", args...)
}

// note prints one line of the hook's own reasoning for the user, after "offload: "
// (in a dry run, where the caller shows the reasoning under its own heading, without).
func (h *Hook) note(format string, args ...any) {
	if h.dryRun {
		h.say(format, args...)
		return
	}
	h.say("offload: "+format, args...)
}

func (h *Hook) answer(a string) error {
	_, err := fmt.Fprintf(h.Answer, "# %s\n", a)
	return err
}

// Run serves requests until EOF (exit 0), or until one request is accepted, in which
// case it performs that offload and returns its outcome.
func (h *Hook) Run(ctx context.Context) error {
	h.init()
	in := bufio.NewReader(h.In)
	for {
		line, err := readLine(in)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading request from the daemon: %w", err)
		}
		req, err := ParseRequest(line, h.Conf.StoreDir)
		if err != nil {
			return err
		}
		d := h.decide(ctx, req)
		if d.slot != nil && !h.canExport(ctx) {
			// After an accept there is no way back: never accept what cannot be sent.
			d.release()
			h.note("cannot send inputs from this host: no local guix-daemon answers at %s, and %v; building locally", h.Conf.LocalDaemon, h.Conf.GuixErr)
			d = decision{answer: "decline"}
		}
		if d.slot == nil {
			if err := h.answer(d.answer); err != nil {
				return err
			}
			continue
		}
		if err := h.answer("accept"); err != nil {
			d.release()
			return err
		}
		return h.accepted(ctx, in, req, d)
	}
}

// canExport tells whether this host can export its store items for a machine: through
// the local daemon, or with the local guix (local_export.go).
func (h *Hook) canExport(ctx context.Context) bool {
	return h.Conf.Guix != "" || h.Conf.GuixErr == nil || h.localDaemon(ctx) != nil
}

// accepted reads the two path lines and runs the offload, again elsewhere or later when
// the machine fails (retry.go).
func (h *Hook) accepted(ctx context.Context, in *bufio.Reader, req Request, d decision) error {
	defer func() { d.release() }()
	inLine, err := readLine(in)
	if err != nil {
		return fmt.Errorf("reading the inputs line: %w", err)
	}
	outLine, err := readLine(in)
	if err != nil {
		return fmt.Errorf("reading the outputs line: %w", err)
	}
	inputs, err := parsePaths(inLine, h.Conf.StoreDir, "inputs")
	if err != nil {
		return err
	}
	outputs, err := parsePaths(outLine, h.Conf.StoreDir, "outputs")
	if err != nil {
		return err
	}
	if d.queued {
		if err := h.waitForSlot(ctx, req, &d); err != nil {
			return err
		}
	}
	return h.attempts(ctx, req, d, inputs, outputs)
}

// loadMachines reads the machines file. A missing file means no machines; a broken
// one is reported and treated as no machines, so the daemon builds locally. A file
// that offload's evaluator cannot evaluate (Guix System's, with primitive-load) is
// evaluated by the real guix (`guix repl`), afresh for every request: what it returns
// may change from one request to the next.
func (h *Hook) loadMachines() []*machines.Machine {
	// Bounded: the daemon waits for our answer; the file may ask Shepherd things.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	loaded, err := machines.LoadWith(ctx, h.Conf.MachinesFile, GuixLoadOptions(h.Conf, h.Runner))
	ms, warns := loaded.Machines, loaded.Warnings
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			h.note("%v", err)
			h.note("ignoring the machines file; building locally")
		}
		return nil
	}
	_ = warns // `offload machines` shows them; the hook stays quiet per request
	for _, m := range ms {
		if m.UsedSystemField {
			h.note("%s: warning: the 'system' field is deprecated, use 'systems'", m.Pos)
		}
	}
	return ms
}

// GuixLoadOptions lets machines.LoadWith have the real guix (conf.Guix) evaluate a
// file that offload's evaluator cannot, as Guix's own hook would read it, running
// `guix repl` through r.
func GuixLoadOptions(conf Config, r *sshexec.Runner) machines.LoadOptions {
	if r == nil {
		r = &sshexec.Runner{}
	}
	return machines.LoadOptions{
		GuixProgram: conf.Guix,
		Guix: func(ctx context.Context, script, file string) ([]byte, error) {
			if conf.Guix == "" {
				return nil, conf.GuixErr
			}
			var out bytes.Buffer
			err := r.Run(ctx, []string{conf.Guix, "repl", "--", script, file}, sshexec.Stdio{Stdout: &out})
			return out.Bytes(), err
		},
	}
}

// SSHTarget is how the hook reaches m under conf (ssh compression off unless
// OFFLOAD_COMPRESSION=ssh): `offload test` and `offload status` connect with it, so that
// they check the connection the hook makes.
func SSHTarget(conf Config, m *machines.Machine) sshexec.Target {
	return (&Hook{Conf: conf}).target(m)
}

// readLine reads one line without its newline. A last line without a newline is
// returned as is; io.EOF only when nothing is left.
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err == io.EOF && line != "" {
		return line, nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(line, "\n"), nil
}
