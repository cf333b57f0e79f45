package tests

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRestartKeepsEverything stops stria up cleanly and starts it again on
// the same state directory: the namespace and the data are as they were.
func TestRestartKeepsEverything(t *testing.T) {
	c := startUp(t, "", 3)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(c.path("a", "b", "c"), 0o750))
	data := randomData(20, 3<<20+17)
	mustWrite(t, c.path("a", "b", "file"), data)
	must(os.Symlink("b/file", c.path("a", "link")))
	must(os.Link(c.path("a", "b", "file"), c.path("a", "hard")))
	must(unix.Setxattr(c.path("a"), "user.project", []byte("genomics"), 0))
	must(os.Chown(c.path("a", "b", "c"), 42, 43))
	setstripe(t, "-c", "3", "-S", "256K", c.path("a", "b"))
	mustWrite(t, c.path("a", "b", "striped"), data)

	c.restart()

	sameBytes(t, "file after restart", mustRead(t, c.path("a", "b", "file")), data)
	sameBytes(t, "striped file after restart", mustRead(t, c.path("a", "b", "striped")), data)
	sameBytes(t, "through symlink", mustRead(t, c.path("a", "link")), data)
	st, err := os.Stat(c.path("a", "hard"))
	must(err)
	if n := st.Sys().(*syscall.Stat_t).Nlink; n != 2 {
		t.Fatalf("nlink %d after restart", n)
	}
	buf := make([]byte, 64)
	n, err := unix.Getxattr(c.path("a"), "user.project", buf)
	if err != nil || string(buf[:n]) != "genomics" {
		t.Fatalf("xattr after restart: %q %v", buf[:n], err)
	}
	st, err = os.Stat(c.path("a", "b", "c"))
	must(err)
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 42 || sys.Gid != 43 || st.Mode().Perm() != 0o750 {
		t.Fatalf("dir attrs after restart: %v %d:%d", st.Mode(), sys.Uid, sys.Gid)
	}
	if l := layoutOf(t, c.path("a", "b", "striped")); l.StripeCount != 3 || l.StripeSize != 256<<10 {
		t.Fatalf("layout after restart %v", l)
	}
}

// TestFsyncSurvivesKill9: what fsync acknowledged survives SIGKILL of the
// whole stria up process.
func TestFsyncSurvivesKill9(t *testing.T) {
	c := startUp(t, "", 4)
	os.Mkdir(c.path("d"), 0o755)
	setstripe(t, "-c", "4", "-S", "64K", c.path("d"))
	files := map[string][]byte{}
	// writeSynced writes a file and fsyncs it, leaving it open on purpose:
	// the crash comes with files still open.
	writeSynced := func(name string, data []byte) {
		t.Helper()
		f, err := os.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		files[name] = data
	}
	for i := 0; i < 8; i++ {
		writeSynced(c.path("d", fmt.Sprintf("f%d", i)), randomData(uint64(30+i), 1<<20+i*70_001))
	}
	// Files kept on meta (their first 64 KiB), whole or in part.
	os.Mkdir(c.path("dom"), 0o755)
	setstripe(t, "-c", "1", "--dom", "64K", c.path("dom"))
	for i, size := range []int{5000, 64 << 10, 100_000} {
		writeSynced(c.path("dom", fmt.Sprintf("f%d", i)), randomData(uint64(50+i), size))
	}
	// A rename is durable once its directory is fsynced (POSIX, as on a
	// local file system: the write-then-rename pattern fsyncs both).
	if err := os.Rename(c.path("d", "f0"), c.path("d", "renamed")); err != nil {
		t.Fatal(err)
	}
	dir, err := os.Open(c.path("d"))
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.Sync(); err != nil {
		t.Fatalf("fsync of the directory: %v", err)
	}
	dir.Close()
	files[c.path("d", "renamed")] = files[c.path("d", "f0")]
	delete(files, c.path("d", "f0"))

	c.crash()
	var sfs syscall.Statfs_t
	// ENOTCONN; or, from a mount served over io_uring whose rings the
	// kernel is still tearing down, ECONNABORTED or ECANCELED.
	err = syscall.Statfs(c.mnt, &sfs)
	if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) && !errors.Is(err, syscall.ECANCELED) {
		t.Fatalf("after kill -9 the mount should be dead (ENOTCONN, ECONNABORTED or ECANCELED), got %v", err)
	}
	c.up() // clears the dead mount itself

	for name, want := range files {
		sameBytes(t, name+" after kill -9", mustRead(t, name), want)
	}
	if _, err := os.Stat(c.path("d", "f0")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("renamed-away name back after crash: %v", err)
	}
}

// TestCorruptBlockGivesEIO flips one bit of an object on an OST's disk: the
// read fails with EIO and the OST logs the mismatch; wrong bytes never come
// back.
func TestCorruptBlockGivesEIO(t *testing.T) {
	c := startUp(t, "", 2, "--log-level", "info")
	p := c.path("victim")
	setstripe(t, "-c", "1", "-i", "1", p)
	data := randomData(40, 1<<20)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(data)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	l := layoutOf(t, p)
	obj := findObject(t, filepath.Join(c.data, fmt.Sprintf("ost%d", l.Objects[0].OST)), l.Objects[0].ObjID)

	raw, err := os.OpenFile(obj, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	const at = 300_000
	raw.ReadAt(b, at)
	b[0] ^= 0x10
	raw.WriteAt(b, at)
	raw.Close()

	g, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	buf := make([]byte, 1<<20)
	_, err = g.ReadAt(buf, 0)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading a corrupted block: %v, want EIO", err)
	}
	// Blocks before the damaged one still read correctly.
	good := make([]byte, 128<<10)
	if _, err := g.ReadAt(good, 0); err != nil {
		t.Fatalf("reading an intact block: %v", err)
	}
	sameBytes(t, "intact block", good, data[:128<<10])
	eventually(t, 10*time.Second, "a checksum log line", func() bool {
		return strings.Contains(strings.ToLower(c.p.stderr.String()), "checksum")
	})
}

// TestFullOSTGivesENOSPC puts the only OST on a 24 MiB tmpfs: the writer
// gets ENOSPC, and the file system keeps working.
func TestFullOSTGivesENOSPC(t *testing.T) {
	needFUSE(t)
	data := t.TempDir()
	ostDir := filepath.Join(data, "ost0")
	if err := os.Mkdir(ostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", ostDir, "tmpfs", 0, "size=24m"); err != nil {
		t.Fatalf("mounting tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(ostDir, unix.MNT_DETACH) })
	c := startUp(t, data, 1, "--log-level", "info")

	f, err := os.Create(c.path("fill"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := randomData(50, 1<<20)
	var werr error
	for i := 0; i < 64 && werr == nil; i++ {
		_, werr = f.Write(chunk)
	}
	if werr == nil {
		werr = f.Sync()
	}
	f.Close()
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("filling the OST: %v, want ENOSPC", werr)
	}
	if err := os.Remove(c.path("fill")); err != nil {
		t.Fatal(err)
	}
	// Space comes back once meta has destroyed the objects.
	eventually(t, 30*time.Second, "space to be freed", func() bool {
		return os.WriteFile(c.path("after"), chunk, 0o644) == nil
	})
	sameBytes(t, "file written after ENOSPC", mustRead(t, c.path("after")), chunk)
}
