package workerproto

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Options are the settings SetOptions gives the connection's worker. The zero value asks
// for silence (verbosity 0), no substitutes, no nested offloading, and leaves timeouts to
// the daemon's command-line defaults.
type Options struct {
	KeepFailed      bool
	KeepGoing       bool
	TryFallback     bool
	Verbosity       int  // 0 error .. 5 vomit: daemon messages up to this level are sent to Log
	UseBuildHook    bool // the daemon may offload again through its own hook
	BuildVerbosity  int  // build logs are sent iff Verbosity >= BuildVerbosity
	LogType         int  // 0 pretty, 1 escapes, 2 flat
	PrintBuildTrace bool // "@ build-started …" lines
	UseSubstitutes  bool
	// Overrides are name/value settings, sent in this order. With 0x163 the build
	// timeouts exist only here (SetMaxSilentTime, SetTimeout). A value the daemon cannot
	// parse makes it close the connection.
	Overrides []Pair
}

// Set sets the override name to value, replacing an earlier value of name.
func (o *Options) Set(name, value string) {
	if i := slices.IndexFunc(o.Overrides, func(p Pair) bool { return p.Name == name }); i >= 0 {
		o.Overrides[i].Value = value
		return
	}
	o.Overrides = append(o.Overrides, Pair{name, value})
}

func (o *Options) get(name string) (string, bool) {
	if i := slices.IndexFunc(o.Overrides, func(p Pair) bool { return p.Name == name }); i >= 0 {
		return o.Overrides[i].Value, true
	}
	return "", false
}

// SetMaxSilentTime sets build-max-silent-time: a build that prints nothing for d fails
// with status 101. 0 means no limit; a fraction of a second counts as a whole one.
func (o *Options) SetMaxSilentTime(d time.Duration) { o.Set("build-max-silent-time", seconds(d)) }

// SetTimeout sets build-timeout: a build that runs longer than d fails with status 101.
// 0 means no limit.
func (o *Options) SetTimeout(d time.Duration) { o.Set("build-timeout", seconds(d)) }

func seconds(d time.Duration) string {
	if d <= 0 {
		return "0"
	}
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// SetOptions sends o, framed for the daemon's protocol minor (§4.10). The settings hold
// for the rest of the connection.
func (c *Conn) SetOptions(ctx context.Context, o Options) error {
	return c.call(ctx, "set-options", 0, func(*stats) error {
		args, err := c.optionArgs(o)
		if err != nil {
			return &localError{err} // nothing was sent
		}
		return c.request(nil, opSetOptions, args)
	})
}

// optionArgs checks o against the daemon's minor before anything is written, and returns
// the writer of the fields.
func (c *Conn) optionArgs(o Options) (func() error, error) {
	for _, v := range []int{o.Verbosity, o.BuildVerbosity, o.LogType} {
		if v < 0 || int64(v) > 1<<32-1 {
			return nil, fmt.Errorf("option value %d out of range", v)
		}
	}
	// Before minor 0x61 the daemon took max jobs, max silent time and cores as fields;
	// take them from the overrides, which it learnt to read only at minor 12.
	legacy := map[string]uint32{}
	if c.minor < 0x61 {
		for _, name := range []string{"build-max-jobs", "build-max-silent-time", "build-cores"} {
			if v, ok := o.get(name); ok {
				n, err := strconv.ParseUint(v, 10, 32)
				if err != nil {
					return nil, fmt.Errorf("%s=%q is not a number", name, v)
				}
				legacy[name] = uint32(n)
			}
		}
	}
	if c.minor < 12 {
		for _, p := range o.Overrides {
			if _, ok := legacy[p.Name]; !ok {
				return nil, fmt.Errorf("daemon protocol %#x cannot take setting %s", c.version, p.Name)
			}
		}
	}
	if _, ok := legacy["build-max-jobs"]; !ok {
		legacy["build-max-jobs"] = 1
	}
	return func() error {
		fields := []uint32{b2i(o.KeepFailed), b2i(o.KeepGoing), b2i(o.TryFallback), uint32(o.Verbosity)}
		if c.minor < 0x61 {
			fields = append(fields, legacy["build-max-jobs"], legacy["build-max-silent-time"])
		}
		fields = append(fields, b2i(o.UseBuildHook), uint32(o.BuildVerbosity), uint32(o.LogType), b2i(o.PrintBuildTrace))
		if c.minor < 0x61 {
			fields = append(fields, legacy["build-cores"])
		}
		fields = append(fields, b2i(o.UseSubstitutes))
		for _, v := range fields {
			if err := WriteInt(c.w, v); err != nil {
				return err
			}
		}
		if c.minor >= 12 {
			return WritePairs(c.w, o.Overrides)
		}
		return nil
	}, nil
}

func b2i(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}
