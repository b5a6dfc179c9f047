package placement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"offload/locking"
	"offload/statedir"
)

// Bounds of a machine's history: it stays a few kilobytes however many builds went
// there, and old behaviour fades as new samples come.
const (
	MaxNames     = 512 // derivation names per machine; the least recently built go first
	MaxSamples   = 8   // build times per name, and overheads per machine
	MaxTransfers = 16  // uploads per machine
	// MinSampleBytes is the smallest upload that counts towards a link's throughput:
	// below it the time is mostly the round trips' and the import's start, not the
	// link's (on the test farm, 1 MiB in 0.3 s).
	MinSampleBytes = 4 << 20
)

// History is what placement learned of one machine from the offloads that went there.
type History struct {
	Transfers []Transfer `json:"transfers,omitempty"`
	// Overheads are the seconds of each offload that were neither sending nor
	// building: ssh, the daemon's round trips, the remote slot, the outputs' return.
	Overheads []float64          `json:"overheads,omitempty"`
	Builds    map[string]*Builds `json:"builds,omitempty"` // by DrvName
	// Streams are the big uploads by method (StreamImport, StreamAdd), so that the
	// hook sends a big source item the way that was faster to this machine.
	Streams map[string][]Transfer `json:"streams,omitempty"`
}

// Ways a big input goes up (Stream.Method).
const (
	// StreamImport: a signed bundle streamed into the machine's `guix archive
	// --import`, compressed unless the machine has no decompressor.
	StreamImport = "import"
	// StreamAdd: a source item's nar, uncompressed, read by the machine's daemon
	// itself (AddToStore): no Guile start there, but the daemon holds the whole nar
	// before it writes it, and nothing is compressed.
	StreamAdd = "add-to-store"
)

// Stream is one upload of an offload and the way it went.
type Stream struct {
	Method string
	Bytes  int64 // uncompressed
	Send   time.Duration
}

// StreamRate is the learned uncompressed bytes per second of the uploads by method
// (0: none learned).
func (h History) StreamRate(method string) float64 {
	return rate(h.Streams[method])
}

// Transfer is one upload: its uncompressed size and how long it took.
type Transfer struct {
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// Builds are the recent builds of one derivation name on one machine.
type Builds struct {
	// Work is each build's seconds times the machine's speed: seconds on a machine of
	// speed 1, so that a time learned on one machine says something of the others.
	Work      []float64 `json:"work"`
	PeakBytes int64     `json:"peak_bytes,omitempty"` // the most memory a build took; 0 unknown
	Last      time.Time `json:"last"`
}

// Offload is what one successful offload tells of its machine.
type Offload struct {
	Name      string  // DrvName of the derivation
	Speed     float64 // the machine's speed field
	SentBytes int64   // uncompressed bytes sent; 0 when it had everything
	Send      time.Duration
	Build     time.Duration // from the start of the build on the machine to its end
	Total     time.Duration // the whole offload, from the session's start to the outputs' return
	PeakBytes int64         // the build's peak memory; 0 unknown
	Streams   []Stream      // its uploads, by method
}

// Throughput is the link's learned bytes per second (0: nothing learned).
func (h History) Throughput() float64 {
	return rate(h.Transfers)
}

// rate is the bytes per second of transfers taken together (0: none).
func rate(ts []Transfer) float64 {
	var b int64
	var s float64
	for _, t := range ts {
		b += t.Bytes
		s += t.Seconds
	}
	if b == 0 || s <= 0 {
		return 0
	}
	return float64(b) / s
}

// Overhead is the learned fixed cost of an offload (ok false: nothing learned).
func (h History) Overhead() (time.Duration, bool) {
	if len(h.Overheads) == 0 {
		return 0, false
	}
	return seconds(median(h.Overheads)), true
}

// Store reads and updates the histories under a state directory. Many hook processes
// share the files: a writer takes the file's lock and replaces it by rename.
type Store struct {
	Dir string // $GUIX_STATE_DIRECTORY/offload
	Now func() time.Time
}

func (s Store) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// Load returns what was learned of machine id (by Machine.ID); nothing learned yet is
// an empty History. A damaged file is an error, and the caller goes on without it.
func (s Store) Load(id string) (History, error) {
	var h History
	path := statedir.Layout{Dir: s.Dir}.Learned(id)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return h, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &h)
	}
	if err != nil {
		return History{}, fmt.Errorf("read learned history %s: %w", path, err)
	}
	return h, nil
}

// Record adds one offload to machine id's history, within the bounds.
func (s Store) Record(id string, o Offload) error {
	path := statedir.Layout{Dir: s.Dir}.Learned(id)
	return updateJSON(path, func(h *History) {
		h.add(o, s.now())
	})
}

func (h *History) add(o Offload, now time.Time) {
	if o.SentBytes >= MinSampleBytes && o.Send > 0 {
		h.Transfers = lastN(append(h.Transfers, Transfer{Bytes: o.SentBytes, Seconds: o.Send.Seconds()}), MaxTransfers)
	}
	for _, st := range o.Streams {
		if st.Bytes < MinSampleBytes || st.Send <= 0 {
			continue
		}
		if h.Streams == nil {
			h.Streams = map[string][]Transfer{}
		}
		h.Streams[st.Method] = lastN(append(h.Streams[st.Method], Transfer{Bytes: st.Bytes, Seconds: st.Send.Seconds()}), MaxSamples)
	}
	if o.Total > 0 {
		over := max(o.Total-o.Send-o.Build, 0)
		h.Overheads = lastN(append(h.Overheads, over.Seconds()), MaxSamples)
	}
	if o.Name == "" || o.Build <= 0 {
		return
	}
	if h.Builds == nil {
		h.Builds = map[string]*Builds{}
	}
	b := h.Builds[o.Name]
	if b == nil {
		b = &Builds{}
		h.Builds[o.Name] = b
	}
	b.Work = lastN(append(b.Work, o.Build.Seconds()*speedOf(o.Speed)), MaxSamples)
	b.PeakBytes = max(b.PeakBytes, o.PeakBytes)
	b.Last = now
	for len(h.Builds) > MaxNames {
		oldest := ""
		for name, b := range h.Builds {
			if oldest == "" || b.Last.Before(h.Builds[oldest].Last) {
				oldest = name
			}
		}
		delete(h.Builds, oldest)
	}
}

// updateJSON changes the JSON file at path under its lock and replaces it atomically;
// a damaged file starts afresh (it is only learned data).
func updateJSON[T any](path string, change func(*T)) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lock, err := locking.Acquire(ctx, path+".lock", "updating what placement learned")
	if err != nil {
		return err
	}
	defer lock.Release()
	var v T
	if b, err := os.ReadFile(path); err == nil {
		if json.Unmarshal(b, &v) != nil {
			var zero T
			v = zero
		}
	}
	change(&v)
	return writeJSON(path, v)
}

// writeJSON replaces path with v's JSON by rename, so that readers never see half.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return statedir.WriteAtomic(path, append(b, '\n'))
}

func lastN[T any](s []T, n int) []T {
	if len(s) > n {
		s = slices.Clone(s[len(s)-n:])
	}
	return s
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// speedOf is a speed field as a divisor: never zero or negative.
func speedOf(speed float64) float64 {
	if speed != speed || speed <= 0.01 {
		return 0.01
	}
	return speed
}
