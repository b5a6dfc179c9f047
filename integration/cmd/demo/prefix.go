package main

import (
	"bytes"
	"fmt"
	"io"
	"sync"
)

// prefixed writes each line written to it to out with a prefix, for the output of the
// hook and the commands. A write need not end a line, nor hold one line only (a
// command's output reaches it in pipe-sized pieces, which cut lines anywhere): a
// partial line waits for its end, or for Flush.
type prefixed struct {
	prefix string
	out    io.Writer

	mu      sync.Mutex
	partial []byte
}

func newPrefixed(out io.Writer, prefix string) *prefixed {
	return &prefixed{prefix: prefix, out: out}
}

func (p *prefixed) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		if _, err := fmt.Fprintf(p.out, "%s%s\n", p.prefix, p.partial[:i]); err != nil {
			return len(b), err
		}
		p.partial = p.partial[i+1:]
	}
	return len(b), nil
}

// Flush writes a last line that did not end with a newline.
func (p *prefixed) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.partial) > 0 {
		fmt.Fprintf(p.out, "%s%s\n", p.prefix, p.partial)
		p.partial = nil
	}
}
