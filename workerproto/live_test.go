package workerproto

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"offload/storeio"
)

// TestLiveDaemon talks to a real guix-daemon when WORKERPROTO_LIVE_SOCKET names its
// socket (or a forward of it); it is opt-in because it adds an item to that store.
// NIX_STORE_DIR defaults to /gnu/store.
func TestLiveDaemon(t *testing.T) {
	socket := os.Getenv("WORKERPROTO_LIVE_SOCKET")
	if socket == "" {
		t.Skip("WORKERPROTO_LIVE_SOCKET is not set")
	}
	store := storeio.StoreDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Trace = func(op string, paths int, n int64, d time.Duration, err error) {
		t.Logf("%s paths=%d bytes=%d %.2fms err=%v", op, paths, n, d.Seconds()*1000, err)
	}
	t.Logf("daemon protocol %#x", c.DaemonVersion())
	var o Options
	o.SetMaxSilentTime(time.Hour)
	o.SetTimeout(0)
	if err := c.SetOptions(ctx, o); err != nil {
		t.Fatal(err)
	}

	content := []byte(fmt.Sprintf("workerproto live test %d\n", time.Now().UnixNano()))
	p, err := c.AddTextToStore(ctx, "workerproto-live.txt", content, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := TextPath(store, "workerproto-live.txt", content, nil); p != want {
		t.Errorf("AddTextToStore = %s, TextPath = %s", p, want)
	}
	if err := c.AddTempRoot(ctx, p); err != nil {
		t.Error(err)
	}
	missing := store + "/" + strings.Repeat("0", 32) + "-missing"
	if v, err := c.IsValidPath(ctx, missing); v || err != nil {
		t.Errorf("IsValidPath(missing) = %v, %v", v, err)
	}
	if v, err := c.QueryValidPaths(ctx, []string{missing, p}); len(v) != 1 || v[0] != p || err != nil {
		t.Errorf("QueryValidPaths = %v, %v", v, err)
	}
	info, err := c.QueryPathInfo(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if refs, err := c.QueryReferences(ctx, p); len(refs) != 0 || err != nil {
		t.Errorf("QueryReferences = %v, %v", refs, err)
	}
	if d, err := c.QueryDeriver(ctx, p); d != "" || err != nil {
		t.Errorf("QueryDeriver = %q, %v", d, err)
	}

	// The export stream must be one storeio reads, with the daemon's hash and size.
	var bundle bytes.Buffer
	if err := c.ExportItems(ctx, []string{p}, false, &bundle); err != nil {
		t.Fatal(err)
	}
	items, err := storeio.ListBundle(bytes.NewReader(bundle.Bytes()))
	if err != nil || len(items) != 1 {
		t.Fatalf("ListBundle = %v, %v", items, err)
	}
	if got := hex.EncodeToString(items[0].NarHash[:]); got != info.NarHash || uint64(items[0].NarSize) != info.NarSize {
		t.Errorf("exported nar %s (%d bytes), path info %s (%d bytes)", got, items[0].NarSize, info.NarHash, info.NarSize)
	}
	_, err = c.ImportPaths(ctx, bytes.NewReader(bundle.Bytes()))
	mustDaemonError(t, err, 1, "lacks a signature")

	// Errors: one the connection survives, then one the daemon closes it after.
	_, err = c.IsValidPath(ctx, "/tmp/foo")
	mustDaemonError(t, err, 1, "not in the store")
	_, err = c.QueryPathInfo(ctx, "/tmp/foo")
	mustDaemonError(t, err, 1, "not in the store")
	if _, err := c.IsValidPath(ctx, p); !errors.Is(err, ErrDaemonClosed) {
		t.Errorf("after the daemon closed: %v", err)
	}
}

// TestLiveRefusedForward dials WORKERPROTO_REFUSED_SOCKET, an OpenSSH forward that the
// server refuses (e.g. sshd with DisableForwarding yes): the handshake must end in
// ErrNoDaemon.
func TestLiveRefusedForward(t *testing.T) {
	socket := os.Getenv("WORKERPROTO_REFUSED_SOCKET")
	if socket == "" {
		t.Skip("WORKERPROTO_REFUSED_SOCKET is not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	c, err := Dial(ctx, socket)
	if err == nil {
		c.Close()
	}
	t.Logf("%v after %v", err, time.Since(start))
	if !errors.Is(err, ErrNoDaemon) {
		t.Errorf("err = %v, want ErrNoDaemon", err)
	}
}
