package storeio

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	narMagic = "nix-archive-1"
	// maxNameLen is NAME_MAX: no file system we restore into holds a longer name.
	maxNameLen = 255
	// maxTargetLen is PATH_MAX minus the terminating NUL.
	maxTargetLen = 4095
	// maxDepth bounds directory nesting: each level holds a directory descriptor open
	// while restoring. Real store items stay far below it.
	maxDepth = 256
	// copyBufSize is the buffer file contents stream through.
	copyBufSize = 256 << 10
)

// Dump writes the nar of path to w, byte-identical to `nix-store --dump`: directory
// entries sorted by name, regular files executable when the owner may execute them,
// symlinks stored, never followed. It streams; only a bounded buffer is held.
func Dump(w io.Writer, path string) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	if err := dumpNar(&wireWriter{w: bw}, path, make([]byte, copyBufSize)); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	return nil
}

func dumpNar(ww *wireWriter, path string, buf []byte) error {
	if err := ww.writeString(narMagic); err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	return dumpNode(ww, path, buf)
}

func dumpNode(ww *wireWriter, path string, buf []byte) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	if err := ww.writeStrings("(", "type"); err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		if err := dumpRegular(ww, path, mode, buf); err != nil {
			return err
		}
	case mode&os.ModeSymlink != 0:
		target, err := os.Readlink(path)
		if err != nil {
			return fmt.Errorf("dump: %w", err)
		}
		if err := ww.writeStrings("symlink", "target", target); err != nil {
			return fmt.Errorf("dump %s: %w", path, err)
		}
	case mode.IsDir():
		if err := dumpDir(ww, path, buf); err != nil {
			return err
		}
	default:
		return fmt.Errorf("dump %s: unsupported file type %v", path, mode.Type())
	}
	if err := ww.writeString(")"); err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	return nil
}

func dumpRegular(ww *wireWriter, path string, mode os.FileMode, buf []byte) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	defer f.Close()
	// Size from the open file, not the earlier lstat: what we write must match it.
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("dump %s: file changed type during dump", path)
	}
	toks := []string{"regular"}
	if fi.Mode()&0o100 != 0 {
		toks = append(toks, "executable", "")
	}
	toks = append(toks, "contents")
	if err := ww.writeStrings(toks...); err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	size := fi.Size()
	if err := ww.writeInt(uint64(size)); err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	n, err := io.CopyBuffer(writerOnly{ww}, io.LimitReader(f, size), buf)
	if err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	if n != size {
		return fmt.Errorf("dump %s: file shrank from %d to %d bytes during dump", path, size, n)
	}
	if err := ww.writePadding(uint64(size)); err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	return nil
}

func dumpDir(ww *wireWriter, path string, buf []byte) error {
	d, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	slices.Sort(names) // byte order, as Nix sorts
	if err := ww.writeString("directory"); err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	for _, name := range names {
		if err := ww.writeStrings("entry", "(", "name", name, "node"); err != nil {
			return fmt.Errorf("dump %s: %w", path, err)
		}
		if err := dumpNode(ww, filepath.Join(path, name), buf); err != nil {
			return err
		}
		if err := ww.writeString(")"); err != nil {
			return fmt.Errorf("dump %s: %w", path, err)
		}
	}
	return nil
}

// narSink receives the nodes of a nar as the parser reads them. dir values are
// directory descriptors for the restoring sink and meaningless for others.
type narSink interface {
	regular(dir int, name string, executable bool, contents *contentReader) error
	symlink(dir int, name, target string) error
	enterDir(dir int, name string) (int, error)
	// leaveDir is called once for every successful enterDir; ok is false on error.
	leaveDir(parent int, name string, dir int, ok bool) error
}

// narParser reads exactly one nar from w and passes its nodes to sink.
type narParser struct {
	w     *wireReader
	sink  narSink
	names []string      // path from the root to the current node
	cr    contentReader // reused for every regular file
}

// rel is the path of the node being read inside the nar, built only for errors.
func (p *narParser) rel() string {
	return "/" + strings.Join(p.names, "/")
}

func (p *narParser) bad(format string, args ...any) error {
	return fmt.Errorf("%w: nar entry %q: %s", ErrInvalidArchive, p.rel(), fmt.Sprintf(format, args...))
}

func (p *narParser) wrap(err error) error {
	return fmt.Errorf("nar entry %q: %w", p.rel(), err)
}

func (p *narParser) parse(rootDir int, rootName string) error {
	magic, err := p.w.readBytes(len(narMagic))
	if err != nil {
		return fmt.Errorf("reading nar header: %w", err)
	}
	if string(magic) != narMagic {
		return fmt.Errorf("%w: not a nar (bad magic %q)", ErrInvalidArchive, magic)
	}
	return p.node(rootDir, rootName, 0)
}

func (p *narParser) node(dir int, name string, depth int) error {
	if err := p.w.expect("("); err != nil {
		return p.wrap(err)
	}
	if err := p.w.expect("type"); err != nil {
		return p.wrap(err)
	}
	typ, err := p.w.readBytes(len("directory"))
	if err != nil {
		return p.wrap(err)
	}
	switch string(typ) {
	case "regular":
		err = p.regular(dir, name)
	case "symlink":
		err = p.symlink(dir, name)
	case "directory":
		return p.directory(dir, name, depth) // entries consume the closing ")"
	default:
		return p.bad("unknown file type %q", typ)
	}
	if err != nil {
		return err
	}
	if err := p.w.expect(")"); err != nil {
		return p.wrap(err)
	}
	return nil
}

// regular reads a regular file's body: ["executable" ""] "contents" STRING, handing
// the contents to the sink as a stream.
func (p *narParser) regular(dir int, name string) error {
	tok, err := p.w.readBytes(len("executable"))
	if err != nil {
		return p.wrap(err)
	}
	exec := false
	if string(tok) == "executable" {
		exec = true
		if err := p.w.expect(""); err != nil {
			return p.wrap(err)
		}
		if tok, err = p.w.readBytes(len("contents")); err != nil {
			return p.wrap(err)
		}
	}
	if string(tok) != "contents" {
		return p.bad("unexpected token %q in regular file", tok)
	}
	size, err := p.w.readInt()
	if err != nil {
		return p.wrap(err)
	}
	if size > 1<<62 {
		return p.bad("file size %d too large", size)
	}
	cr := &p.cr
	*cr = contentReader{w: p.w, remaining: int64(size)}
	if err := p.sink.regular(dir, name, exec, cr); err != nil {
		return p.wrap(err)
	}
	if cr.remaining != 0 { // the sink must consume the contents
		return p.bad("contents not consumed")
	}
	if err := p.w.padding(size); err != nil {
		return p.wrap(err)
	}
	return nil
}

// symlink reads a symlink's body: "target" STRING, never empty, without NUL.
func (p *narParser) symlink(dir int, name string) error {
	if err := p.w.expect("target"); err != nil {
		return p.wrap(err)
	}
	target, err := p.w.readString(maxTargetLen)
	if err != nil {
		return p.wrap(fmt.Errorf("symlink target: %w", err))
	}
	if target == "" || strings.IndexByte(target, 0) >= 0 {
		return p.bad("invalid symlink target %q", target)
	}
	if err := p.sink.symlink(dir, name, target); err != nil {
		return p.wrap(err)
	}
	return nil
}

// directory reads a directory's entries and its closing ")", at most maxDepth deep.
func (p *narParser) directory(dir int, name string, depth int) error {
	if depth >= maxDepth {
		return p.bad("directories nested deeper than %d", maxDepth)
	}
	child, err := p.sink.enterDir(dir, name)
	if err != nil {
		return p.wrap(err)
	}
	err = p.entries(child, depth)
	if lerr := p.sink.leaveDir(dir, name, child, err == nil); err == nil && lerr != nil {
		err = p.wrap(lerr)
	}
	return err
}

// entries reads a directory's entries and its closing ")".
func (p *narParser) entries(dir int, depth int) error {
	prev := ""
	for i := 0; ; i++ {
		tok, err := p.w.readBytes(len("entry"))
		if err != nil {
			return p.wrap(err)
		}
		if string(tok) == ")" {
			return nil
		}
		if string(tok) != "entry" {
			return p.bad("unexpected token %q in directory", tok)
		}
		if err := p.w.expect("("); err != nil {
			return p.wrap(err)
		}
		if err := p.w.expect("name"); err != nil {
			return p.wrap(err)
		}
		name, err := p.w.readString(maxNameLen)
		if err != nil {
			return p.wrap(fmt.Errorf("entry name: %w", err))
		}
		if err := checkEntryName(name); err != nil {
			return p.bad("%v", err)
		}
		if i > 0 && name <= prev {
			if name == prev {
				return p.bad("duplicate entry %q", name)
			}
			return p.bad("entry %q after %q: entries not sorted", name, prev)
		}
		prev = name
		if err := p.w.expect("node"); err != nil {
			return p.wrap(err)
		}
		p.names = append(p.names, name)
		if err := p.node(dir, name, depth+1); err != nil {
			return err
		}
		if err := p.w.expect(")"); err != nil {
			return p.wrap(err)
		}
		p.names = p.names[:len(p.names)-1]
	}
}

func checkEntryName(name string) error {
	switch {
	case name == "":
		return errors.New("empty entry name")
	case name == "." || name == "..":
		return fmt.Errorf("entry name %q", name)
	case strings.IndexByte(name, '/') >= 0:
		return fmt.Errorf("entry name %q contains '/'", name)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("entry name %q contains NUL", name)
	}
	return nil
}

// discardSink checks a nar's structure and drops its contents.
type discardSink struct{ buf []byte }

func (s *discardSink) regular(_ int, _ string, _ bool, c *contentReader) error {
	_, err := io.CopyBuffer(io.Discard, c, s.buf)
	return err
}
func (discardSink) symlink(int, string, string) error     { return nil }
func (discardSink) enterDir(int, string) (int, error)     { return -1, nil }
func (discardSink) leaveDir(int, string, int, bool) error { return nil }

// fsSink creates the nodes with *at system calls relative to directory descriptors it
// opened itself with O_NOFOLLOW, and creates every file with O_EXCL: it never follows a
// symlink and never writes to anything it did not just create.
type fsSink struct {
	rootDir     int
	rootCreated bool
	buf         []byte
}

var mtime1 = []unix.Timespec{{Sec: 0, Nsec: unix.UTIME_OMIT}, {Sec: 1}}

func (s *fsSink) created(dir int) {
	if dir == s.rootDir {
		s.rootCreated = true
	}
}

func (s *fsSink) regular(dir int, name string, exec bool, c *contentReader) error {
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	s.created(dir)
	// Raw descriptor writes: an *os.File costs an allocation and a poller registration
	// per file, which shows with many small files.
	err = s.copyTo(fd, c)
	mode := uint32(0o444)
	if exec {
		mode = 0o555
	}
	if err == nil {
		if err = unix.Fchmod(fd, mode); err != nil {
			err = fmt.Errorf("chmod %s: %w", name, err)
		}
	}
	if err == nil {
		if err = unix.UtimesNanoAt(dir, name, mtime1, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			err = fmt.Errorf("set mtime of %s: %w", name, err)
		}
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = fmt.Errorf("write %s: %w", name, cerr)
	}
	return err
}

func (s *fsSink) copyTo(fd int, c *contentReader) error {
	for c.remaining > 0 {
		n, err := c.Read(s.buf)
		for b := s.buf[:n]; len(b) > 0; {
			m, werr := unix.Write(fd, b)
			if werr == unix.EINTR {
				continue
			}
			if werr != nil {
				return fmt.Errorf("write: %w", werr)
			}
			b = b[m:]
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *fsSink) symlink(dir int, name, target string) error {
	if err := unix.Symlinkat(target, dir, name); err != nil {
		return fmt.Errorf("symlink %s: %w", name, err)
	}
	s.created(dir)
	// Best effort, as Nix does: not every file system sets a symlink's times.
	_ = unix.UtimesNanoAt(dir, name, mtime1, unix.AT_SYMLINK_NOFOLLOW)
	return nil
}

func (s *fsSink) enterDir(dir int, name string) (int, error) {
	if err := unix.Mkdirat(dir, name, 0o700); err != nil {
		return -1, fmt.Errorf("mkdir %s: %w", name, err)
	}
	s.created(dir)
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", name, err)
	}
	return fd, nil
}

func (s *fsSink) leaveDir(parent int, name string, fd int, ok bool) error {
	defer unix.Close(fd)
	if !ok {
		return nil
	}
	if err := unix.Fchmod(fd, 0o555); err != nil {
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	if err := unix.UtimesNanoAt(parent, name, mtime1, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set mtime of %s: %w", name, err)
	}
	return nil
}

// restoreNar restores exactly one nar from w at path, which must not exist. On error
// it removes whatever it created.
func restoreNar(w *wireReader, path string, buf []byte) error {
	parent, name := filepath.Split(filepath.Clean(path))
	if parent == "" {
		parent = "."
	}
	if name == "" || name == "." || name == ".." || name == "/" {
		return fmt.Errorf("restore: invalid target %q", path)
	}
	pfd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("restore %s: open parent: %w", path, err)
	}
	defer unix.Close(pfd)
	sink := &fsSink{rootDir: pfd, buf: buf}
	p := narParser{w: w, sink: sink}
	if err := p.parse(pfd, name); err != nil {
		if sink.rootCreated {
			if rerr := removeTree(path); rerr != nil {
				return fmt.Errorf("restore %s: %w (and removing it: %v)", path, err, rerr)
			}
		}
		return fmt.Errorf("restore %s: %w", path, err)
	}
	return nil
}

// Restore reads one nar from r and restores it at dir, which must not exist. The nar
// must be all of r: trailing data is refused. On any error nothing remains at dir.
// Regular files get mode 0444 or 0555, directories 0555, everything mtime 1.
func Restore(r io.Reader, dir string) error {
	br := bufio.NewReaderSize(r, 64<<10)
	if err := restoreNar(&wireReader{r: br}, dir, make([]byte, copyBufSize)); err != nil {
		return err
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if rerr := removeTree(dir); rerr != nil {
			return fmt.Errorf("restore %s: removing it: %w", dir, rerr)
		}
		if err != nil {
			return fmt.Errorf("restore %s: %w", dir, err)
		}
		return fmt.Errorf("restore %s: %w: trailing data after the nar", dir, ErrInvalidArchive)
	}
	return nil
}

// removeTree removes path and everything under it, making read-only directories
// writable first (Restore makes them 0555). It never follows symlinks.
func removeTree(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		_ = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				_ = os.Chmod(p, 0o700)
			}
			return nil
		})
	}
	return os.RemoveAll(path)
}
