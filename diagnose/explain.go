package diagnose

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"offload/hook"

	"offload/machines"
	"offload/storeio"
)

// GuixSystems are the system types Guix builds for (its supported and its
// cross-compiled systems): a request or a machine for another is a misspelling.
var GuixSystems = []string{
	"x86_64-linux", "i686-linux", "aarch64-linux", "armhf-linux", "powerpc64le-linux",
	"riscv64-linux", "mips64el-linux", "powerpc-linux", "i586-gnu", "x86_64-gnu",
}

// Explain writes to w what the hook would answer right now to a request for system
// with features, and why: each machine with whether it matches, then the hook's own
// reasoning (slots, backoff, load, disk, score, each candidate's estimated cost, the
// local machine's included), then the verdict. It takes no build slot. It returns the
// verdict for a daemon with a free local slot.
func Explain(ctx context.Context, h *hook.Hook, system string, features []string, w io.Writer) (string, error) {
	return ExplainDrv(ctx, h, system, features, "", w)
}

// ExplainDrv is Explain for the build of the .drv file drv ("": none), whose inputs
// the estimates then count.
func ExplainDrv(ctx context.Context, h *hook.Hook, system string, features []string, drv string, w io.Writer) (string, error) {
	loaded, err := machines.LoadWith(ctx, h.Conf.MachinesFile, hook.GuixLoadOptions(h.Conf, h.Runner))
	ms, warns := loaded.Machines, loaded.Warnings
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(w, "no machines file (%s): every request is declined\nverdict: decline\n", h.Conf.MachinesFile)
		return "decline", nil
	case err != nil:
		fmt.Fprintf(w, "%v\nthe hook ignores a broken machines file and declines\nverdict: decline\n", err)
		return "decline", nil
	}
	fmt.Fprintf(w, "request: system %s, features %s\n", system, featureList(features))
	if !slices.Contains(GuixSystems, system) {
		fmt.Fprintf(w, "warning: %q is not a system Guix knows (%s): no daemon asks for it; check its spelling\n", system, strings.Join(GuixSystems, ", "))
	}
	fmt.Fprintf(w, "machines file: %s (%d machine%s)\n", h.Conf.MachinesFile, len(ms), plural(len(ms)))
	for _, wn := range warns {
		fmt.Fprintf(w, "  %s\n", wn)
	}
	for _, m := range ms {
		if ok, why := m.Matches(system, features); ok {
			fmt.Fprintf(w, "  machine '%s': matches (speed %g, parallel-builds %d)\n", m.Display(), m.Speed, m.ParallelBuilds)
		} else {
			fmt.Fprintf(w, "  machine '%s': no match: %s\n", m.Display(), why)
		}
	}
	fmt.Fprintln(w, "reasoning:")
	req := hook.Request{WantsLocal: true, System: system, Features: features, Drv: "(explain)"}
	if drv != "" {
		req.Drv = drv
	}
	d := h.DecideDryRun(ctx, req, &prefixWriter{w: w, prefix: "  "})
	req.WantsLocal = false
	d0 := h.DecideDryRun(ctx, req, io.Discard)

	verdict := d.Answer
	if d.Machine != nil {
		verdict += " on machine '" + d.Machine.Display() + "'"
	}
	switch {
	case d.Local:
		verdict += " (building here is cheapest: the daemon builds it locally; with no free local slot it would go to the cheapest machine)"
	case d.Queued:
		verdict += " (its build slots are all taken: the build would wait in its queue for the first that frees)"
	case d.Answer == "decline" && d0.Answer == "postpone":
		verdict += " (every matching machine is down: the daemon builds locally; with no free local slot, or OFFLOAD_FALLBACK=wait, it would postpone)"
	case d.Answer == "decline":
		verdict += " (no machine matches: the daemon builds locally)"
	case d.Answer == "postpone" && h.Conf.Fallback == "wait":
		verdict += " (OFFLOAD_FALLBACK=wait: never build locally)"
	case d.Answer == "postpone":
		verdict += " (matching machines exist but none is available now; the daemon asks again every 5 s)"
	}
	fmt.Fprintf(w, "verdict: %s\n", verdict)
	return d.Answer, nil
}

func featureList(fs []string) string {
	if len(fs) == 0 {
		return "(none)"
	}
	return strings.Join(fs, ",")
}

// prefixWriter indents each line it is given (one Write per line, as the hook's
// messages are written).
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	_, err := io.WriteString(p.w, p.prefix+string(b))
	return len(b), err
}

// DrvRequest reads the system and required features of a .drv file.
func DrvRequest(path string) (system string, features []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	d, err := storeio.ParseDerivation(path, b)
	if err != nil {
		return "", nil, err
	}
	return d.System, d.Features(), nil
}
