package ost

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// filePool keeps the emptied data files of destroyed objects for new
// objects to take, so that a file system that churns through small objects
// neither frees nor allocates an inode for each.
//
// Why: creating a file makes the file system allocate an inode, and on
// ext4 without a journal that allocation skips, one by one, every inode
// freed in the last minutes (recently_deleted). After a run of unlinks,
// profiles of small-file writes here spent a quarter of the OST's CPU
// there, and a new 4 KiB object cost ten times its write. Taking a file
// from the pool is one rename and one open instead.
//
// A destroyed object's data file is renamed into the pool (so the object is
// gone as at once as with unlink) and then truncated; a new object's data
// file is renamed out of it. Pool files are named by a counter. A crash
// between the rename and the truncation leaves data in a pool file, which
// openPool empties. The pool holds at most max files; past that, destroy
// unlinks.
type filePool struct {
	dir string
	max int
	log *slog.Logger

	mu   sync.Mutex
	free []uint64 // names of empty files in dir, taken last-in first-out
	next uint64   // name of the next file put in the pool
	off  bool     // renames into or out of dir failed: destroy unlinks
}

// maxPooledFiles bounds each OST's pool: a few MiB of inodes at most,
// and enough to cover a burst of small files created after as many
// were removed.
const maxPooledFiles = 16384

// openPool prepares the pool directory dir and takes stock of what a
// previous run left there, emptying files a crash left with data and
// removing any beyond limit.
func openPool(dir string, limit int, log *slog.Logger) (*filePool, error) {
	p := &filePool{dir: dir, max: limit, log: log}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("creating file pool: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("opening file pool: %w", err)
	}
	defer d.Close()
	for {
		names, rerr := d.Readdirnames(4096)
		for _, name := range names {
			id, perr := strconv.ParseUint(name, 16, 64)
			if perr != nil || len(name) != 16 {
				continue // not ours
			}
			p.next = max(p.next, id+1)
			path := filepath.Join(dir, name)
			if len(p.free) >= p.max {
				if err := os.Remove(path); err != nil {
					return nil, fmt.Errorf("trimming file pool: %w", err)
				}
				continue
			}
			if err := emptyFile(path); err != nil {
				return nil, err
			}
			p.free = append(p.free, id)
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("reading file pool: %w", rerr)
		}
	}
	return p, nil
}

// emptyFile empties path unless it is empty already.
func emptyFile(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("file pool: %w", &fs.PathError{Op: "stat", Path: path, Err: err})
	}
	if st.Size == 0 {
		return nil
	}
	if err := truncateAndClose(path); err != nil {
		return fmt.Errorf("file pool: %w", err)
	}
	return nil
}

// truncateAndClose empties the file at path through a descriptor it
// closes at once. ext4 marks a file truncated to zero so that its next
// close starts writing back what was written since (its guard for
// programs that replace a file's contents without fsync): a pooled file
// truncated by path would carry that mark to the new object, whose
// eviction from the handle cache would then start a writeback in the
// middle of a request. Closing here, with nothing to write, clears it.
func truncateAndClose(path string) error {
	f, err := openFile(path, unix.O_WRONLY|unix.O_TRUNC, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

func (p *filePool) path(id uint64) string { return filepath.Join(p.dir, fmt.Sprintf("%016x", id)) }

// give adds the empty file named id to what the pool hands out.
func (p *filePool) give(id uint64) {
	p.mu.Lock()
	p.free = append(p.free, id)
	p.mu.Unlock()
}

// put moves the data file at path into the pool and empties it. It
// reports whether it did; if not, the caller removes the file. An absent
// file is not put (the caller's remove reports it absent).
func (p *filePool) put(path string) bool {
	p.mu.Lock()
	if p.off || len(p.free) >= p.max {
		p.mu.Unlock()
		return false
	}
	id := p.next
	p.next++
	p.mu.Unlock()
	dst := p.path(id)
	if err := unix.Renameat2(unix.AT_FDCWD, path, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE); err != nil {
		if !errors.Is(err, unix.ENOENT) {
			p.disable("putting a file in the pool", err)
		}
		return false
	}
	// The object is gone now; the file only has to be emptied.
	if err := truncateAndClose(dst); err != nil {
		p.log.Warn("file pool: emptying a destroyed object's file; removing it instead", "path", dst, "err", err)
		if err := os.Remove(dst); err != nil {
			p.log.Warn("file pool: removing a file", "path", dst, "err", err)
		}
		return true
	}
	p.give(id)
	return true
}

// take moves an empty file from the pool to path, which must not exist,
// and opens it. It returns nil, nil when the pool has none to give.
func (p *filePool) take(path string) (*os.File, error) {
	p.mu.Lock()
	if p.off || len(p.free) == 0 {
		p.mu.Unlock()
		return nil, nil
	}
	id := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	p.mu.Unlock()
	src := p.path(id)
	if err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) {
			// path exists: give the file back; the caller's exclusive
			// create reports the conflict.
			p.give(id)
			return nil, nil
		}
		if !errors.Is(err, unix.ENOENT) { // ENOENT: removed by hand
			p.disable("taking a file from the pool", err)
		}
		return nil, nil
	}
	return openFile(path, unix.O_RDWR, 0)
}

// disable stops using the pool after a rename failed for a reason other
// than a name conflict: another file system under the pool directory, or
// no renameat2 flags. Destroys then unlink and creates create, as without
// a pool.
func (p *filePool) disable(what string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.off {
		p.off = true
		p.log.Warn("file pool: rename failed; destroyed objects' files are now removed", "what", what, "dir", p.dir, "err", err)
	}
}
