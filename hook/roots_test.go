package hook

import (
	"os"
	"reflect"
	"strconv"
	"testing"
)

func TestStaleRoots(t *testing.T) {
	h := rootHost()
	alive := func(pid int) bool { return pid == 100 }
	names := []string{
		h + "-100-abc-t-ok.drv",  // live process: kept
		h + "-200-abc-t-ok.drv",  // dead: stale
		h + "-200-abc-t-ok",      // dead: stale
		h + "-200-abc-t-ok-1",    // dead: stale (second output's root)
		"otherhost-200-abc-t-ok", // another host's: not ours to judge
		h + "-x-abc",             // not our pattern
		h + "-",                  // no pid
	}
	got := staleRoots(names, alive)
	want := []string{h + "-200-abc-t-ok.drv", h + "-200-abc-t-ok", h + "-200-abc-t-ok-1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("staleRoots = %q, want %q", got, want)
	}
	if !processAlive(os.Getpid()) {
		t.Error("processAlive(self) = false")
	}
	if rootName("/gnu/store/x37x84zbqzs261xph9j4zdlbm7mmnix1-t-ok.drv") != h+"-"+strconv.Itoa(os.Getpid())+"-x37x84zbqzs261xph9j4zdlbm7mmnix1-t-ok" {
		t.Errorf("rootName = %q", rootName("/gnu/store/x37x84zbqzs261xph9j4zdlbm7mmnix1-t-ok.drv"))
	}
}
