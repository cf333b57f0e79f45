package api

import (
	"encoding/json"
	"fmt"
)

// Filesystem-wide layout defaults, as in Lustre.
const (
	DefaultStripeCount = 1
	DefaultStripeSize  = 1 << 20
	// StripeSizeUnit: a stripe size must be a multiple of it.
	StripeSizeUnit = 64 << 10
	// MaxStripeSize bounds one stripe (Lustre allows up to 4 GiB; we keep
	// one stripe within a single OST frame's reach).
	MaxStripeSize = 4<<30 - StripeSizeUnit
	// MaxDoMSize bounds a layout's Data-on-MDT region (Lustre's default
	// dom_stripesize limit).
	MaxDoMSize = 1 << 20
	// MaxStripeCount is the most stripes one file may have.
	MaxStripeCount = 2000
	// LayoutXattr is the virtual xattr holding a file's layout (a
	// directory's default layout) as JSON; getfattr -n stria.layout shows it.
	LayoutXattr = "stria.layout"
	// NATSXattr is a virtual xattr on every node of a mount that names the
	// NATS URL of its cluster, so admin verbs can find it from a path.
	NATSXattr = "stria.nats"
	// FSNameXattr names the file system (the subject prefix) the same way.
	FSNameXattr = "stria.fsname"
	// LockXattr, read on a directory, tells whether the mount holds its
	// lock ("held", "asking", "unlocked", or "lapsed" while its lease is
	// not renewed), as lctl shows Lustre's.
	LockXattr = "stria.lock"
)

// StripeObject is one stripe of a file: which OST holds it and its object id
// there (Lustre's obdidx and objid).
type StripeObject struct {
	OST   uint32 `json:"ost"`
	ObjID uint64 `json:"objid"`
}

// Layout describes how a file's bytes are spread over OSTs. On a directory it
// is the default that new files below inherit, and Objects is empty.
type Layout struct {
	// StripeCount is the number of stripes; -1 in a request means all OSTs.
	StripeCount int32 `json:"stripe_count"`
	// StripeSize is the bytes written to one stripe before moving on.
	StripeSize uint32 `json:"stripe_size"`
	// StripeOffset is the index of the first OST, -1 to let meta choose.
	StripeOffset int32  `json:"stripe_offset"`
	Pool         string `json:"pool,omitempty"`
	// DoMSize is how many bytes at the start of the file live on the
	// metadata target rather than the OSTs (Lustre's Data-on-MDT
	// component): file offsets below it are meta's, those from it on are
	// striped over Objects as if the region were not there (the objects
	// hold a hole where it would be). 0: none.
	DoMSize uint32         `json:"dom_size,omitempty"`
	Objects []StripeObject `json:"objects,omitempty"`
}

// DefaultLayout is the filesystem default: 1 stripe of 1 MiB, any OST, no
// Data-on-MDT (as Lustre's: a region pays for files that outgrow it, so it
// is set where small files live).
func DefaultLayout() Layout {
	return Layout{StripeCount: DefaultStripeCount, StripeSize: DefaultStripeSize, StripeOffset: -1}
}

// ValidateRequest checks a layout as a user asked for it (setstripe), given
// how many OSTs are up. It does not look at Objects.
func (l Layout) ValidateRequest(ostCount int) error {
	switch {
	case l.StripeSize == 0:
		return Errorf(CodeInvalid, "stripe size must be set")
	case l.StripeSize%StripeSizeUnit != 0:
		return Errorf(CodeInvalid, "stripe size %d is not a multiple of 64 KiB", l.StripeSize)
	case l.StripeCount == 0 || l.StripeCount < -1:
		return Errorf(CodeInvalid, "stripe count %d: must be positive or -1 (all OSTs)", l.StripeCount)
	case l.StripeCount > MaxStripeCount:
		return Errorf(CodeInvalid, "stripe count %d exceeds the maximum %d", l.StripeCount, MaxStripeCount)
	case ostCount >= 0 && int(l.StripeCount) > ostCount:
		return Errorf(CodeInvalid, "stripe count %d is larger than the %d OSTs available", l.StripeCount, ostCount)
	case l.StripeOffset < -1:
		return Errorf(CodeInvalid, "stripe offset %d: must be an OST index or -1", l.StripeOffset)
	}
	return l.validDoM(CodeInvalid)
}

func (l Layout) validDoM(code Code) error {
	switch {
	case l.DoMSize%StripeSizeUnit != 0:
		return Errorf(code, "data-on-MDT size %d is not a multiple of 64 KiB", l.DoMSize)
	case l.DoMSize > MaxDoMSize:
		return Errorf(code, "data-on-MDT size %d exceeds the maximum %d", l.DoMSize, MaxDoMSize)
	}
	return nil
}

// ValidateFile checks a file's concrete layout before any I/O trusts it.
func (l Layout) ValidateFile() error {
	if l.StripeSize == 0 || l.StripeSize%StripeSizeUnit != 0 {
		return Errorf(CodeCorrupt, "file layout has stripe size %d", l.StripeSize)
	}
	if len(l.Objects) == 0 || int(l.StripeCount) != len(l.Objects) {
		return Errorf(CodeCorrupt, "file layout has %d objects for stripe count %d", len(l.Objects), l.StripeCount)
	}
	return l.validDoM(CodeCorrupt)
}

// XattrValue renders the layout as the stria.layout xattr shows it (JSON).
func (l Layout) XattrValue() []byte {
	b, _ := json.Marshal(l) // plain struct: cannot fail
	return b
}

// ParseLayout reads a layout from the xattr form.
func ParseLayout(b []byte) (Layout, error) {
	var l Layout
	if err := json.Unmarshal(b, &l); err != nil {
		return Layout{}, Errorf(CodeInvalid, "layout: %v", err)
	}
	return l, nil
}

// Piece is the part of a file extent that falls in one stripe object.
type Piece struct {
	Stripe int   // index into Layout.Objects
	ObjOff int64 // offset within the stripe object
	BufOff int   // offset within the caller's buffer
	Len    int   // bytes
}

// MapExtent splits [off, off+n) of a file into per-stripe pieces, in file
// order. Adjacent pieces on the same stripe are not merged: each piece is at
// most one stripe unit.
func (l Layout) MapExtent(off int64, n int, out []Piece) []Piece {
	size := int64(l.StripeSize)
	count := int64(len(l.Objects))
	out = out[:0]
	done := 0
	for done < n {
		pos := off + int64(done)
		unit := pos / size
		within := pos % size
		chunk := int(min(size-within, int64(n-done)))
		out = append(out, Piece{
			Stripe: int(unit % count),
			ObjOff: (unit/count)*size + within,
			BufOff: done,
			Len:    chunk,
		})
		done += chunk
	}
	return out
}

// ObjectSize is the length of stripe i's object when the file is fileSize
// bytes long: what truncate cuts each object to.
func (l Layout) ObjectSize(i int, fileSize int64) int64 {
	size := int64(l.StripeSize)
	count := int64(len(l.Objects))
	full := fileSize / (size * count)
	rem := fileSize % (size * count)
	tail := min(max(rem-int64(i)*size, 0), size)
	return full*size + tail
}

// String is for logs and errors.
func (l Layout) String() string {
	return fmt.Sprintf("count=%d size=%d offset=%d dom=%d objects=%v", l.StripeCount, l.StripeSize, l.StripeOffset, l.DoMSize, l.Objects)
}
