package placement

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"offload/machines"
	"offload/statedir"
)

// Holdings tells which of paths are valid on machine m, in one round trip.
type Holdings func(ctx context.Context, m *machines.Machine, paths []string) (valid map[string]bool, err error)

// DefaultHoldingsTTL is how long an answer of a machine about its holdings is reused:
// the daemon asks again about a postponed build every 5 s, and a machine gains items
// only by the offloads that go there.
const DefaultHoldingsTTL = 5 * time.Second

// maxCached bounds the answers kept per machine: a few builds in flight at once.
const maxCached = 8

// Cache keeps the answers of a Holdings for TTL, per machine and set of paths, in the
// state directory, so that the hook processes of one daemon share them.
type Cache struct {
	Dir string // $GUIX_STATE_DIRECTORY/offload
	TTL time.Duration
	Now func() time.Time
}

type cachedHoldings struct {
	Entries []cachedEntry `json:"entries"`
}

type cachedEntry struct {
	Key   string    `json:"key"` // hash of the sorted paths asked about
	Time  time.Time `json:"time"`
	Valid []string  `json:"valid"`
}

// Wrap returns ask behind the cache. A failed question is not cached.
func (c Cache) Wrap(ask Holdings) Holdings {
	return func(ctx context.Context, m *machines.Machine, paths []string) (map[string]bool, error) {
		file := statedir.Layout{Dir: c.Dir}.Holdings(m.ID())
		key := setKey(paths)
		now := c.now()
		var ch cachedHoldings
		if b, err := os.ReadFile(file); err == nil && json.Unmarshal(b, &ch) == nil {
			for _, e := range ch.Entries {
				if age := now.Sub(e.Time); e.Key == key && age >= 0 && age <= c.ttl() {
					valid := make(map[string]bool, len(e.Valid))
					for _, p := range e.Valid {
						valid[p] = true
					}
					return valid, nil
				}
			}
		}
		valid, err := ask(ctx, m, paths)
		if err != nil {
			return nil, err
		}
		e := cachedEntry{Key: key, Time: now}
		for p, ok := range valid {
			if ok {
				e.Valid = append(e.Valid, p)
			}
		}
		slices.Sort(e.Valid)
		// Only fresh entries stay, the newest last; losing a concurrent writer's
		// entry costs one more question, so no lock is taken.
		keep := []cachedEntry{}
		for _, old := range ch.Entries {
			if age := now.Sub(old.Time); old.Key != key && age >= 0 && age <= c.ttl() {
				keep = append(keep, old)
			}
		}
		ch.Entries = lastN(append(keep, e), maxCached)
		if os.MkdirAll(filepath.Dir(file), 0o700) == nil {
			writeJSON(file, ch) // a cache that cannot be written only costs questions
		}
		return valid, nil
	}
}

func (c Cache) ttl() time.Duration {
	if c.TTL <= 0 {
		return DefaultHoldingsTTL
	}
	return c.TTL
}

func (c Cache) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

func setKey(paths []string) string {
	s := slices.Clone(paths)
	slices.Sort(s)
	sum := sha256.Sum256([]byte(strings.Join(slices.Compact(s), "\n")))
	return hex.EncodeToString(sum[:16])
}
