package tests

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// notApplicable names the posixtest cases not run, and why.
var notApplicable = map[string]string{
	// It takes a classic POSIX write lock on one descriptor and expects a
	// read lock from a second descriptor of the same process to fail with
	// EAGAIN. POSIX says a process never conflicts with its own locks; the
	// case passes on go-fuse's loopback only because that forwards locks as
	// open-file-description locks. Until lockd (cross-client locks) arrives,
	// the kernel's local lock manager serves fcntl and flock, correctly.
	"FcntlFlockLocksFile": "expects non-POSIX lock conflicts within one process",
}

// TestPosixtest runs go-fuse's POSIX conformance suite against a real Stria
// mount, each test in a fresh directory of its own.
func TestPosixtest(t *testing.T) {
	c := startUp(t, "", 4)
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		if _, skip := notApplicable[name]; !skip {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		fn := posixtest.All[name]
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(c.mnt, "posix-"+name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			fn(t, dir)
		})
	}
}
