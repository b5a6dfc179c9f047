package hook

import (
	"bytes"
	"io"
	"offload/sshexec"
	"sync"
)

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
