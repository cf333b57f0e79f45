// Package loopfs mounts the reference every Stria benchmark is compared
// with: a go-fuse loopback of a local directory with Stria's own mount
// options (FUSE passthrough off, 1 MiB max_write, the same kernel
// read-ahead window) — the ceiling any go-fuse file system reaches. The
// kernel keeps its names and attributes 1 s (go-fuse's usual timeouts; a
// loopback has one client, nothing to stay coherent with), as Stria's
// mount did for what no lock covers before those became 0.
package loopfs

import (
	"fmt"
	"os"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stria/stria/gateway"
)

// Mount mounts a loopback of src at mnt (both created if absent).
func Mount(src, mnt string) (*fuse.Server, error) {
	for _, d := range []string{src, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	root, err := fs.NewLoopbackRoot(src)
	if err != nil {
		return nil, err
	}
	entry, attr := time.Second, time.Second
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:           true,
			DirectMount:          true,
			FsName:               src,
			Name:                 "loopback",
			Options:              []string{"default_permissions"},
			MaxWrite:             1 << 20,
			MaxReadAhead:         1 << 20,
			DisableSplice:        true,
			MaxBackground:        64,
			DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		},
		EntryTimeout: &entry,
		AttrTimeout:  &attr,
	}
	var zero time.Duration
	opts.NegativeTimeout = &zero
	server, err := fs.Mount(mnt, root, opts)
	if err != nil {
		return nil, err
	}
	if err := gateway.SetReadAhead(mnt, gateway.NewConfig().ReadAheadKB); err != nil {
		server.Unmount()
		return nil, fmt.Errorf("loopback read-ahead: %w", err)
	}
	return server, nil
}
