package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Why the services run with GODEBUG=madvdontneed=0: the Go runtime hands
// freed heap pages back to the kernel with MADV_DONTNEED (its Linux default
// since Go 1.16), in the background scavenger and, all at once, whenever
// go-fuse forgets most of its inodes (it calls debug.FreeOSMemory, as after
// a cache drop or a burst of unlinks). Each page handed back is unmapped,
// then faulted in and zeroed by the kernel when the heap reuses it. With
// MADV_FREE the pages stay mapped until the kernel needs them. Measured
// here (`stria up`, 2 × 2,000 empty and 4 KiB files, caches dropped before
// each phase): page faults 22.7 k → 12.0 k, process CPU −7 %, stats and
// unlinks 8-59 % faster. The runtime reads the setting only at start, so a
// service command re-executes itself once with it set (same PID, same
// arguments).

// lazyFreeSetting is the GODEBUG setting the services run with.
const lazyFreeSetting = "madvdontneed=0"

// withLazyFree returns env with lazyFreeSetting added to GODEBUG, and
// whether that changed anything: not when GODEBUG already says how to
// free memory (the user's choice, or our own re-execution).
func withLazyFree(env []string) ([]string, bool) {
	const key = "GODEBUG="
	godebug, found := "", false
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, key) {
			out = append(out, kv)
			continue
		}
		if !found { // the first one counts, as for os.Getenv
			godebug, found = strings.TrimPrefix(kv, key), true
		}
	}
	for _, setting := range strings.Split(godebug, ",") {
		if strings.HasPrefix(setting, "madvdontneed=") {
			return env, false
		}
	}
	if godebug != "" {
		godebug += ","
	}
	return append(out, key+godebug+lazyFreeSetting), true
}

// reexecWithLazyFree replaces the process with itself under
// lazyFreeSetting unless GODEBUG already has it. If that fails the
// service runs on without it, slower, and says so.
func reexecWithLazyFree() {
	env, changed := withLazyFree(os.Environ())
	if !changed {
		return
	}
	err := syscall.Exec("/proc/self/exe", os.Args, env)
	fmt.Fprintf(os.Stderr, "stria: re-executing with GODEBUG=%s failed, running without it: %v\n", lazyFreeSetting, err)
}

// serviceGCPercent is the garbage collector's target for a service: the
// heap may grow to five times what is live before a collection, not twice
// (GOGC=100). A mount allocates for every FUSE request (go-fuse's request
// state, ~1.5 KiB) while its live heap is small, most of all just after it
// starts, so it collected many times a second. Measured here (`stria up`,
// 2 × 2,000 empty files, caches dropped, 5 rounds alternating fresh
// instances): unlinks 9,243-19,409/s (median 11,352) at 100,
// 12,345-15,795 (median 14,468) at 400; the first shape a fresh mount
// runs is where the harness found Stria's unlinks slowest. A GOGC in the
// environment stands.
const serviceGCPercent = 400

// serviceGC is the GC percent a service sets, and whether it sets one:
// not when GOGC in its environment already chose.
func serviceGC(getenv func(string) string) (int, bool) {
	if getenv("GOGC") != "" {
		return 0, false
	}
	return serviceGCPercent, true
}

// mountProcs is how many Ps (GOMAXPROCS) a process that serves a mount
// runs with, given the runtime's own choice (the CPUs it may use): that
// many again three times over, at most 32 more. The mount's FUSE ring
// threads (fusering.go, eight per CPU) each wait for their next request in
// a system call, and while they wait the runtime counts each one's P as
// busy until its monitor thread takes it back, up to milliseconds later;
// a thread whose request has arrived and finds no idle P waits. Measured
// here (2 CPUs, execution trace of `stria up` during 2 × 10,000 creates):
// with 2 Ps a quarter of the ring threads' returns from the kernel found
// none, 72-135 ms of every second spent waiting for one; with 8, 2-3 ms.
// Empty-file creates and unlinks (mdbench, 2 × 2,000, 4 rounds alternating
// fresh instances) went from medians of 8,277 and 11,967/s to 9,866 and
// 13,931. The cost is more collector workers while one runs (a quarter of
// the Ps); GOGC 400 makes that rare. A GOMAXPROCS in the environment
// stands.
func mountProcs(getenv func(string) string, procs int) (int, bool) {
	if getenv("GOMAXPROCS") != "" {
		return 0, false
	}
	return procs + min(3*procs, 32), true
}

// mountTimerSlack is the timer slack, in nanoseconds, of the threads of a
// process that serves a mount: how late the kernel may wake a thread from
// a timed sleep, to batch wake-ups (50 µs by default). The Go runtime
// sleeps for microseconds when it hands work between threads — a thread
// looking for goroutines to run, one that was just made runnable by a
// request finishing on a thread now waiting in the kernel for its next
// FUSE request — and every such sleep lasted the default slack more.
// Measured here (`stria up`, 2 × 5,000 empty-file creates then unlinks,
// twice per fresh instance, 4 rounds alternating builds without and with
// it): creates median 8,446 → 11,282/s (5,517-10,618 → 9,092-12,641),
// unlinks 11,310 → 12,026.
const mountTimerSlack = 1

// setTimerSlack sets the timer slack of every thread of the process to ns
// (/proc/TID/timerslack_ns; another thread's needs CAP_SYS_NICE). A thread
// started later inherits the slack of the thread that starts it, so once
// all have it, all will; threads started during the first pass are caught
// by the second.
func setTimerSlack(ns int) error {
	value := []byte(strconv.Itoa(ns))
	for range 2 {
		tids, err := threadIDs()
		if err != nil {
			return err
		}
		for _, tid := range tids {
			err := os.WriteFile("/proc/"+tid+"/timerslack_ns", value, 0)
			if err != nil && !errors.Is(err, fs.ErrNotExist) { // a thread that ended
				return err
			}
		}
	}
	return nil
}

// threadIDs lists the IDs of the process's threads (/proc/self/task).
func threadIDs() ([]string, error) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	tids := make([]string, len(tasks))
	for i, t := range tasks {
		tids[i] = t.Name()
	}
	return tids, nil
}
