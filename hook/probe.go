package hook

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"offload/sshexec"
)

// factsScript is the one script that asks a machine about itself, in one round trip:
// for the hook's choice (load, cores, free space in the store, clock) and, with "full"
// as its second argument, for `offload status` (also kernel, architecture, host name,
// guix version; `guix --version` costs a process, so the hook does not ask for it).
// One "KEY VALUE" line per fact; the clock comes last, closest to the moment the answer
// reaches us. One line, so that --verbose traces show all of it.
const factsScript = `s=$1; if [ "$2" = full ]; then echo "kernel $(uname -s) $(uname -r)"; echo "arch $(uname -m)"; echo "host $(uname -n)"; echo "guix $(guix --version 2>/dev/null | head -n 1)"; fi; ` +
	`echo "cores $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null)"; echo "load $(cat /proc/loadavg 2>/dev/null)"; echo "df $(df -Pk "$s" 2>/dev/null | tail -n 1)"; echo "time $(date +%s.%N)"`

// Facts is what factsScript reports.
type Facts struct {
	Kernel, Architecture, HostName, GuixVersion string // only when asked in full
	Cores                                       int
	Load1                                       float64
	FreeBytes                                   int64 // -1 unknown
	Time                                        time.Time
}

// AskMachine runs factsScript on t (full: with the status-only facts) and parses its
// answer.
func AskMachine(ctx context.Context, r *sshexec.Runner, t sshexec.Target, storeDir string, full bool) (Facts, error) {
	mode := "basic"
	if full {
		mode = "full"
	}
	out, err := r.OutputRemote(ctx, t, []string{"sh", "-c", factsScript, "sh", storeDir, mode}, nil)
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
		case "guix":
			f.GuixVersion = val
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
