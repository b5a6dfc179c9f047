package hook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"offload/machines"
)

// Explain writes to w what the hook would answer right now to a request for system
// with features, and why: each machine with whether it matches, then the hook's own
// reasoning (slots, backoff, load, disk, score), then the verdict. It takes no build
// slot. It returns the verdict for a daemon with a free local slot.
func (h *Hook) Explain(ctx context.Context, system string, features []string, w io.Writer) (string, error) {
	h.init()
	h.DryRun = true
	ms, warns, err := machines.Load(h.Conf.MachinesFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(w, "no machines file (%s): every request is declined\nverdict: decline\n", h.Conf.MachinesFile)
		return "decline", nil
	case err != nil:
		fmt.Fprintf(w, "%v\nthe hook ignores a broken machines file and declines\nverdict: decline\n", err)
		return "decline", nil
	}
	fmt.Fprintf(w, "request: system %s, features %s\n", system, featureList(features))
	fmt.Fprintf(w, "machines file: %s (%d machine%s)\n", h.Conf.MachinesFile, len(ms), plural(len(ms)))
	for _, wn := range warns {
		fmt.Fprintf(w, "  %s\n", wn)
	}
	for _, m := range ms {
		if ok, why := m.Matches(system, features); ok {
			fmt.Fprintf(w, "  %s: matches (speed %g, parallel-builds %d)\n", m.Display(), m.Speed, m.ParallelBuilds)
		} else {
			fmt.Fprintf(w, "  %s: no match: %s\n", m.Display(), why)
		}
	}
	fmt.Fprintln(w, "reasoning:")
	out := h.Out
	h.Out = &prefixWriter{w: w, prefix: "  "}
	req := Request{WantsLocal: true, System: system, Features: features, Drv: "(explain)"}
	d := h.decide(ctx, req)
	h.Out = io.Discard
	req.WantsLocal = false
	d0 := h.decide(ctx, req)
	h.Out = out

	verdict := d.answer
	if d.machine != nil {
		verdict += " on machine '" + d.machine.Display() + "'"
	}
	switch {
	case d.answer == "decline" && d0.answer == "postpone":
		verdict += " (every matching machine is down: the daemon builds locally; with no free local slot, or OFFLOAD_FALLBACK=wait, it would postpone)"
	case d.answer == "decline":
		verdict += " (no machine matches: the daemon builds locally)"
	case d.answer == "postpone" && h.Conf.Fallback == "wait":
		verdict += " (OFFLOAD_FALLBACK=wait: never build locally)"
	case d.answer == "postpone":
		verdict += " (matching machines exist but none is available now; the daemon asks again every 5 s)"
	}
	fmt.Fprintf(w, "verdict: %s\n", verdict)
	return d.answer, nil
}

func featureList(fs []string) string {
	if len(fs) == 0 {
		return "(none)"
	}
	return strings.Join(fs, ",")
}

// prefixWriter indents each line it is given (one Write per line, as say does).
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	_, err := io.WriteString(p.w, p.prefix+strings.TrimPrefix(string(b), "offload: "))
	return len(b), err
}

// DrvRequest reads the system and required features of a .drv file (ATerm:
// Derive([outputs],[inputDrvs],[inputSrcs],"SYSTEM","BUILDER",[args],[env])).
func DrvRequest(path string) (system string, features []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	p := &aterm{s: string(b)}
	v, err := p.value()
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	d, ok := v.([]any)
	if !ok || len(d) != 7 || p.pos != len(p.s) && strings.TrimSpace(p.s[p.pos:]) != "" {
		return "", nil, fmt.Errorf("%s: not a derivation", path)
	}
	system, ok = d[3].(string)
	if !ok {
		return "", nil, fmt.Errorf("%s: not a derivation", path)
	}
	env, _ := d[6].([]any)
	for _, e := range env {
		kv, ok := e.([]any)
		if ok && len(kv) == 2 && kv[0] == "requiredSystemFeatures" {
			s, _ := kv[1].(string)
			features = strings.Fields(s)
		}
	}
	return system, features, nil
}

// aterm reads the small ATerm subset .drv files use: strings, lists [..], tuples
// (..) and the Derive constructor; lists and tuples both come back as []any.
type aterm struct {
	s   string
	pos int
}

func (p *aterm) value() (any, error) {
	if strings.HasPrefix(p.s[p.pos:], "Derive(") {
		p.pos += len("Derive")
	}
	if p.pos >= len(p.s) {
		return nil, errors.New("unexpected end of derivation")
	}
	switch c := p.s[p.pos]; c {
	case '"':
		return p.str()
	case '[', '(':
		end := map[byte]byte{'[': ']', '(': ')'}[c]
		p.pos++
		var items []any
		for {
			if p.pos >= len(p.s) {
				return nil, errors.New("unexpected end of derivation")
			}
			if p.s[p.pos] == end {
				p.pos++
				return items, nil
			}
			if len(items) > 0 {
				if p.s[p.pos] != ',' {
					return nil, fmt.Errorf("expected ',' at offset %d", p.pos)
				}
				p.pos++
			}
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			items = append(items, v)
		}
	default:
		return nil, fmt.Errorf("unexpected %q at offset %d", c, p.pos)
	}
}

func (p *aterm) str() (string, error) {
	var b strings.Builder
	for p.pos++; p.pos < len(p.s); p.pos++ {
		c := p.s[p.pos]
		switch c {
		case '"':
			p.pos++
			return b.String(), nil
		case '\\':
			p.pos++
			if p.pos >= len(p.s) {
				return "", errors.New("unexpected end of derivation")
			}
			switch e := p.s[p.pos]; e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			default:
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", errors.New("unterminated string in derivation")
}
