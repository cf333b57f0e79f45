package gateway

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestFUSERingFailureEndsMount mounts an empty tree over io_uring, reads it
// through the ring, then fails a ring thread: the mount must end (the
// kernel would otherwise hold that thread's CPU's requests forever): the
// connection aborted, go-fuse's server and every ring thread returned, the
// mount point no longer a mount.
func TestFUSERingFailureEndsMount(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("skipped: /dev/fuse is absent on this machine, so no FUSE mount can be made")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipped: the ring needs a mount of our own, which needs root")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if why := fuseRingUnavailable(log); why != nil {
		t.Skipf("skipped: %v", why)
	}
	mnt := t.TempDir()
	opts := &fs.Options{MountOptions: fuse.MountOptions{FsName: "stria-ring-test", Name: "stria", MaxWrite: 1 << 20}}
	server, ring, err := mountFUSERing(mnt, &fs.Inode{}, opts, 30*time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	if _, err := mountDevice(mnt); err != nil {
		t.Fatalf("not mounted: %v", err)
	}
	if ents, err := os.ReadDir(mnt); err != nil || len(ents) != 0 {
		t.Fatalf("reading the empty mount: %v, %v", ents, err)
	}

	ring.fail(errors.New("injected ring failure"))
	ended := make(chan struct{})
	go func() { server.Wait(); ring.wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Fatal("the server or a ring thread still runs 30 s after a ring thread failed")
	}
	if _, err := mountDevice(mnt); err == nil {
		t.Fatal("the mount is still there after a ring thread failed")
	}
}

// recordForgets is a file system that only notes the FORGETs it gets.
type recordForgets struct {
	fuse.RawFileSystem
	got []uint64
}

func (r *recordForgets) Forget(nodeid, nlookup uint64) { r.got = append(r.got, nodeid) }

// TestForgetPacer: every FORGET reaches the file system, in order; the
// reader rests before the first of a read, not between the FORGETs of one
// read, and again before the next read's first.
func TestForgetPacer(t *testing.T) {
	inner := &recordForgets{RawFileSystem: fuse.NewDefaultRawFileSystem()}
	p := newForgetPacer(inner)
	clock := time.Unix(1000, 0)
	var rests []time.Duration
	p.now = func() time.Time { return clock }
	p.sleep = func(d time.Duration) { rests = append(rests, d); clock = clock.Add(d) }

	// One read's BATCH_FORGET: entries microseconds apart.
	for id := uint64(1); id <= 3; id++ {
		p.Forget(id, 1)
		clock = clock.Add(2 * time.Microsecond)
	}
	if len(rests) != 1 || rests[0] != forgetPause {
		t.Fatalf("rests during one read: %v, want one of %v", rests, forgetPause)
	}
	// The next read, after the reader waited in the kernel.
	clock = clock.Add(300 * time.Microsecond)
	p.Forget(4, 1)
	if len(rests) != 2 {
		t.Fatalf("rests after a second read: %v, want two", rests)
	}
	if want := []uint64{1, 2, 3, 4}; !slices.Equal(inner.got, want) {
		t.Fatalf("forgets passed on: %v, want %v", inner.got, want)
	}
}
