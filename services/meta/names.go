package meta

// nameCache holds, in memory, every entry of directories meta knows whole:
// those made since the store was opened, empty at birth, every entry added
// or removed since through a mutation. A mutation's name checks there (the
// create that must find its name free, the unlink that looks its name up)
// are then map lookups rather than Pebble reads, each a seek through a
// memtable of tens of MiB whose nodes are cache misses on this machine: the
// existence check alone was a tenth of the mount's CPU per create. Other
// directories are read from the store as before. It is guarded by store.mu
// and changed only after a batch is applied, so it shows the committed
// state, as a mutation's reads do.
type nameCache struct {
	dirs    map[uint64]map[string]dent
	entries int
	limit   int
}

// maxCachedNames bounds the names held over all directories (some 80 bytes
// each); past it whole directories are dropped and read from the store
// again.
const maxCachedNames = 1 << 19

func newNameCache(limit int) nameCache {
	return nameCache{dirs: map[uint64]map[string]dent{}, limit: limit}
}

// lookup answers for a directory known whole (known false: ask the store).
func (c *nameCache) lookup(parent uint64, name string) (d dent, found, known bool) {
	names, ok := c.dirs[parent]
	if !ok {
		return dent{}, false, false
	}
	d, found = names[name]
	return d, found, true
}

// size is how many entries a directory known whole holds.
func (c *nameCache) size(dir uint64) (n int, known bool) {
	names, known := c.dirs[dir]
	return len(names), known
}

// nameChange is one entry a mutation sets (or deletes: del).
type nameChange struct {
	parent uint64
	name   string
	d      dent
	del    bool
}

// applied brings the cache up to a mutation's batch, once it is applied:
// directories it made (known whole, empty) and removed, and the entries it
// changed in directories known whole.
func (c *nameCache) applied(made, gone []uint64, changes []nameChange) {
	for _, dir := range made {
		c.dirs[dir] = map[string]dent{}
	}
	for _, ch := range changes {
		names, ok := c.dirs[ch.parent]
		if !ok {
			continue
		}
		_, had := names[ch.name]
		switch {
		case ch.del && had:
			delete(names, ch.name)
			c.entries--
		case !ch.del:
			names[ch.name] = ch.d
			if !had {
				c.entries++
			}
		}
	}
	for _, dir := range gone {
		c.entries -= len(c.dirs[dir])
		delete(c.dirs, dir)
	}
	if c.entries > c.limit {
		for dir, names := range c.dirs { // at random, to 7/8 of the bound
			if c.entries <= c.limit*7/8 {
				break
			}
			c.entries -= len(names)
			delete(c.dirs, dir)
		}
	}
}
