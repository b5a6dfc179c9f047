package main

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// startCosts are what each `guix` sub-command of the offload flow costs before it does
// any work on the real Guix bench (2 cores, loopback; ../shared/tools/real-guix/README
// and WORKER-PROTOCOL.md §7): mostly a Guile start. With FAKEGUIX_COSTS=guix, fakeguix
// sleeps that long before it works, so that benchmarks weigh the hook's calls as Guix
// would; tests leave it off. The import's figure is export|import (540 ms) minus the
// export; repl is a Guile start without the archive modules.
var startCosts = map[string]time.Duration{
	"archive --missing": 170 * time.Millisecond,
	"archive --export":  322 * time.Millisecond, // includes the signing helper
	"archive --import":  220 * time.Millisecond,
	"build":             157 * time.Millisecond,
	"repl":              150 * time.Millisecond,
	"--version":         134 * time.Millisecond,
}

// otherCost is any other sub-command's: a bare Guile start, as `guix --version`.
const otherCost = 134 * time.Millisecond

// costKey names the sub-command of args as startCosts does.
func costKey(args []string) string {
	if len(args) == 0 {
		return ""
	}
	if args[0] == "archive" {
		for _, a := range args[1:] {
			switch a {
			case "--missing", "--export", "--import":
				return "archive " + a
			}
		}
	}
	if args[0] == "-V" {
		return "--version"
	}
	return args[0]
}

// payStartCost sleeps what the sub-command costs when FAKEGUIX_COSTS is "guix"; with
// "dry" it does not sleep. Either way, when FAKEGUIX_COSTS_LOG names a file, it appends
// "SUB-COMMAND DELAY" to it, so a test can see that the setting arrived.
func payStartCost(args []string, getenv func(string) string) {
	mode := getenv("FAKEGUIX_COSTS")
	if mode != "guix" && mode != "dry" {
		return
	}
	key := costKey(args)
	d, ok := startCosts[key]
	if !ok {
		d = otherCost
	}
	if log := getenv("FAKEGUIX_COSTS_LOG"); log != "" {
		if f, err := os.OpenFile(log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err == nil {
			fmt.Fprintf(f, "%s %s\n", strings.TrimSpace(key), d)
			f.Close()
		}
	}
	if mode == "guix" {
		time.Sleep(d)
	}
}
