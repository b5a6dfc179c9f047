package hook

import (
	"context"
	"offload/locking"
	"offload/machines"
	"time"
)

// machineLock takes a machine's upload or download lock, saying who holds it while
// waiting: one transfer each way at a time per machine, so that concurrent offloads do
// not trample each other's imports (docs/hook.md).
func (h *Hook) machineLock(ctx context.Context, m *machines.Machine, kind, reason string) (*locking.Lock, error) {
	file := h.layout.TransferLock(m.ID(), kind)
	if l, ok, err := locking.TryAcquire(file, reason); err != nil {
		return nil, err
	} else if ok {
		return l, nil
	}
	if pid, why, held, _ := locking.Holder(file); held {
		h.note("waiting for the %s lock of machine '%s' (held by process %d: %s)", kind, m.Display(), pid, why)
	}
	wait := h.Conf.LockWait
	if wait <= 0 {
		wait = 30 * time.Minute
	}
	lctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return locking.Acquire(lctx, file, reason)
}
