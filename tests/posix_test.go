package tests

import (
	"fmt"
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
// mount, each test in a fresh directory of its own, once over each way the
// kernel can hand the mount its requests: io_uring where the kernel has it
// (the default) and /dev/fuse alone (--fuse-io-uring=false).
func TestPosixtest(t *testing.T) {
	t.Run("io_uring", func(t *testing.T) {
		needFUSE(t)
		if _, err := os.Stat(fuseRingParam); err != nil {
			t.Skipf("skipped: this kernel has no FUSE over io_uring (Linux 6.14+ with CONFIG_FUSE_IO_URING; %s is absent)", fuseRingParam)
		}
		c := startUp(t, "", 4)
		if n := ioURings(t, c.p.cmd.Process.Pid); n == 0 {
			t.Fatal("the mount holds no io_uring: its requests come over /dev/fuse")
		}
		runPosixtest(t, c)
	})
	t.Run("dev_fuse", func(t *testing.T) {
		c := startUp(t, "", 4, "--fuse-io-uring=false")
		if n := ioURings(t, c.p.cmd.Process.Pid); n != 0 {
			t.Fatalf("the mount holds %d io_urings with --fuse-io-uring=false", n)
		}
		runPosixtest(t, c)
	})
}

// fuseRingParam is the kernel's switch for FUSE over io_uring, present
// where the kernel has it.
const fuseRingParam = "/sys/module/fuse/parameters/enable_uring"

// ioURings counts the io_uring instances process pid holds open.
func ioURings(t *testing.T, pid int) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, _ := os.Readlink(filepath.Join(dir, e.Name())); l == "anon_inode:[io_uring]" {
			n++
		}
	}
	return n
}

func runPosixtest(t *testing.T, c *upCluster) {
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
