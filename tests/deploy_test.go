package tests

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stria/stria/api"
	"github.com/stria/stria/cmd/stria/cluster"
	"golang.org/x/sys/unix"
)

// TestSeparateProcesses runs each service as its own process against an
// external NATS and etcd (started here in the test process), as a cluster
// deployment would: I/O through the mount, an OST joining later, an OST
// that stops answering, and a malformed RPC.
func TestSeparateProcesses(t *testing.T) {
	needFUSE(t)
	root := t.TempDir()
	ns, err := cluster.StartNATS(filepath.Join(root, "nats"), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	es, err := cluster.StartEtcd(filepath.Join(root, "etcd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(es.Stop)
	// Services take their endpoints from the environment, as a deployment
	// would set them.
	env := []string{"STRIA_NATS=" + ns.URL, "STRIA_ETCD=" + es.URL, "STRIA_FSNAME=lab"}

	// A lockd on its own NATS waits out one lease before the first change
	// (the previous instance's grants): a short one keeps the test quick.
	lockd := start(t, "lockd", "lockd ready", env, "lockd", "--lease", "2s", "--callback-timeout", "1s")
	meta := start(t, "meta", "meta ready", env, "meta", "--data-dir", filepath.Join(root, "meta"))
	var osts []*proc
	for i := 0; i < 2; i++ {
		osts = append(osts, start(t, fmt.Sprintf("ost%d", i), "ost ready", env, "ost", "--data-dir", filepath.Join(root, fmt.Sprintf("ost%d", i))))
	}
	mnt := t.TempDir()
	mount := start(t, "mount", "mounted", env, "mount", "--ost-timeout", "3s", mnt)
	t.Cleanup(func() { detach(mnt) })
	for _, p := range []*proc{lockd, meta, osts[0], osts[1], mount} {
		checkLazyFree(t, p)
	}

	p := filepath.Join(mnt, "two")
	setstripe(t, "-c", "2", "-S", "64K", p)
	data := randomData(60, 5<<20+3)
	mustWrite(t, p, data)
	sameBytes(t, "2-stripe file", mustRead(t, p), data)

	// Three stripes need a third OST: refused now, accepted once it joins.
	if out, err := stria(t, "setstripe", "-c", "3", filepath.Join(mnt, "three")); err == nil {
		t.Fatalf("3 stripes on 2 OSTs accepted:\n%s", out)
	} else if !strings.Contains(string(out), "larger than the 2 OSTs") {
		t.Fatalf("refusal does not say why:\n%s", out)
	}
	if _, err := os.Lstat(filepath.Join(mnt, "three")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused setstripe left a file behind: %v", err)
	}
	osts = append(osts, start(t, "ost2", "ost ready", env, "ost", "--data-dir", filepath.Join(root, "ost2")))
	eventually(t, 30*time.Second, "the new OST to be usable", func() bool {
		_, err := stria(t, "setstripe", "-c", "3", filepath.Join(mnt, "three"))
		return err == nil
	})
	mustWrite(t, filepath.Join(mnt, "three"), data)
	sameBytes(t, "3-stripe file", mustRead(t, filepath.Join(mnt, "three")), data)
	if l := layoutOf(t, filepath.Join(mnt, "three")); len(l.Objects) != 3 {
		t.Fatalf("layout %v", l)
	}

	// A malformed request gets an error reply, and meta keeps serving.
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, op := range []string{api.OpCreate, api.OpRename, api.OpLookup} {
		msg, err := nc.Request(api.MetaSubject("lab", op), []byte("{not json"), 5*time.Second)
		if err != nil {
			t.Fatalf("malformed %s: %v", op, err)
		}
		if msg.Header.Get("Nats-Service-Error-Code") != string(api.CodeInvalid) {
			t.Fatalf("malformed %s: reply %q headers %v", op, msg.Data, msg.Header)
		}
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("meta stopped serving after malformed requests: %v", err)
	}

	// An OST that stops answering: EIO after the bounded wait, not a hang.
	// The file read is one this mount wrote (around the page cache) and
	// never read, so nothing can answer for the OST.
	p = filepath.Join(mnt, "unread")
	setstripe(t, "-c", "2", "-S", "64K", p)
	mustWrite(t, p, data)
	l := layoutOf(t, p)
	frozen := osts[l.Objects[0].OST]
	frozen.cmd.Process.Signal(syscall.SIGSTOP)
	// kill(2) returns before every thread has stopped (one on a vCPU the
	// host has not run yet stops when it runs): until then the OST may
	// still answer.
	eventually(t, 10*time.Second, "the OST's threads to stop", func() bool {
		return allStopped(t, frozen.cmd.Process.Pid)
	})
	began := time.Now()
	f, err := os.Open(p)
	if err != nil {
		frozen.cmd.Process.Signal(syscall.SIGCONT)
		t.Fatal(err)
	}
	// The kernel may still hold the pages the write and the read-back
	// above left: drop them, so the read must ask the OST.
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		frozen.cmd.Process.Signal(syscall.SIGCONT)
		t.Fatal(err)
	}
	_, err = f.ReadAt(make([]byte, 64<<10), 0)
	f.Close()
	took := time.Since(began)
	frozen.cmd.Process.Signal(syscall.SIGCONT)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read from a frozen OST: %v, want EIO", err)
	}
	if took > 20*time.Second {
		t.Fatalf("EIO took %v; the bound is 3s per request", took)
	}
	// Once it answers again, so does the file.
	eventually(t, 30*time.Second, "the OST to answer again", func() bool {
		got, err := os.ReadFile(p)
		return err == nil && len(got) == len(data)
	})
	sameBytes(t, "after the OST came back", mustRead(t, p), data)
	if out, err := stria(t, "df", mnt); err != nil || !strings.Contains(out, "lab-OST0002") {
		t.Fatalf("df: %v\n%s", err, out)
	}
}

// allStopped reports whether every thread of process pid is stopped
// (state T in /proc/PID/task/TID/stat).
func allStopped(t *testing.T, pid int) bool {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue // a thread that ended
		}
		// "TID (comm) S ...": the state follows the last ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) || stat[i+2] != 'T' {
			return false
		}
	}
	return true
}

// checkLazyFree checks that a service process runs with
// GODEBUG=madvdontneed=0, which it sets by re-executing itself (same PID)
// at start (cmd/stria/goruntime.go), unless GODEBUG already chose.
func checkLazyFree(t *testing.T, p *proc) {
	t.Helper()
	if strings.Contains(os.Getenv("GODEBUG"), "madvdontneed=") {
		t.Logf("%s: not checked: this test's GODEBUG already sets madvdontneed", p.name)
		return
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	for _, kv := range strings.Split(string(environ), "\x00") {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			if !slices.Contains(strings.Split(v, ","), "madvdontneed=0") {
				t.Errorf("%s runs with GODEBUG=%s, want madvdontneed=0 in it", p.name, v)
			}
			return
		}
	}
	t.Errorf("%s runs without GODEBUG, want madvdontneed=0", p.name)
}
