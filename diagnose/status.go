package diagnose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"offload/hook"

	"offload/locking"
	"offload/machines"
	"offload/placement"
	"offload/sshexec"
	"offload/statedir"
)

// Status is what `offload status` knows of one machine: what it said when asked just
// now (one ssh round trip), what the hook's state remembers, and who holds its slots.
type Status struct {
	Machine   string `json:"machine"` // NAME:PORT (machines.Machine.Display)
	Name      string `json:"name"`
	Port      int    `json:"port"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"` // why it is not reachable; does not name the machine
	// From the hook's backoff state (machines.State).
	DownSince  *time.Time `json:"down_since,omitempty"`
	Failures   int        `json:"failures,omitempty"`
	RetryAfter *time.Time `json:"retry_after,omitempty"`
	LastError  string     `json:"last_error,omitempty"`
	// Drained: `offload drain` keeps new builds off it (placement.Drained).
	Drained      bool   `json:"drained,omitempty"`
	DrainedSince string `json:"drained_since,omitempty"` // and why, as the hook says it
	// From the machine, when reachable.
	Kernel         string   `json:"kernel,omitempty"`
	Architecture   string   `json:"architecture,omitempty"`
	HostName       string   `json:"host_name,omitempty"`
	Cores          int      `json:"cores,omitempty"`
	Load1          *float64 `json:"load1,omitempty"`
	NormalizedLoad *float64 `json:"normalized_load,omitempty"`
	FreeBytes      *int64   `json:"free_bytes,omitempty"` // free space in its store
	// ClockOffset is the machine's clock minus ours, in seconds: negative when it
	// is behind. It includes the time the answer took to come back (a few ms).
	ClockOffset *float64 `json:"clock_offset_seconds,omitempty"`
	GuixVersion string   `json:"guix_version,omitempty"` // first line of `guix --version`; "" when guix does not run
	// MachineSlots: the machine's own build slots, shared by every host; nil unknown.
	MachineSlots *hook.RemoteSlots `json:"machine_slots,omitempty"`
	// From the local slot files.
	ParallelBuilds int          `json:"parallel_builds"`
	SlotsInUse     int          `json:"slots_in_use"`
	Slots          []SlotHolder `json:"slots"`
	Warnings       []string     `json:"warnings,omitempty"`
}

// SlotHolder is a build slot in use and who holds it.
type SlotHolder struct {
	Slot       int    `json:"slot"`
	PID        int    `json:"pid"`
	Reason     string `json:"reason"`               // what the holder wrote, e.g. "building /gnu/store/...drv"
	Derivation string `json:"derivation,omitempty"` // the .drv of Reason, if any
}

// ClockBehindWarning is how far behind a machine's clock may be before status warns.
const ClockBehindWarning = 2 * time.Second

// StatusOptions say where the hook's state is and how long a machine may take.
type StatusOptions struct {
	StateDir string // $GUIX_STATE_DIRECTORY/offload
	StoreDir string
	Timeout  time.Duration // per machine; 0 means 10 s
	// Compression is $OFFLOAD_COMPRESSION: status connects as the hook does
	// (hook.SSHTarget).
	Compression string
	Now         func() time.Time
}

// GatherStatus asks every machine of ms (once per name and port) for its status, in
// parallel, one ssh round trip each, and reads the hook's state and slot files. A
// machine that answers ends its backoff (the state is written only then).
func GatherStatus(ctx context.Context, r *sshexec.Runner, ms []*machines.Machine, opt StatusOptions) []Status {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 10 * time.Second
	}
	todo := machines.Unique(ms)
	out := make([]Status, len(todo))
	var wg sync.WaitGroup
	for i, m := range todo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = machineStatus(ctx, r, m, opt)
		}()
	}
	wg.Wait()
	return out
}

// target is how status reaches m: as the hook does (hook.SSHTarget).
func (opt StatusOptions) target(m *machines.Machine) sshexec.Target {
	return hook.SSHTarget(hook.Config{Compression: opt.Compression}, m)
}

func machineStatus(ctx context.Context, r *sshexec.Runner, m *machines.Machine, opt StatusOptions) Status {
	st := Status{Machine: m.Display(), Name: m.Name, Port: m.Port, ParallelBuilds: m.ParallelBuilds, Slots: []SlotHolder{}}

	health, err := machines.State{Dir: opt.StateDir}.Health(m.StateKey())
	if err != nil {
		st.Warnings = append(st.Warnings, err.Error())
	}
	if !health.DownSince.IsZero() {
		t := health.DownSince
		st.DownSince = &t
	}
	if health.Failures > 0 {
		t := health.RetryAfter
		st.Failures, st.RetryAfter, st.LastError = health.Failures, &t, health.LastError
	}

	if mark, ok := placement.Drained(opt.StateDir, m.ID()); ok {
		st.Drained, st.DrainedSince = true, mark.String()
	}

	holders, err := SlotHolders(statedir.Layout{Dir: opt.StateDir}.Slots(m.ID()), max(m.ParallelBuilds, 1))
	if err != nil {
		st.Warnings = append(st.Warnings, err.Error())
	}
	st.Slots = append(st.Slots, holders...)
	st.SlotsInUse = len(holders)

	cctx, cancel := context.WithTimeout(ctx, opt.Timeout)
	defer cancel()
	facts, err := hook.AskMachine(cctx, r, opt.target(m), opt.StoreDir, true)
	now := opt.Now()
	if err == nil {
		st.fill(facts, now)
		// It answers: its backoff ends now, and the next request may use it.
		if err := (machines.State{Dir: opt.StateDir}).RecordSuccess(m.StateKey(), nil, now); err != nil {
			st.Warnings = append(st.Warnings, err.Error())
		} else {
			st.DownSince, st.Failures, st.RetryAfter, st.LastError = nil, 0, nil, ""
		}
		return st
	}
	if cctx.Err() != nil && ctx.Err() == nil {
		err = fmt.Errorf("no answer within %s", opt.Timeout) // err is the killed ssh's command line
	}
	st.Error = err.Error()
	return st
}

func (st *Status) fill(f hook.Facts, now time.Time) {
	st.Reachable = true
	st.Kernel, st.Architecture, st.HostName, st.GuixVersion = f.Kernel, f.Architecture, f.HostName, f.GuixVersion
	st.Cores, st.MachineSlots = f.Cores, f.Slots
	load := f.Load1
	st.Load1 = &load
	norm := machines.Probe{Load1: f.Load1, Cores: f.Cores}.NormalizedLoad()
	st.NormalizedLoad = &norm
	if f.FreeBytes >= 0 {
		free := f.FreeBytes
		st.FreeBytes = &free
		if free < machines.MinFreeBytes {
			st.Warnings = append(st.Warnings, fmt.Sprintf("only %s free in its store: the hook will not use it below %s", humanBytes(free), humanBytes(machines.MinFreeBytes)))
		}
	}
	off := math.Round(f.Time.Sub(now).Seconds()*1000) / 1000
	st.ClockOffset = &off
	if off < -ClockBehindWarning.Seconds() {
		st.Warnings = append(st.Warnings, fmt.Sprintf("its clock is %.1f s behind ours", -off))
	}
	if f.GuixVersion == "" {
		st.Warnings = append(st.Warnings, "guix does not run there (`guix --version` printed nothing)")
	}
}

// SlotHolders returns the slots of dir (0 .. n-1) that someone holds now, and what
// each holder wrote.
func SlotHolders(dir string, n int) ([]SlotHolder, error) {
	var out []SlotHolder
	var errs []error
	for i := range n {
		pid, reason, held, err := locking.Holder(filepath.Join(dir, strconv.Itoa(i)))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !held {
			continue
		}
		h := SlotHolder{Slot: i, PID: pid, Reason: reason}
		for _, w := range strings.Fields(reason) {
			if strings.HasSuffix(w, ".drv") {
				h.Derivation = w
			}
		}
		out = append(out, h)
	}
	return out, errors.Join(errs...)
}

// WriteStatusJSON writes the statuses as one JSON array (indented unless compact,
// which gives one line, for --watch).
func WriteStatusJSON(w io.Writer, sts []Status, compact bool) error {
	sts = append([]Status{}, sts...)
	for i := range sts {
		if sts[i].Slots == nil {
			sts[i].Slots = []SlotHolder{} // "slots": [] rather than null, for monitors
		}
	}
	enc := json.NewEncoder(w)
	if !compact {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(sts)
}

// WriteStatusTable writes an aligned table, one row per machine, then one line per
// slot holder, error and warning, each starting with the machine.
func WriteStatusTable(w io.Writer, sts []Status) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tSTATE\tKERNEL\tARCH\tHOST\tCORES\tLOAD\tFREE\tCLOCK\tGUIX\tSLOTS")
	for _, s := range sts {
		state := "up"
		if !s.Reachable {
			state = "DOWN"
			if s.DownSince != nil {
				state += " since " + s.DownSince.Local().Format("2006-01-02 15:04:05")
			}
		} else if s.RetryAfter != nil && s.Failures > 0 {
			state = "up (hook backs off until " + s.RetryAfter.Local().Format("15:04:05") + ")"
		}
		if s.Drained {
			state += ", drained"
		}
		cores, load, free, clock, guix := "-", "-", "-", "-", "-"
		if s.Reachable {
			cores = strconv.Itoa(s.Cores)
			if s.NormalizedLoad != nil {
				load = fmt.Sprintf("%.2f", *s.NormalizedLoad)
			}
			if s.FreeBytes != nil {
				free = humanBytes(*s.FreeBytes)
			}
			if s.ClockOffset != nil {
				clock = fmt.Sprintf("%+.1fs", *s.ClockOffset)
			}
			guix = shortVersion(s.GuixVersion)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\n", s.Machine, state, dash(s.Kernel), dash(s.Architecture),
			dash(s.HostName), cores, load, free, clock, guix, s.SlotsInUse, max(s.ParallelBuilds, 1))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range sts {
		if s.Drained {
			fmt.Fprintf(w, "%s: drained %s: no new builds go there (offload undrain)\n", s.Machine, s.DrainedSince)
		}
		for _, h := range s.Slots {
			fmt.Fprintf(w, "machine '%s': slot %d: process %d: %s\n", s.Machine, h.Slot, h.PID, h.Reason)
		}
		writeRemoteSlots(w, s.Machine, s.MachineSlots)
		// Each line names its machine once, first; what follows says only what is
		// wrong (the errors and the state file's last error are bare causes).
		if !s.Reachable {
			fmt.Fprintf(w, "machine '%s': unreachable: %s\n", s.Machine, oneLine(s.Error))
			if s.LastError != "" && s.LastError != s.Error {
				fmt.Fprintf(w, "machine '%s': the hook's last failure: %s\n", s.Machine, oneLine(s.LastError))
			}
		}
		for _, warn := range s.Warnings {
			fmt.Fprintf(w, "machine '%s': warning: %s\n", s.Machine, warn)
		}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortVersion turns "guix (GNU Guix) 1.4.0" into "1.4.0" and a commit into its
// first 12 digits; "" (guix did not run) into "none".
func shortVersion(v string) string {
	f := strings.Fields(v)
	if len(f) == 0 {
		return "none"
	}
	last := f[len(f)-1]
	if len(last) > 12 {
		last = last[:12]
	}
	return last
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// writeRemoteSlots writes status's lines about the machine's own build slots.
func writeRemoteSlots(w io.Writer, machine string, rs *hook.RemoteSlots) {
	if rs == nil {
		return
	}
	fmt.Fprintf(w, "machine '%s': %d build slot%s taken on the machine, by any host\n", machine, rs.Held, plural(rs.Held))
	for _, r := range rs.Holders {
		fmt.Fprintf(w, "machine '%s': machine slot %d: host %s, process %d: building %s\n", machine, r.Slot, orUnknown(r.Host), r.PID, orUnknown(r.Derivation))
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "?"
	}
	return s
}
