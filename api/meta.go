package api

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits enforced by meta and checked early by the gateway.
const (
	MaxNameLen      = 255
	MaxSymlinkLen   = 4095
	MaxXattrNameLen = 255
	MaxXattrSize    = 64 << 10
	MaxReadDirPage  = 4096
	RootIno         = 1
)

// MetaOps lists the metadata RPC operations; each is served on the subject
// MetaSubject(fsname, op).
var MetaOps = []string{
	OpLookup, OpGetAttr, OpSetAttr, OpCreate, OpLink, OpUnlink, OpRename,
	OpReadDir, OpReadlink, OpGetXattr, OpSetXattr, OpListXattr, OpRemoveXattr,
	OpGetLayout, OpSetLayout, OpUpdateSize, OpSync, OpStatFS, OpReleaseOrphan,
	OpDoMWrite, OpDoMRead, OpLayoutIntent,
}

// Metadata operations.
const (
	OpLookup        = "lookup"
	OpGetAttr       = "getattr"
	OpSetAttr       = "setattr"
	OpCreate        = "create"
	OpLink          = "link"
	OpUnlink        = "unlink"
	OpRename        = "rename"
	OpReadDir       = "readdir"
	OpReadlink      = "readlink"
	OpGetXattr      = "getxattr"
	OpSetXattr      = "setxattr"
	OpListXattr     = "listxattr"
	OpRemoveXattr   = "removexattr"
	OpGetLayout     = "getlayout"
	OpSetLayout     = "setlayout"
	OpUpdateSize    = "updatesize"
	OpSync          = "sync"
	OpStatFS        = "statfs"
	OpReleaseOrphan = "releaseorphan"
	OpDoMWrite      = "domwrite"
	OpDoMRead       = "domread"
	OpLayoutIntent  = "layoutintent"
)

// MetaSubject is the NATS subject of one metadata operation.
func MetaSubject(fsname, op string) string { return "stria." + fsname + ".meta." + op }

// ChangelogSubject is the JetStream subject namespace changes are published on.
func ChangelogSubject(fsname string) string { return "stria." + fsname + ".changelog" }

// ChangelogStream is the JetStream stream holding the changelog.
func ChangelogStream(fsname string) string { return "STRIA_" + strings.ToUpper(fsname) + "_CHANGELOG" }

// EtcdPrefix is the root of a file system's keys in etcd.
func EtcdPrefix(fsname string) string { return "/stria/" + fsname + "/" }

// ValidFSName reports whether a file system name is usable in subjects and keys.
func ValidFSName(name string) error {
	if name == "" || len(name) > 32 {
		return Errorf(CodeInvalid, "fsname %q: 1 to 32 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return Errorf(CodeInvalid, "fsname %q: only a-z, 0-9 and _", name)
		}
	}
	return nil
}

// Attr is an inode's attributes. Times are Unix nanoseconds.
type Attr struct {
	Ino   uint64 `json:"ino"`
	Gen   uint64 `json:"gen,omitempty"`
	Mode  uint32 `json:"mode"`
	Nlink uint32 `json:"nlink"`
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
	Rdev  uint32 `json:"rdev,omitempty"`
	Size  uint64 `json:"size"`
	Atime int64  `json:"atime"`
	Mtime int64  `json:"mtime"`
	Ctime int64  `json:"ctime"`
	// Parent is a directory's parent directory, and a non-directory's only
	// directory while it has one link (0 when it has several, or came from
	// a store older than this field). A client caches a non-directory's
	// attributes under the lock of this directory (lock.go).
	Parent uint64 `json:"parent,omitempty"`
}

// File type bits of Attr.Mode (as in stat(2)).
const (
	ModeType = 0o170000
	ModeDir  = 0o040000
	ModeReg  = 0o100000
	ModeLink = 0o120000
	ModeFIFO = 0o010000
	ModeSock = 0o140000
	ModeChr  = 0o020000
	ModeBlk  = 0o060000
)

// The set-ID bits of Attr.Mode.
const (
	ModeSetuid = 0o4000
	ModeSetgid = 0o2000
)

// KillSUIDGID is mode as a write, truncate or chown leaves it (SetKillSUIDGID):
// without set-user-ID, and without set-group-ID where the group may
// execute (without it the bit marks mandatory locking, which stays).
func KillSUIDGID(mode uint32) uint32 {
	mode &^= ModeSetuid
	if mode&0o010 != 0 {
		mode &^= ModeSetgid
	}
	return mode
}

func (a Attr) IsDir() bool { return a.Mode&ModeType == ModeDir }
func (a Attr) IsReg() bool { return a.Mode&ModeType == ModeReg }

// Caller is who asks: owner of new inodes.
type Caller struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

type LookupReq struct {
	Parent uint64 `json:"parent"`
	Name   string `json:"name"`
}

// EntryResp answers lookup, create and link: the inode and, for a regular
// file, its layout so I/O needs no further round trip.
type EntryResp struct {
	Attr    Attr    `json:"attr"`
	Layout  *Layout `json:"layout,omitempty"`
	Created bool    `json:"created,omitempty"`
	// Parent is the directory's attributes after a create or link changed
	// it, so the client's cache of them stays current without a getattr.
	Parent *Attr `json:"parent,omitempty"`
}

type InoReq struct {
	Ino uint64 `json:"ino"`
}

type AttrResp struct {
	Attr Attr `json:"attr"`
}

// SetAttr valid bits.
const (
	SetMode     = 1 << 0
	SetUID      = 1 << 1
	SetGID      = 1 << 2
	SetSize     = 1 << 3
	SetAtime    = 1 << 4
	SetMtime    = 1 << 5
	SetAtimeNow = 1 << 6
	SetMtimeNow = 1 << 7
	SetCtime    = 1 << 8
	// SetKillSUIDGID clears a regular file's set-user-ID bit, and its
	// set-group-ID bit where the group may execute, as the kernel does on
	// a write, truncate or chown by a caller without CAP_FSETID. Alone,
	// with neither bit set, it changes nothing, ctime included.
	SetKillSUIDGID = 1 << 9
)

type SetAttrReq struct {
	Ino   uint64 `json:"ino"`
	Valid uint32 `json:"valid"`
	Mode  uint32 `json:"mode,omitempty"`
	UID   uint32 `json:"uid,omitempty"`
	GID   uint32 `json:"gid,omitempty"`
	Size  uint64 `json:"size,omitempty"`
	Atime int64  `json:"atime,omitempty"`
	Mtime int64  `json:"mtime,omitempty"`
	Ctime int64  `json:"ctime,omitempty"`
}

// CreateReq makes a file, directory, symlink or special file; Mode carries
// the type bits. Target is the symlink body.
type CreateReq struct {
	Parent    uint64  `json:"parent"`
	Name      string  `json:"name"`
	Mode      uint32  `json:"mode"`
	Rdev      uint32  `json:"rdev,omitempty"`
	Caller    Caller  `json:"caller"`
	Exclusive bool    `json:"exclusive,omitempty"`
	Target    string  `json:"target,omitempty"`
	Layout    *Layout `json:"layout,omitempty"`
}

type LinkReq struct {
	Ino       uint64 `json:"ino"`
	NewParent uint64 `json:"new_parent"`
	NewName   string `json:"new_name"`
}

type UnlinkReq struct {
	Parent uint64 `json:"parent"`
	Name   string `json:"name"`
	Dir    bool   `json:"dir,omitempty"`
	// KeepOpen: the caller still has the file open; if this was the last
	// link the inode becomes an orphan kept until OpReleaseOrphan.
	KeepOpen bool `json:"keep_open,omitempty"`
}

type UnlinkResp struct {
	Ino   uint64 `json:"ino"`
	Nlink uint32 `json:"nlink"`
	// Parent is the directory's attributes after the removal.
	Parent *Attr `json:"parent,omitempty"`
}

// Rename flags (renameat2).
const (
	RenameNoReplace = 1 << 0
	RenameExchange  = 1 << 1
)

type RenameReq struct {
	Parent    uint64 `json:"parent"`
	Name      string `json:"name"`
	NewParent uint64 `json:"new_parent"`
	NewName   string `json:"new_name"`
	Flags     uint32 `json:"flags,omitempty"`
	KeepOpen  bool   `json:"keep_open,omitempty"`
}

type RenameResp struct {
	// Replaced is the inode the rename unlinked, if any, and its links left.
	Replaced      uint64 `json:"replaced,omitempty"`
	ReplacedNlink uint32 `json:"replaced_nlink,omitempty"`
}

type ReadDirReq struct {
	Ino   uint64 `json:"ino"`
	After string `json:"after,omitempty"`
	Limit int    `json:"limit"`
}

type DirEntry struct {
	Name string `json:"name"`
	Attr Attr   `json:"attr"`
}

type ReadDirResp struct {
	Entries []DirEntry `json:"entries"`
	More    bool       `json:"more"`
}

type ReadlinkResp struct {
	Target string `json:"target"`
}

// Setxattr flags (setxattr(2)).
const (
	XattrCreate  = 1
	XattrReplace = 2
)

type XattrReq struct {
	Ino   uint64 `json:"ino"`
	Name  string `json:"name,omitempty"`
	Value []byte `json:"value,omitempty"`
	Flags uint32 `json:"flags,omitempty"`
}

type XattrResp struct {
	Value []byte   `json:"value,omitempty"`
	Names []string `json:"names,omitempty"`
}

type LayoutReq struct {
	Ino    uint64 `json:"ino"`
	Layout Layout `json:"layout"`
}

type LayoutResp struct {
	Layout Layout `json:"layout"`
	// Inherited: the directory has no layout of its own; this is what new
	// files would get.
	Inherited bool `json:"inherited,omitempty"`
}

// UpdateSizeReq records that writes reached Size: the size grows to it, never
// shrinks (truncation is SetAttr).
type UpdateSizeReq struct {
	Ino   uint64 `json:"ino"`
	Size  uint64 `json:"size"`
	Mtime int64  `json:"mtime"`
}

// DoMWriteReq writes Data at Off of a file's Data-on-MDT region (see
// Layout.DoMSize), which it must not cross. Like a write to an OST, it
// changes neither size nor mtime (UpdateSize does); it is durable after
// the next OpSync.
type DoMWriteReq struct {
	Ino  uint64 `json:"ino"`
	Off  int64  `json:"off"`
	Data []byte `json:"data"`
}

// LayoutIntentReq tells meta that the caller is about to write to a file's
// stripe objects past its Data-on-MDT region (a write, a fallocate, a
// truncate that extends the file there): Lustre's layout intent, which
// instantiates a PFL component on its first use. A file with a region has
// object ids from its creation but no objects on the OSTs until then, so
// the many small files that fit their region are created and removed
// without an OST ever hearing of them. ObjID is the first object's id as
// the caller knows the layout: a layout changed since is refused (stale).
type LayoutIntentReq struct {
	Ino   uint64 `json:"ino"`
	ObjID uint64 `json:"objid"`
}

// DoMReadReq reads up to Len bytes at Off of a file's Data-on-MDT region.
type DoMReadReq struct {
	Ino uint64 `json:"ino"`
	Off int64  `json:"off"`
	Len int    `json:"len"`
}

// DoMReadResp holds what the region stores from Off on, at most Len bytes:
// shorter where the stored bytes end (the rest reads as zeros, up to the
// file's size).
type DoMReadResp struct {
	Data []byte `json:"data"`
}

// MaxDoMRequest bounds the data of one DoM request, so it fits one NATS
// message (1 MiB by default) once base64 in JSON.
const MaxDoMRequest = 256 << 10

type Empty struct{}

// OSTStat is one OST's usage as meta sees it.
type OSTStat struct {
	Index   uint32 `json:"index"`
	Addr    string `json:"addr"`
	Up      bool   `json:"up"`
	Error   string `json:"error,omitempty"`
	Total   uint64 `json:"total"`
	Free    uint64 `json:"free"`
	Avail   uint64 `json:"avail"`
	Objects uint64 `json:"objects"`
}

type StatFSResp struct {
	Inodes     uint64    `json:"inodes"`
	MetaTotal  uint64    `json:"meta_total"`
	MetaFree   uint64    `json:"meta_free"`
	MetaAvail  uint64    `json:"meta_avail"`
	MaxInodes  uint64    `json:"max_inodes"`
	OSTs       []OSTStat `json:"osts"`
	NameMax    uint32    `json:"name_max"`
	StripeSize uint32    `json:"stripe_size"`
}

// ChangeRecord is one namespace change in the changelog (like a Lustre
// changelog record). Seq increases by one per record; after a crash a record
// may be published twice, never skipped: consumers drop Seq they have seen.
//
// A changelog message holds one or more records in Seq order, each a JSON
// object on a line of its own (DecodeChangeRecords); its JetStream message
// ID is ChangeMsgID of its first and last Seq.
type ChangeRecord struct {
	Seq       uint64 `json:"seq"`
	Type      string `json:"type"`
	Time      int64  `json:"time"`
	Ino       uint64 `json:"ino"`
	Parent    uint64 `json:"parent,omitempty"`
	Name      string `json:"name,omitempty"`
	NewParent uint64 `json:"new_parent,omitempty"`
	NewName   string `json:"new_name,omitempty"`
	Mode      uint32 `json:"mode,omitempty"`
	Size      uint64 `json:"size,omitempty"`
}

// Changelog record types (after Lustre's CREAT, MKDIR, UNLNK, ...).
const (
	ChangeCreate  = "CREAT"
	ChangeMkdir   = "MKDIR"
	ChangeMknod   = "MKNOD"
	ChangeSymlink = "SLINK"
	ChangeLink    = "HLINK"
	ChangeUnlink  = "UNLNK"
	ChangeRmdir   = "RMDIR"
	ChangeRename  = "RENME"
	ChangeSetattr = "SATTR"
	ChangeXattr   = "XATTR"
	ChangeTrunc   = "TRUNC"
	ChangeLayout  = "LYOUT"
	ChangeClose   = "CLOSE"
)

// ValidName checks one path component.
func ValidName(name string) error {
	switch {
	case name == "":
		return Errorf(CodeInvalid, "empty name")
	case len(name) > MaxNameLen:
		return Errorf(CodeNameTooLong, "name of %d bytes exceeds %d", len(name), MaxNameLen)
	case name == "." || name == "..":
		return Errorf(CodeInvalid, "name %q is reserved", name)
	case strings.ContainsAny(name, "/\x00"):
		return Errorf(CodeInvalid, "name contains '/' or NUL")
	case !utf8.ValidString(name):
		// The JSON wire contract carries names as UTF-8 text; refusing
		// other byte strings beats storing a mangled name.
		return Errorf(CodeInvalid, "name is not valid UTF-8")
	}
	return nil
}

// Decode strictly parses a JSON request: unknown fields and trailing data are
// errors, so a malformed request is refused rather than half-understood.
func Decode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(CodeInvalid, "malformed request: %v", err)
	}
	if dec.More() {
		return Errorf(CodeInvalid, "malformed request: trailing data")
	}
	return nil
}

// ChangeMsgID is the message ID of a changelog message holding the records
// first..last.
func ChangeMsgID(first, last uint64) string {
	return strconv.FormatUint(first, 10) + "-" + strconv.FormatUint(last, 10)
}

// DecodeChangeRecords parses a changelog message.
func DecodeChangeRecords(data []byte) ([]ChangeRecord, error) {
	var out []ChangeRecord
	for line := range bytes.Lines(data) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var r ChangeRecord
		if err := json.Unmarshal(line, &r); err != nil {
			return out, Errorf(CodeInvalid, "changelog record %d of a message: %v", len(out)+1, err)
		}
		out = append(out, r)
	}
	return out, nil
}
