package locking

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestHelperProcess is not a test: other tests run the test binary as a helper that
// takes a slot or a lock, says which on stdout, and holds it until killed or its stdin
// closes.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("OFFLOAD_LOCK_HELPER_DIR")
	if dir == "" {
		return
	}
	n, _ := strconv.Atoi(os.Getenv("OFFLOAD_LOCK_HELPER_SLOTS"))
	l, slot, err := AcquireSlot(dir, n, "helper "+strconv.Itoa(os.Getpid()))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("slot", slot)
	// Hold until the parent closes our stdin (or kills us).
	bufio.NewReader(os.Stdin).ReadString('\n')
	l.Release()
	os.Exit(0)
}

type helper struct {
	cmd   *exec.Cmd
	stdin interface{ Close() error }
	slot  int
}

// startHelper runs a helper process that tries to take one of n slots in dir.
func startHelper(t *testing.T, dir string, n int) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "OFFLOAD_LOCK_HELPER_DIR="+dir, "OFFLOAD_LOCK_HELPER_SLOTS="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	var slot int
	if _, err := fmt.Sscanf(line, "slot %d", &slot); err != nil {
		t.Fatalf("helper said %q", line)
	}
	return &helper{cmd: cmd, stdin: stdin, slot: slot}
}

func TestSlotsAcrossProcesses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "build1:22")
	const k = 3
	var hs []*helper
	seen := map[int]bool{}
	for i := 0; i < k+2; i++ {
		h := startHelper(t, dir, k)
		hs = append(hs, h)
		if i < k {
			if h.slot < 0 || seen[h.slot] {
				t.Fatalf("helper %d got slot %d (taken: %v)", i, h.slot, seen)
			}
			seen[h.slot] = true
		} else if h.slot != -1 {
			t.Fatalf("helper %d got slot %d with all %d taken", i, h.slot, k)
		}
	}
	// This process sees them busy too.
	if l, slot, err := AcquireSlot(dir, k, "test"); err != nil || l != nil || slot != -1 {
		t.Fatalf("AcquireSlot with all busy = %v, %d, %v", l, slot, err)
	}
	// A helper killed with SIGKILL frees its slot at once.
	victim := hs[1]
	pid, reason, held, err := Holder(filepath.Join(dir, strconv.Itoa(victim.slot)))
	if err != nil || !held || pid != victim.cmd.Process.Pid || reason != "helper "+strconv.Itoa(pid) {
		t.Fatalf("Holder = %d %q %v %v, want held by %d", pid, reason, held, err, victim.cmd.Process.Pid)
	}
	victim.cmd.Process.Signal(syscall.SIGKILL)
	victim.cmd.Wait()
	l, slot, err := AcquireSlot(dir, k, "after kill")
	if err != nil || slot != victim.slot {
		t.Fatalf("after SIGKILL: slot %d, %v; want %d", slot, err, victim.slot)
	}
	l.Release()
	// Slot files are never deleted.
	for i := 0; i < k; i++ {
		if _, err := os.Stat(filepath.Join(dir, strconv.Itoa(i))); err != nil {
			t.Error(err)
		}
	}
}

func TestSlotsNeverOverbooked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m:22")
	const k, workers, rounds = 2, 8, 40
	var inUse, maxInUse, got atomic.Int32
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				l, _, err := AcquireSlot(dir, k, "worker")
				if err != nil {
					t.Error(err)
					return
				}
				if l == nil {
					runtime.Gosched()
					continue
				}
				got.Add(1)
				n := inUse.Add(1)
				for {
					m := maxInUse.Load()
					if n <= m || maxInUse.CompareAndSwap(m, n) {
						break
					}
				}
				runtime.Gosched()
				inUse.Add(-1)
				l.Release()
			}
		}()
	}
	wg.Wait()
	if m := maxInUse.Load(); m > k {
		t.Fatalf("%d slots held at once, limit %d", m, k)
	}
	if got.Load() == 0 {
		t.Fatal("no worker ever got a slot")
	}
}

func TestAcquireWaitsForRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "build1:22.upload.lock")
	first, err := Acquire(context.Background(), path, "sending inputs of /gnu/store/x.drv")
	if err != nil {
		t.Fatal(err)
	}
	acquired := make(chan *Lock)
	go func() {
		l, err := Acquire(context.Background(), path, "second")
		if err != nil {
			t.Error(err)
		}
		acquired <- l
	}()
	// It cannot have the lock while the first holds it.
	if _, ok, _ := TryAcquire(path, "third"); ok {
		t.Fatal("lock taken twice")
	}
	first.Release()
	second := <-acquired
	if second == nil {
		t.Fatal("waiter did not get the lock")
	}
	defer second.Release()
	if pid, reason, held, _ := Holder(path); !held || pid != os.Getpid() || reason != "second" {
		t.Errorf("Holder = %d %q %v", pid, reason, held)
	}
}

func TestAcquireTimeoutNamesHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "build1:22.download.lock")
	l, err := Acquire(context.Background(), path, "retrieving /gnu/store/abc-hello")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = Acquire(ctx, path, "waiter")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	for _, want := range []string{path, "retrieving /gnu/store/abc-hello", strconv.Itoa(os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
}

func TestReleaseKeepsFileAndFreesLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	l, ok, err := TryAcquire(path, "a\nmulti-line   reason")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if b, _ := os.ReadFile(path); string(b) != strconv.Itoa(os.Getpid())+" a multi-line reason\n" {
		t.Errorf("lock file holds %q", b)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatal("second Release:", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal("lock file deleted:", err)
	}
	if _, _, held, _ := Holder(path); held {
		t.Fatal("released lock still held")
	}
	l2, ok, _ := TryAcquire(path, "b")
	if !ok {
		t.Fatal("released lock cannot be taken again")
	}
	// A shorter reason overwrites the longer one entirely.
	if b, _ := os.ReadFile(path); string(b) != strconv.Itoa(os.Getpid())+" b\n" {
		t.Errorf("lock file holds %q", b)
	}
	l2.Release()
}

// TestDroppedLockStaysHeld: a Lock the program no longer refers to is not released by
// the garbage collector.
func TestDroppedLockStaysHeld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slot")
	func() {
		_, ok, err := TryAcquire(path, "dropped")
		if !ok || err != nil {
			t.Fatal(ok, err)
		}
	}()
	for i := 0; i < 5; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // let finalizers run, if any
	}
	if _, _, held, _ := Holder(path); !held {
		t.Fatal("a dropped Lock was released before the process ended")
	}
}

// TestLockNotInherited: a child process started while we hold a lock does not hold it
// after we release it.
func TestLockNotInherited(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slot")
	l, ok, _ := TryAcquire(path, "parent")
	if !ok {
		t.Fatal("not acquired")
	}
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	l.Release()
	if _, _, held, _ := Holder(path); held {
		t.Fatal("the child process kept the lock")
	}
}

func TestHolderOfMissingFile(t *testing.T) {
	pid, reason, held, err := Holder(filepath.Join(t.TempDir(), "none"))
	if pid != 0 || reason != "" || held || err != nil {
		t.Fatalf("Holder(missing) = %d %q %v %v", pid, reason, held, err)
	}
}
