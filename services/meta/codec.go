package meta

import (
	"encoding/binary"

	"github.com/stria/stria/api"
)

// Store key layout. Inode numbers and sequence numbers are 8-byte big-endian,
// so keys of one kind sort numerically and a directory's entries sort by name.
//
//	I<ino>            inode record (encodeInode)
//	D<parent><name>   directory entry -> <child ino 8><type 1> (type = mode>>12)
//	X<ino><name>      extended attribute value
//	O<ino>            orphan: unlinked but still open; empty value
//	B<ino>            data-on-MDT: the file's first bytes (up to its
//	                  Layout.DoMSize), as far as they were written
//	Q<ino><ost 4>     destroy queue: stripe object (ost, objid=ino) to remove
//	C<seq>            changelog outbox: JSON api.ChangeRecord, not yet published
//	M<name>           meta values: counters (next_ino, next_seq, inodes),
//	                  fsid, format
const (
	pfxInode   = 'I'
	pfxDent    = 'D'
	pfxXattr   = 'X'
	pfxOrphan  = 'O'
	pfxDoM     = 'B'
	pfxDestroy = 'Q'
	pfxChange  = 'C'
	pfxMeta    = 'M'
)

var (
	// keyCounters holds next_ino, next_seq and inodes (8 bytes each,
	// big-endian) in one value: a change that moves any of them writes
	// one key, not three (each key is a memtable insert under the store's
	// lock). Format 1 kept them apart, under keyFormat1Counters.
	keyCounters = []byte("Mcounters")
	keyFSID     = []byte("Mfsid")
	keyFormat   = []byte("Mformat")
	// keyClean is present while the store is closed after a clean stop.
	keyClean = []byte("Mclean")
)

// storeFormat is the on-disk format version written in Mformat. Format 1
// (the counters under three keys) is converted on open.
const storeFormat = 2

// keyFormat1Counters are format 1's counter keys, in keyCounters' order.
var keyFormat1Counters = [3][]byte{[]byte("Mnext_ino"), []byte("Mnext_seq"), []byte("Minodes")}

// counters is the value of keyCounters.
func counters(nextIno, nextSeq, inodes uint64) []byte {
	b := make([]byte, 0, 24)
	b = binary.BigEndian.AppendUint64(b, nextIno)
	b = binary.BigEndian.AppendUint64(b, nextSeq)
	return binary.BigEndian.AppendUint64(b, inodes)
}

func key8(pfx byte, n uint64) []byte {
	k := make([]byte, 9)
	k[0] = pfx
	binary.BigEndian.PutUint64(k[1:], n)
	return k
}

func key8s(pfx byte, n uint64, s string) []byte {
	k := make([]byte, 9, 9+len(s))
	k[0] = pfx
	binary.BigEndian.PutUint64(k[1:], n)
	return append(k, s...)
}

func inodeKey(ino uint64) []byte                { return key8(pfxInode, ino) }
func dentKey(parent uint64, name string) []byte { return key8s(pfxDent, parent, name) }
func dentPrefix(parent uint64) []byte           { return key8(pfxDent, parent) }
func xattrKey(ino uint64, name string) []byte   { return key8s(pfxXattr, ino, name) }
func xattrPrefix(ino uint64) []byte             { return key8(pfxXattr, ino) }
func orphanKey(ino uint64) []byte               { return key8(pfxOrphan, ino) }
func domKey(ino uint64) []byte                  { return key8(pfxDoM, ino) }
func changeKey(seq uint64) []byte               { return key8(pfxChange, seq) }

func destroyKey(ino uint64, ost uint32) []byte {
	k := key8(pfxDestroy, ino)
	return binary.BigEndian.AppendUint32(k, ost)
}

// prefixEnd is the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func putU64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// dent is a directory entry's value.
type dent struct {
	Ino  uint64
	Type uint8 // Mode >> 12
}

func encodeDent(d dent) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 9), d.Ino)
	return append(b, d.Type)
}

func decodeDent(b []byte) (dent, error) {
	if len(b) != 9 {
		return dent{}, api.Errorf(api.CodeCorrupt, "directory entry of %d bytes", len(b))
	}
	return dent{Ino: binary.BigEndian.Uint64(b), Type: b[8]}, nil
}

func typeOf(mode uint32) uint8 { return uint8((mode & api.ModeType) >> 12) }

// inode is the stored record of one inode.
type inode struct {
	api.Attr // Attr.Parent: see there; the root's parent is itself
	// Layout is a regular file's resolved layout (with Objects).
	Layout *api.Layout
	// DefLayout is a directory's own default layout, if set.
	DefLayout *api.Layout
	// Target is a symlink's body.
	Target string
	// NoXattrs: the inode never had an extended attribute, so deleting it
	// need not look for any (a Pebble iterator per unlink otherwise).
	// Records from before the flag read as false: looked for.
	NoXattrs bool
	// LazyObjects: the file's stripe objects (of a layout with a
	// Data-on-MDT region) are deferred: no OST holds any until a layout
	// intent clears the flag, so there is nothing to destroy. Records
	// from before the flag read as false: destroyed.
	LazyObjects bool
}

// setLayout gives a regular file a newly resolved layout, whose stripe
// objects are deferred when it has a Data-on-MDT region (LazyObjects).
func (in *inode) setLayout(l api.Layout) {
	in.Layout = &l
	in.LazyObjects = l.DoMSize != 0
}

func (in *inode) isDir() bool  { return in.Mode&api.ModeType == api.ModeDir }
func (in *inode) isReg() bool  { return in.Mode&api.ModeType == api.ModeReg }
func (in *inode) isLink() bool { return in.Mode&api.ModeType == api.ModeLink }

// Inode record encoding, version 1 (all integers big-endian):
//
//	version 1 | ino 8 | gen 8 | mode 4 | nlink 4 | uid 4 | gid 4 | rdev 4 |
//	size 8 | atime 8 | mtime 8 | ctime 8 | parent 8 | flags 1 |
//	[layout] if flags&1 | [default layout] if flags&2 | [target] if flags&4 |
//	[layout's DoM size 4] if flags&8 | [default layout's DoM size 4] if flags&16
//	(flags&32: the inode never had an extended attribute; flags&64: its
//	stripe objects are deferred, LazyObjects; no field for either)
//
//	layout = count 4 | size 4 | offset 4 | uvarint len + pool |
//	         uvarint n + n × (ost 4 | objid 8)
//	target = uvarint len + bytes
//
// (The DoM sizes came later: records without them decode as 0.)
const (
	inodeVersion   = 1
	inodeFixedLen  = 1 + 8 + 8 + 4*5 + 8*5 + 1
	flagLayout     = 1
	flagDefLayout  = 2
	flagTarget     = 4
	flagDoM        = 8
	flagDefDoM     = 16
	flagNoXattrs   = 32
	flagLazyObjs   = 64
	maxLayoutObjs  = api.MaxStripeCount
	maxEncodedPool = 255
)

func encodeInode(in *inode) []byte {
	b := make([]byte, 0, inodeFixedLen+64)
	b = append(b, inodeVersion)
	b = binary.BigEndian.AppendUint64(b, in.Ino)
	b = binary.BigEndian.AppendUint64(b, in.Gen)
	b = binary.BigEndian.AppendUint32(b, in.Mode)
	b = binary.BigEndian.AppendUint32(b, in.Nlink)
	b = binary.BigEndian.AppendUint32(b, in.UID)
	b = binary.BigEndian.AppendUint32(b, in.GID)
	b = binary.BigEndian.AppendUint32(b, in.Rdev)
	b = binary.BigEndian.AppendUint64(b, in.Size)
	b = binary.BigEndian.AppendUint64(b, uint64(in.Atime))
	b = binary.BigEndian.AppendUint64(b, uint64(in.Mtime))
	b = binary.BigEndian.AppendUint64(b, uint64(in.Ctime))
	b = binary.BigEndian.AppendUint64(b, in.Parent)
	var flags byte
	if in.Layout != nil {
		flags |= flagLayout
	}
	if in.DefLayout != nil {
		flags |= flagDefLayout
	}
	if in.Target != "" {
		flags |= flagTarget
	}
	if in.Layout != nil && in.Layout.DoMSize != 0 {
		flags |= flagDoM
	}
	if in.DefLayout != nil && in.DefLayout.DoMSize != 0 {
		flags |= flagDefDoM
	}
	if in.NoXattrs {
		flags |= flagNoXattrs
	}
	if in.LazyObjects {
		flags |= flagLazyObjs
	}
	b = append(b, flags)
	if in.Layout != nil {
		b = appendLayout(b, in.Layout)
	}
	if in.DefLayout != nil {
		b = appendLayout(b, in.DefLayout)
	}
	if in.Target != "" {
		b = binary.AppendUvarint(b, uint64(len(in.Target)))
		b = append(b, in.Target...)
	}
	if flags&flagDoM != 0 {
		b = binary.BigEndian.AppendUint32(b, in.Layout.DoMSize)
	}
	if flags&flagDefDoM != 0 {
		b = binary.BigEndian.AppendUint32(b, in.DefLayout.DoMSize)
	}
	return b
}

func appendLayout(b []byte, l *api.Layout) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(l.StripeCount))
	b = binary.BigEndian.AppendUint32(b, l.StripeSize)
	b = binary.BigEndian.AppendUint32(b, uint32(l.StripeOffset))
	b = binary.AppendUvarint(b, uint64(len(l.Pool)))
	b = append(b, l.Pool...)
	b = binary.AppendUvarint(b, uint64(len(l.Objects)))
	for _, o := range l.Objects {
		b = binary.BigEndian.AppendUint32(b, o.OST)
		b = binary.BigEndian.AppendUint64(b, o.ObjID)
	}
	return b
}

// decoder reads an inode record with bounds checks: a damaged record yields
// CodeCorrupt, never a panic.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) take(n int) []byte {
	if d.bad || n < 0 || len(d.b) < n {
		d.bad = true
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *decoder) uvarint(limit uint64) int {
	if d.bad {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > limit {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return int(v)
}

func (d *decoder) layout() *api.Layout {
	l := &api.Layout{
		StripeCount:  int32(d.u32()),
		StripeSize:   d.u32(),
		StripeOffset: int32(d.u32()),
	}
	l.Pool = string(d.take(d.uvarint(maxEncodedPool)))
	n := d.uvarint(maxLayoutObjs)
	if n > 0 && !d.bad {
		l.Objects = make([]api.StripeObject, n)
		for i := range l.Objects {
			l.Objects[i] = api.StripeObject{OST: d.u32(), ObjID: d.u64()}
		}
	}
	return l
}

func decodeInode(b []byte) (*inode, error) {
	if len(b) < inodeFixedLen || b[0] != inodeVersion {
		return nil, api.Errorf(api.CodeCorrupt, "inode record of %d bytes, version %d", len(b), firstByte(b))
	}
	d := decoder{b: b[1:]}
	in := &inode{}
	in.Ino = d.u64()
	in.Gen = d.u64()
	in.Mode = d.u32()
	in.Nlink = d.u32()
	in.UID = d.u32()
	in.GID = d.u32()
	in.Rdev = d.u32()
	in.Size = d.u64()
	in.Atime = int64(d.u64())
	in.Mtime = int64(d.u64())
	in.Ctime = int64(d.u64())
	in.Parent = d.u64()
	flags := d.take(1)
	if d.bad {
		return nil, api.Errorf(api.CodeCorrupt, "truncated inode record")
	}
	in.NoXattrs = flags[0]&flagNoXattrs != 0
	in.LazyObjects = flags[0]&flagLazyObjs != 0
	if flags[0]&flagLayout != 0 {
		in.Layout = d.layout()
	}
	if flags[0]&flagDefLayout != 0 {
		in.DefLayout = d.layout()
	}
	if flags[0]&flagTarget != 0 {
		in.Target = string(d.take(d.uvarint(api.MaxSymlinkLen)))
	}
	if flags[0]&flagDoM != 0 {
		if in.Layout == nil {
			d.bad = true
		} else {
			in.Layout.DoMSize = d.u32()
		}
	}
	if flags[0]&flagDefDoM != 0 {
		if in.DefLayout == nil {
			d.bad = true
		} else {
			in.DefLayout.DoMSize = d.u32()
		}
	}
	if d.bad || len(d.b) != 0 {
		return nil, api.Errorf(api.CodeCorrupt, "damaged inode record %d", in.Ino)
	}
	return in, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// clone returns a deep copy, so a transaction can change an inode without
// touching what another reader holds.
func (in *inode) clone() *inode {
	c := *in
	c.Layout = cloneLayout(in.Layout)
	c.DefLayout = cloneLayout(in.DefLayout)
	return &c
}

func cloneLayout(l *api.Layout) *api.Layout {
	if l == nil {
		return nil
	}
	c := *l
	c.Objects = append([]api.StripeObject(nil), l.Objects...)
	return &c
}
