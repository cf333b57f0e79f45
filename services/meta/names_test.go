package meta

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stria/stria/api"
)

// TestNameCacheMatchesStore runs random namespace changes over a few
// directories (creates, hard links, renames within and between them,
// unlinks, mkdir and rmdir, chmod), with the cache's bound small enough that it
// drops directories on the way, and checks every answer against a model
// of the namespace and, after every step, each directory the cache knows
// whole, and each inode record cached, against what the store holds.
func TestNameCacheMatchesStore(t *testing.T) {
	h := newHarness(t, 1)
	h.srv.st.mu.Lock()
	h.srv.st.names.limit = 24
	h.srv.st.mu.Unlock()

	type entry struct {
		ino uint64
		dir bool
	}
	model := map[uint64]map[string]entry{}
	var dirs []uint64
	addDir := func(parent uint64, name string) {
		ino := h.mkdir(parent, name)
		model[parent][name] = entry{ino, true}
		model[ino] = map[string]entry{}
		dirs = append(dirs, ino)
	}
	model[api.RootIno] = map[string]entry{}
	for i := range 4 {
		addDir(api.RootIno, fmt.Sprintf("d%d", i))
	}
	rng := rand.New(rand.NewPCG(7, 11))
	pick := func() (uint64, string) {
		return dirs[rng.IntN(len(dirs))], fmt.Sprintf("n%d", rng.IntN(12))
	}
	want := func(step int, what string, err error, code api.Code) {
		t.Helper()
		if codeOf(err) != code {
			t.Fatalf("step %d: %s: %v, want code %q", step, what, err, code)
		}
	}
	for step := range 800 {
		dir, name := pick()
		e, exists := model[dir][name]
		switch op := rng.IntN(8); op {
		case 0, 1: // create, exclusive
			var r api.EntryResp
			err := h.call(api.OpCreate, api.CreateReq{Parent: dir, Name: name, Mode: regMode, Exclusive: true}, &r)
			if exists {
				want(step, "create of an existing name", err, api.CodeExists)
				break
			}
			want(step, "create", err, api.CodeOK)
			model[dir][name] = entry{r.Attr.Ino, false}
		case 2: // unlink
			err := h.call(api.OpUnlink, api.UnlinkReq{Parent: dir, Name: name}, nil)
			switch {
			case !exists:
				want(step, "unlink of a missing name", err, api.CodeNotFound)
			case e.dir:
				want(step, "unlink of a directory", err, api.CodeIsDir)
			default:
				want(step, "unlink", err, api.CodeOK)
				delete(model[dir], name)
			}
		case 3: // rename over whatever file is there
			ndir, nname := pick()
			d, exists2 := model[ndir][nname]
			if !exists || e.dir || exists2 && d.dir {
				continue
			}
			err := h.call(api.OpRename, api.RenameReq{Parent: dir, Name: name, NewParent: ndir, NewName: nname}, nil)
			want(step, "rename", err, api.CodeOK)
			delete(model[dir], name)
			model[ndir][nname] = e
		case 4: // hard link
			ndir, nname := pick()
			if !exists || e.dir {
				continue
			}
			_, exists2 := model[ndir][nname]
			err := h.call(api.OpLink, api.LinkReq{Ino: e.ino, NewParent: ndir, NewName: nname}, nil)
			if exists2 {
				want(step, "link onto an existing name", err, api.CodeExists)
				break
			}
			want(step, "link", err, api.CodeOK)
			model[ndir][nname] = e
		case 5: // mkdir
			if exists || len(dirs) > 12 {
				continue
			}
			addDir(dir, name)
		case 7: // a file's attributes change (its cached record with them)
			if !exists || e.dir {
				continue
			}
			err := h.call(api.OpSetAttr, api.SetAttrReq{Ino: e.ino, Valid: api.SetMode, Mode: uint32(0o600 + rng.IntN(0o100))}, nil)
			want(step, "chmod", err, api.CodeOK)
		case 6: // rmdir
			if !exists || !e.dir {
				continue
			}
			err := h.call(api.OpUnlink, api.UnlinkReq{Parent: dir, Name: name, Dir: true}, nil)
			if len(model[e.ino]) > 0 {
				want(step, "rmdir of a directory with entries", err, api.CodeNotEmpty)
				break
			}
			want(step, "rmdir", err, api.CodeOK)
			delete(model[dir], name)
			delete(model, e.ino)
			for i, d := range dirs {
				if d == e.ino {
					dirs = append(dirs[:i], dirs[i+1:]...)
					break
				}
			}
			if len(dirs) == 0 {
				addDir(api.RootIno, fmt.Sprintf("again%d", step))
			}
		}
		checkNameCache(t, h.srv.st, step)
	}
	// Every directory still reads as the model says, cached or not.
	for dir, names := range model {
		for name, e := range names {
			r, err := h.lookup(dir, name)
			if err != nil || r.Attr.Ino != e.ino {
				t.Fatalf("lookup %d/%s: %+v, %v; want inode %d", dir, name, r.Attr, err, e.ino)
			}
		}
	}
}

// checkNameCache compares each directory st.names knows whole with the
// store's entries, and its count of entries with theirs; and each inode
// record cached with the stored one.
func checkNameCache(t *testing.T, st *store, step int) {
	t.Helper()
	st.mu.Lock()
	defer st.mu.Unlock()
	total := 0
	for dir, names := range st.names.dirs {
		total += len(names)
		p := dentPrefix(dir)
		it, err := st.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
		if err != nil {
			t.Fatal(err)
		}
		stored := map[string]dent{}
		for ok := it.First(); ok; ok = it.Next() {
			d, err := decodeDent(it.Value())
			if err != nil {
				t.Fatal(err)
			}
			stored[string(it.Key()[len(p):])] = d
		}
		it.Close()
		if len(stored) != len(names) {
			t.Fatalf("step %d: directory %d: cache holds %d names, store %d", step, dir, len(names), len(stored))
		}
		for name, d := range stored {
			if c, ok := names[name]; !ok || c != d {
				t.Fatalf("step %d: directory %d, %q: cache %+v (%v), store %+v", step, dir, name, c, ok, d)
			}
		}
	}
	for _, c := range []inodeCache{st.dirInodes, st.fileInodes} {
		for ino, v := range c.m {
			stored, err := get(st.db, inodeKey(ino))
			if err != nil || string(stored) != string(v) {
				t.Fatalf("step %d: inode %d cached %x, stored %x (%v)", step, ino, v, stored, err)
			}
		}
	}
	if total != st.names.entries {
		t.Fatalf("step %d: cache counts %d names, holds %d", step, st.names.entries, total)
	}
	if st.names.entries > st.names.limit {
		t.Fatalf("step %d: cache holds %d names, over its bound %d", step, st.names.entries, st.names.limit)
	}
}
