package hook

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"offload/sshexec"
)

// Facts is what factsScript reports.
type Facts struct {
	Kernel, Architecture, HostName, GuixVersion string // only when asked in full
	Cores                                       int
	Load1                                       float64
	FreeBytes                                   int64 // -1 unknown
	MemAvailable                                int64 // bytes; 0 unknown
	Time                                        time.Time
	// Slots is how many of the machine's own build slots someone holds, from this
	// host or another, and (only when asked in full) who; nil unknown (no flock on
	// the machine).
	Slots *RemoteSlots
}

// RemoteSlot is one of the machine's own build slots (remoteSlotScript) and what its
// holder wrote in it.
type RemoteSlot struct {
	Slot       int    `json:"slot"`
	Host       string `json:"host,omitempty"` // the host whose hook holds it
	PID        int    `json:"pid,omitempty"`  // that hook's process, on its host
	Derivation string `json:"derivation,omitempty"`
}

// RemoteSlots is what the machine said of its own build slots.
type RemoteSlots struct {
	Held    int          `json:"held"`    // taken, by any host
	Holders []RemoteSlot `json:"holders"` // who holds them (full mode only)
}

// AskMachine runs factsScript on t (full: with the status-only facts) and parses its
// answer.
// It counts every slot file of the machine's own build slots.
func AskMachine(ctx context.Context, r *sshexec.Runner, t sshexec.Target, storeDir string, full bool) (Facts, error) {
	return askFacts(ctx, r, t, storeDir, 0, full)
}

// askFacts is AskMachine counting the machine's own build slots 0 .. slots-1 (all of
// its slot files when slots is 0).
func askFacts(ctx context.Context, r *sshexec.Runner, t sshexec.Target, storeDir string, slots int, full bool) (Facts, error) {
	mode := "basic"
	if full {
		mode = "full"
	}
	n := ""
	if slots > 0 {
		n = strconv.Itoa(slots)
	}
	out, err := r.OutputRemote(ctx, t, []string{"sh", "-c", factsScript, "sh", storeDir, mode, n}, nil)
	if err != nil {
		return Facts{}, err
	}
	return ParseFacts(string(out))
}

// ParseFacts parses factsScript's output. Facts a machine could not give (no nproc, no
// df) stay zero or -1; a missing clock or load is an error, since the output is then not
// from the script.
func ParseFacts(out string) (Facts, error) {
	f := Facts{FreeBytes: -1}
	var haveTime, haveLoad bool
	for _, line := range strings.Split(out, "\n") {
		key, val, _ := strings.Cut(line, " ")
		val = strings.TrimSpace(val)
		switch key {
		case "kernel":
			f.Kernel = val
		case "arch":
			f.Architecture = val
		case "host":
			f.HostName = val
		case "cores":
			f.Cores, _ = strconv.Atoi(val)
		case "load":
			fs := strings.Fields(val)
			if len(fs) > 0 {
				if l, err := strconv.ParseFloat(fs[0], 64); err == nil && l >= 0 {
					f.Load1, haveLoad = l, true
				}
			}
		case "df":
			if fs := strings.Fields(val); len(fs) >= 4 {
				if kb, err := strconv.ParseInt(fs[3], 10, 64); err == nil {
					f.FreeBytes = kb * 1024
				}
			}
		case "mem":
			if fs := strings.Fields(val); len(fs) >= 2 {
				if kb, err := strconv.ParseInt(fs[1], 10, 64); err == nil && kb > 0 {
					f.MemAvailable = kb * 1024
				}
			}
		case "guix":
			f.GuixVersion = val
		case "rslots":
			if n, err := strconv.Atoi(val); err == nil && n >= 0 {
				f.slots().Held = n
			}
		case "rslot":
			if r, ok := parseRemoteSlot(val); ok {
				f.slots().Holders = append(f.slots().Holders, r)
			}
		case "time":
			sec, frac, _ := strings.Cut(val, ".")
			s, err := strconv.ParseInt(sec, 10, 64)
			if err != nil {
				return f, fmt.Errorf("unexpected clock %q in the machine's answer", val)
			}
			ns := int64(0)
			if len(frac) == 9 { // %N unsupported leaves "%N" or "N": whole seconds then
				ns, _ = strconv.ParseInt(frac, 10, 64)
			}
			f.Time, haveTime = time.Unix(s, ns), true
		}
	}
	if !haveTime || !haveLoad {
		return f, fmt.Errorf("unexpected answer to the probe %q", out)
	}
	return f, nil
}

func (f *Facts) slots() *RemoteSlots {
	if f.Slots == nil {
		f.Slots = &RemoteSlots{Holders: []RemoteSlot{}}
	}
	return f.Slots
}

// parseRemoteSlot parses "I HOST PID DRV" (remoteSlotScript's content after the slot's
// number); a slot whose holder wrote nothing yet has only its number.
func parseRemoteSlot(val string) (RemoteSlot, bool) {
	fs := strings.Fields(val)
	if len(fs) == 0 {
		return RemoteSlot{}, false
	}
	i, err := strconv.Atoi(fs[0])
	if err != nil || i < 0 {
		return RemoteSlot{}, false
	}
	r := RemoteSlot{Slot: i}
	if len(fs) > 1 {
		r.Host = fs[1]
	}
	if len(fs) > 2 {
		r.PID, _ = strconv.Atoi(fs[2])
	}
	if len(fs) > 3 {
		r.Derivation = fs[3]
	}
	return r, true
}
