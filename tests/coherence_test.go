package tests

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stria/stria/api"
	"golang.org/x/sys/unix"
)

// secondMount mounts the cluster's file system a second time, as another
// client machine would (stria mount against its NATS and etcd), and
// returns the mount point and its process.
func (c *upCluster) secondMount(t *testing.T, extra ...string) (string, *proc) {
	t.Helper()
	// The addresses follow the ready line, which may have been read alone.
	var natsURL, etcdURL []string
	eventually(t, 10*time.Second, "stria up to print its NATS and etcd addresses", func() bool {
		out := c.p.stderr.String()
		natsURL = regexp.MustCompile(`nats:\s+(\S+)`).FindStringSubmatch(out)
		etcdURL = regexp.MustCompile(`etcd:\s+(\S+)`).FindStringSubmatch(out)
		return natsURL != nil && etcdURL != nil
	})
	mnt := t.TempDir()
	args := append([]string{"mount", "--nats", natsURL[1], "--etcd", etcdURL[1]}, extra...)
	p := start(t, "second mount", "mounted", nil, append(args, mnt)...)
	t.Cleanup(func() { p.stop(); detach(mnt) })
	return mnt, p
}

// noKernelCache makes a mount ask the gateway for every name and attribute,
// so what a test sees is what the gateway's own cache (held under locks)
// answers, not the kernel's copy of it.
var noKernelCache = []string{"--entry-timeout", "0", "--attr-timeout", "0", "--locked-timeout", "0"}

// TestCoherenceBetweenMounts checks that a change through one mount is
// seen at once through another, although each caches names and attributes
// under directory locks: the lock service recalls them before meta applies
// the change. No waits: every check is made right after the change returns.
// Once with the kernel asking the gateway every time (the gateway's cache),
// once as mounted by default: the kernel keeps what locks cover, which the
// recall makes it drop, and nothing else (--entry-timeout and
// --attr-timeout are 0).
func TestCoherenceBetweenMounts(t *testing.T) {
	t.Run("gateway cache", func(t *testing.T) { checkCoherence(t, noKernelCache) })
	t.Run("defaults: kernel cache under locks", func(t *testing.T) { checkCoherence(t, nil) })
}

func checkCoherence(t *testing.T, mountFlags []string) {
	c := startUp(t, "", 2, append([]string{"--lock-lease", "2s"}, mountFlags...)...)
	b, bProc := c.secondMount(t, mountFlags...)
	inA := func(p ...string) string { return c.path(p...) }
	inB := func(p ...string) string { return filepath.Join(append([]string{b}, p...)...) }

	// bHolds makes B take d's lock (a lookup there asks for it) and waits
	// until it holds it; what B looks up then is cached under the lock,
	// by its gateway and (unless --locked-timeout is 0) its kernel.
	bHolds := func(dir string) {
		t.Helper()
		eventually(t, 10*time.Second, "B to hold the lock of "+dir, func() bool {
			os.Lstat(inB(dir, "no-such-name")) // a miss asks for the lock
			return lockState(t, inB(dir)) == "held"
		})
	}

	if err := os.Mkdir(inA("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, inA("d", "f"), []byte("one"))
	// B learns d: its names (complete, so absent ones too) and f.
	bHolds("d")
	statIs(t, "B sees f", inB("d", "f"), 3, 0o644)
	noEntry(t, "B before the create", inB("d", "g"))

	mustWrite(t, inA("d", "g"), []byte("new"))
	statIs(t, "B right after A created g", inB("d", "g"), 3, 0o644)

	bHolds("d")
	statIs(t, "B sees f under the lock", inB("d", "f"), 3, 0o644)
	if err := os.Chmod(inA("d", "f"), 0o600); err != nil {
		t.Fatal(err)
	}
	statIs(t, "B right after A's chmod", inB("d", "f"), 3, 0o600)

	bHolds("d")
	statIs(t, "B sees f under the lock", inB("d", "f"), 3, 0o600)
	mustWrite(t, inA("d", "f"), []byte("longer now"))
	statIs(t, "B right after A rewrote f", inB("d", "f"), 10, 0o600)
	sameBytes(t, "B reads A's bytes", mustRead(t, inB("d", "f")), []byte("longer now"))
	// Same size, other bytes: B's next open must not keep the pages its
	// last one filled (read-on-open keeps the kernel's cache).
	mustWrite(t, inA("d", "f"), []byte("LONGER NOW"))
	sameBytes(t, "B reads A's rewrite of the same size", mustRead(t, inB("d", "f")), []byte("LONGER NOW"))
	// The same for a file kept on meta, whose bytes B's opens put in its
	// kernel's cache (DoM read-on-open).
	if err := os.Mkdir(inA("dom"), 0o755); err != nil {
		t.Fatal(err)
	}
	setstripe(t, "-c", "1", "--dom", "64K", inA("dom"))
	mustWrite(t, inA("dom", "f"), []byte("first"))
	sameBytes(t, "B reads A's file kept on meta", mustRead(t, inB("dom", "f")), []byte("first"))
	mustWrite(t, inA("dom", "f"), []byte("FIRST"))
	sameBytes(t, "B reads A's same-size rewrite kept on meta", mustRead(t, inB("dom", "f")), []byte("FIRST"))

	bHolds("d")
	statIs(t, "B sees f under the lock", inB("d", "f"), 10, 0o600)
	if err := os.Rename(inA("d", "f"), inA("d", "h")); err != nil {
		t.Fatal(err)
	}
	noEntry(t, "B after the rename, old name", inB("d", "f"))
	statIs(t, "B after the rename, new name", inB("d", "h"), 10, 0o600)

	if err := os.Mkdir(inA("e"), 0o755); err != nil {
		t.Fatal(err)
	}
	statIs(t, "B sees e", inB("e"), -1, 0o755|os.ModeDir)
	if err := os.Rename(inA("d", "h"), inA("e", "h")); err != nil {
		t.Fatal(err)
	}
	noEntry(t, "B after the move, old directory", inB("d", "h"))
	statIs(t, "B after the move, new directory", inB("e", "h"), 10, 0o600)

	if err := os.Link(inA("e", "h"), inA("d", "hl")); err != nil {
		t.Fatal(err)
	}
	if st := statIs(t, "B sees the hard link", inB("d", "hl"), 10, 0o600); st.Nlink != 2 {
		t.Fatalf("B: link count %d after A's link, want 2", st.Nlink)
	}
	bHolds("e")
	statIs(t, "B sees e/h under the lock", inB("e", "h"), 10, 0o600)
	if err := os.Chmod(inA("d", "hl"), 0o640); err != nil {
		t.Fatal(err)
	}
	statIs(t, "B after chmod through the other name", inB("e", "h"), 10, 0o640)

	bHolds("d")
	statIs(t, "B sees g under the lock", inB("d", "g"), 3, 0o644)
	if err := os.Remove(inA("d", "g")); err != nil {
		t.Fatal(err)
	}
	noEntry(t, "B after A's unlink", inB("d", "g"))
	names := dirNames(t, inB("d"))
	if !slices.Equal(names, []string{"hl"}) {
		t.Fatalf("B lists d as %v, want [hl]", names)
	}

	// The other way round, and back and forth: each side sees the other's
	// last change at once, though the directory's lock moves between them.
	for i := range 50 {
		pa, pb := fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
		mustWrite(t, inA("d", pa), []byte(pa))
		statIs(t, "B sees A's "+pa, inB("d", pa), int64(len(pa)), 0o644)
		mustWrite(t, inB("d", pb), []byte(pb))
		statIs(t, "A sees B's "+pb, inA("d", pb), int64(len(pb)), 0o644)
		if err := os.Remove(inB("d", pa)); err != nil {
			t.Fatal(err)
		}
		noEntry(t, "A after B removed "+pa, inA("d", pa))
	}

	// A file replaced through A (unlinked and created again) is the new
	// file through B at once, to write as well as to read: while the two
	// take d's lock in turns, B's answers are not covered by a lock, and
	// its kernel must not keep them (it kept them 1 s, and B opened the
	// unlinked file and its writes failed with ENOENT).
	for i := range 20 {
		want := fmt.Sprintf("generation %d", i)
		if err := os.Remove(inA("d", "r")); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		mustWrite(t, inA("d", "r"), []byte(want))
		f, err := os.OpenFile(inB("d", "r"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatalf("B opens A's file, generation %d: %v", i, err)
		}
		if _, err := f.WriteString("+b"); err != nil {
			t.Fatalf("B appends to A's file, generation %d: %v", i, err)
		}
		if err := f.Close(); err != nil {
			t.Fatalf("B closes A's file, generation %d: %v", i, err)
		}
		sameBytes(t, "B reads its append to A's file", mustRead(t, inB("d", "r")), []byte(want+"+b"))
	}

	// A mount that dies holding locks does not hold up the others for
	// longer than its lease (2 s here) and the recall's timeout.
	statIs(t, "B caches d once more", inB("d", "hl"), 10, 0o640)
	bProc.kill()
	start := time.Now()
	mustWrite(t, inA("d", "after"), []byte("x"))
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("a create waited %v for a dead mount's locks", took)
	}
	statIs(t, "A sees its own create", inA("d", "after"), 1, 0o644)
}

// statIs stats path and checks size (unless negative) and mode.
func statIs(t *testing.T, what, path string, size int64, mode os.FileMode) *syscall.Stat_t {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if size >= 0 && st.Size() != size {
		t.Fatalf("%s: size %d, want %d", what, st.Size(), size)
	}
	if got := st.Mode() & (os.ModeType | os.ModePerm); got != mode {
		t.Fatalf("%s: mode %v, want %v", what, got, mode)
	}
	return st.Sys().(*syscall.Stat_t)
}

func noEntry(t *testing.T, what, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s: %s: got %v, want no such file", what, path, err)
	}
}

// lockState reads whether the mount holds dir's lock (the stria.lock xattr).
func lockState(t *testing.T, dir string) string {
	t.Helper()
	buf := make([]byte, 64)
	n, err := unix.Getxattr(dir, api.LockXattr, buf)
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", dir, api.LockXattr, err)
	}
	return string(buf[:n])
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
