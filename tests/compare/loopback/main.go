// Command loopback mounts a go-fuse loopback of SRC at MNT with the mount
// options of package loopfs (Stria's options and read-ahead window, FUSE
// passthrough off, 1 MiB max_write), prints "ready" once mounted and serves until SIGTERM or
// SIGINT, then unmounts. scripts/compare.sh runs it as the "go-fuse
// loopback" reference: the ceiling any go-fuse file system reaches here.
//
//	loopback SRC MNT
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/stria/stria/tests/loopfs"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: loopback SRC MNT")
		os.Exit(2)
	}
	src, mnt := os.Args[1], os.Args[2]
	server, err := loopfs.Mount(src, mnt)
	if err != nil {
		fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		server.Wait()
		close(done)
	}()
	fmt.Println("ready")
	select {
	case <-sig:
		// Unmount fails while a process still has the mount busy; retry
		// for a while, then fall back to a lazy unmount.
		for i := 0; ; i++ {
			err := server.Unmount()
			if err == nil {
				break
			}
			if i == 50 {
				fmt.Fprintf(os.Stderr, "loopback: unmount: %v; detaching\n", err)
				syscall.Unmount(mnt, syscall.MNT_DETACH)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		<-done
	case <-done:
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "loopback:", err)
	os.Exit(1)
}
