// Package locking owns how offload locks files: the per-machine upload and download
// locks, the build slots and queue places, the state files' and the shared ssh
// connection's locks all go through it (their paths are package statedir's).
//
// Every lock is an exclusive flock(2) on a file that is never deleted (deleting a lock
// file lets two processes lock two different files of the same name). The holder writes
// "PID REASON" into the file so that waiters and `offload status` can say who holds it.
// A lock lasts until Release or the end of the process, however it ends: the kernel
// drops a flock when the last descriptor of its open file goes away, even on SIGKILL.
//
// It does not decide which machine to use or how many slots a machine has (machines
// does), and it does not know what a lock protects.
package locking
