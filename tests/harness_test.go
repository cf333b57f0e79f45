// Package tests holds Stria's end-to-end tests: they build the stria
// command, start it as a user would, and work through the real FUSE mount.
package tests

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// striaBin is the stria command built once for the whole run.
var striaBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "stria-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	striaBin = filepath.Join(dir, "stria")
	build := exec.Command("go", "build", "-o", striaBin, "github.com/stria/stria/cmd/stria")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building stria:", err)
		return 1
	}
	return m.Run()
}

// needFUSE skips a test that needs a real mount where the machine cannot
// give one: no /dev/fuse, or not root (DirectMount needs root).
func needFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("skipped: /dev/fuse is absent on this machine, so no FUSE mount can be made")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipped: mounting without fusermount needs root")
	}
}

// proc is a stria process the test started; it is ended by PID.
type proc struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}
	err    error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start runs stria with args and, if readyText is not empty, waits until a
// line containing it appears on stdout or stderr.
func start(t testing.TB, name, readyText string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(striaBin, args...)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, cmd: cmd, stderr: &lockedBuffer{}, done: make(chan struct{})}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	ready := make(chan struct{})
	var once sync.Once
	scan := func(r io.Reader) {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line := sc.Text()
			p.stderr.Write([]byte(line + "\n"))
			if readyText != "" && strings.Contains(line, readyText) {
				once.Do(func() { close(ready) })
			}
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); scan(stdout) }()
	go func() { defer wg.Done(); scan(errPipe) }()
	go func() {
		wg.Wait()
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, tail(p.stderr.String(), 200))
		}
	})
	if readyText == "" {
		return p
	}
	select {
	case <-ready:
	case <-p.done:
		t.Fatalf("%s exited before ready (%v):\n%s", name, p.err, p.stderr.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s not ready after 2m:\n%s", name, p.stderr.String())
	}
	return p
}

// stop sends SIGTERM and waits; after 30 s it kills.
func (p *proc) stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Logf("%s did not stop on SIGTERM; killing. Output:\n%s", p.name, p.stderr.String())
		p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// kill ends the process with SIGKILL, as a crash would.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// cluster is a `stria up` under test.
type upCluster struct {
	t    testing.TB
	data string
	mnt  string
	osts int
	args []string
	p    *proc
}

// startUp runs `stria up` on a fresh (or given) state directory.
func startUp(t testing.TB, data string, osts int, extra ...string) *upCluster {
	t.Helper()
	needFUSE(t)
	if data == "" {
		data = t.TempDir()
	}
	mnt := t.TempDir()
	// t.TempDir makes 0700 directories; other users must reach the mount.
	os.Chmod(filepath.Dir(mnt), 0o755)
	c := &upCluster{t: t, data: data, mnt: mnt, osts: osts, args: extra}
	c.up()
	t.Cleanup(func() { c.down(); detach(mnt) })
	return c
}

func (c *upCluster) up() {
	c.t.Helper()
	args := append([]string{"up", "--data", c.data, "--mount", c.mnt, "--osts", fmt.Sprint(c.osts)}, c.args...)
	c.p = start(c.t, "stria up", "stria: ready", nil, args...)
}

// down stops stria up cleanly (SIGTERM: unmount, stop services).
func (c *upCluster) down() {
	if c.p == nil {
		return
	}
	if err := c.p.stop(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !strings.Contains(c.p.stderr.String(), "killed") {
			c.t.Logf("stria up exited with %v:\n%s", err, c.p.stderr.String())
		}
	}
	c.p = nil
}

// restart stops and starts stria up on the same state directory.
func (c *upCluster) restart() {
	c.down()
	c.up()
}

// crash kills stria up with SIGKILL, leaving its dead mount behind for
// the next stria up to clear, as after a real crash.
func (c *upCluster) crash() {
	c.p.kill()
	c.p = nil
}

func (c *upCluster) path(parts ...string) string {
	return filepath.Join(append([]string{c.mnt}, parts...)...)
}

// detach lazily unmounts a mount whose server died (a no-op otherwise).
func detach(mnt string) {
	syscall.Unmount(mnt, syscall.MNT_DETACH)
}

// stria runs an admin verb and returns its combined output.
func stria(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, striaBin, args...).CombinedOutput()
	return string(out), err
}

// setstripe runs `stria setstripe ARGS` and fails the test if it fails.
func setstripe(t testing.TB, args ...string) {
	t.Helper()
	if out, err := stria(t, append([]string{"setstripe"}, args...)...); err != nil {
		t.Fatalf("setstripe %v: %v\n%s", args, err, out)
	}
}

// eventually polls cond until it holds or the bound passes.
func eventually(t testing.TB, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", bound, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
