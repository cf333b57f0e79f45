package meta

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/stria/stria/api"
)

// replyTypes is the reply type of each operation.
var replyTypes = map[string]any{
	api.OpLookup: api.EntryResp{}, api.OpGetAttr: api.AttrResp{}, api.OpSetAttr: api.AttrResp{},
	api.OpCreate: api.EntryResp{}, api.OpLink: api.EntryResp{}, api.OpUnlink: api.UnlinkResp{},
	api.OpRename: api.RenameResp{}, api.OpReadDir: api.ReadDirResp{}, api.OpReadlink: api.ReadlinkResp{},
	api.OpGetXattr: api.XattrResp{}, api.OpSetXattr: api.Empty{}, api.OpListXattr: api.XattrResp{},
	api.OpRemoveXattr: api.Empty{}, api.OpGetLayout: api.LayoutResp{}, api.OpSetLayout: api.LayoutResp{},
	api.OpUpdateSize: api.AttrResp{}, api.OpSync: api.Empty{}, api.OpStatFS: api.StatFSResp{},
	api.OpReleaseOrphan: api.Empty{}, api.OpLayoutIntent: api.Empty{},
}

// seedRequests are valid requests for each operation, as the fuzz corpus.
func seedRequests() map[string][]any {
	l := api.Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: -1}
	return map[string][]any{
		api.OpLookup:        {api.LookupReq{Parent: 1, Name: "f"}},
		api.OpGetAttr:       {api.InoReq{Ino: 1}},
		api.OpSetAttr:       {api.SetAttrReq{Ino: 2, Valid: api.SetMode | api.SetSize, Mode: 0o600, Size: 3}},
		api.OpCreate:        {api.CreateReq{Parent: 1, Name: "g", Mode: regMode, Layout: &l}, api.CreateReq{Parent: 1, Name: "s", Mode: api.ModeLink | 0o777, Target: "t"}, api.CreateReq{Parent: 1, Name: "d", Mode: dirMode}},
		api.OpLink:          {api.LinkReq{Ino: 2, NewParent: 1, NewName: "h"}},
		api.OpUnlink:        {api.UnlinkReq{Parent: 1, Name: "h"}, api.UnlinkReq{Parent: 1, Name: "d", Dir: true}},
		api.OpRename:        {api.RenameReq{Parent: 1, Name: "f", NewParent: 1, NewName: "f2", Flags: api.RenameNoReplace}},
		api.OpReadDir:       {api.ReadDirReq{Ino: 1, Limit: 10}},
		api.OpReadlink:      {api.InoReq{Ino: 3}},
		api.OpGetXattr:      {api.XattrReq{Ino: 2, Name: "user.a"}, api.XattrReq{Ino: 2, Name: api.LayoutXattr}},
		api.OpSetXattr:      {api.XattrReq{Ino: 2, Name: "user.a", Value: []byte("v"), Flags: api.XattrCreate}},
		api.OpListXattr:     {api.XattrReq{Ino: 2}},
		api.OpRemoveXattr:   {api.XattrReq{Ino: 2, Name: "user.a"}},
		api.OpGetLayout:     {api.LayoutReq{Ino: 1}},
		api.OpSetLayout:     {api.LayoutReq{Ino: 1, Layout: l}},
		api.OpUpdateSize:    {api.UpdateSizeReq{Ino: 2, Size: 10, Mtime: 1}},
		api.OpSync:          {api.Empty{}},
		api.OpStatFS:        {api.Empty{}},
		api.OpReleaseOrphan: {api.InoReq{Ino: 2}},
		api.OpLayoutIntent:  {api.LayoutIntentReq{Ino: 2, ObjID: 2}},
	}
}

var knownCodes = func() map[string]bool {
	m := map[string]bool{}
	for _, c := range api.AllCodes() {
		m[string(c)] = true
	}
	return m
}()

// FuzzRequest sends arbitrary bytes as the body of each operation to the
// real service: it must never crash, must answer with a known error code or a
// reply that decodes strictly as the operation's reply type, and must still
// answer a good request afterwards.
func FuzzRequest(f *testing.F) {
	h := newHarness(f, 2)
	h.mkfile(api.RootIno, "f")
	for i, op := range api.MetaOps {
		for _, req := range seedRequests()[op] {
			data, _ := json.Marshal(req)
			f.Add(uint8(i), data)
		}
		f.Add(uint8(i), []byte(`{"ino":1,"parent":1,"name":"\u0000"}`))
		f.Add(uint8(i), []byte{})
	}
	f.Fuzz(func(t *testing.T, opIdx uint8, body []byte) {
		op := api.MetaOps[int(opIdx)%len(api.MetaOps)]
		msg, err := env.nc.Request(api.MetaSubject(h.fs, op), body, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: no reply: %v", op, err)
		}
		if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
			if !knownCodes[code] || msg.Header.Get("Nats-Service-Error") == "" {
				t.Fatalf("%s: error reply with code %q text %q", op, code, msg.Header.Get("Nats-Service-Error"))
			}
		} else {
			resp := reflect.New(reflect.TypeOf(replyTypes[op])).Interface()
			dec := json.NewDecoder(bytes.NewReader(msg.Data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(resp); err != nil {
				t.Fatalf("%s: reply %q does not decode: %v", op, msg.Data, err)
			}
		}
		var a api.AttrResp
		if err := h.call(api.OpGetAttr, api.InoReq{Ino: api.RootIno}, &a); err != nil || !a.Attr.IsDir() {
			t.Fatalf("service broken after %s %q: %v", op, body, err)
		}
	})
}

func TestInodeCodec(t *testing.T) {
	cases := []struct {
		name string
		in   inode
	}{
		{"root dir", inode{Attr: api.Attr{Ino: 1, Mode: dirMode, Nlink: 2, Size: 4096, Atime: 1, Mtime: 2, Ctime: 3, Parent: 1}}},
		{"dir with default layout", inode{Attr: api.Attr{Ino: 9, Mode: dirMode | 0o2000, Nlink: 5, UID: 1, GID: 2, Parent: 1},
			DefLayout: &api.Layout{StripeCount: -1, StripeSize: 1 << 20, StripeOffset: -1}}},
		{"file", inode{Attr: api.Attr{Ino: 1 << 40, Gen: 3, Mode: regMode, Nlink: 1, Size: 1 << 50, Atime: -5, Mtime: 1 << 62, Ctime: 7, Parent: 8},
			Layout: &api.Layout{StripeCount: 2, StripeSize: 64 << 10, StripeOffset: 3, Pool: "p",
				Objects: []api.StripeObject{{OST: 3, ObjID: 1 << 40}, {OST: 0, ObjID: 1 << 40}}}}},
		{"symlink", inode{Attr: api.Attr{Ino: 5, Mode: api.ModeLink | 0o777, Nlink: 1, Size: 4}, Target: "a/b\x01"}},
		{"device", inode{Attr: api.Attr{Ino: 6, Mode: api.ModeChr | 0o600, Nlink: 1, Rdev: 0x0103}}},
		{"file never given an xattr", inode{Attr: api.Attr{Ino: 7, Mode: regMode, Nlink: 1}, NoXattrs: true,
			Layout: &api.Layout{StripeCount: 1, StripeSize: 1 << 20, DoMSize: 64 << 10, Objects: []api.StripeObject{{OST: 0, ObjID: 7}}}}},
		{"file with deferred objects", inode{Attr: api.Attr{Ino: 8, Mode: regMode, Nlink: 1}, NoXattrs: true, LazyObjects: true,
			Layout: &api.Layout{StripeCount: 2, StripeSize: 1 << 20, DoMSize: 64 << 10, Objects: []api.StripeObject{{OST: 1, ObjID: 8}, {OST: 2, ObjID: 8}}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := encodeInode(&c.in)
			got, err := decodeInode(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, c.in) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", *got, c.in)
			}
			for n := range len(b) {
				if _, err := decodeInode(b[:n]); err == nil {
					t.Fatalf("truncated record of %d/%d bytes decoded", n, len(b))
				}
			}
			if _, err := decodeInode(append(slices.Clone(b), 0)); err == nil {
				t.Fatal("record with trailing byte decoded")
			}
		})
	}
}

// FuzzInodeRecord: the store decoder never panics, and what it accepts
// re-encodes to the same bytes.
func FuzzInodeRecord(f *testing.F) {
	f.Add(encodeInode(&inode{Attr: api.Attr{Ino: 1, Mode: dirMode, Nlink: 2, Parent: 1}}))
	f.Add(encodeInode(&inode{Attr: api.Attr{Ino: 2, Mode: regMode, Nlink: 1},
		Layout: &api.Layout{StripeCount: 1, StripeSize: 1 << 20, Objects: []api.StripeObject{{OST: 1, ObjID: 2}}}}))
	f.Add(encodeInode(&inode{Attr: api.Attr{Ino: 3, Mode: api.ModeLink | 0o777}, Target: "x"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := decodeInode(b)
		if err != nil {
			if api.CodeOf(err) != api.CodeCorrupt {
				t.Fatalf("error code %v", err)
			}
			return
		}
		again, err := decodeInode(encodeInode(in))
		if err != nil || !reflect.DeepEqual(again, in) {
			t.Fatalf("re-encoding changed the record: %+v vs %+v (%v)", again, in, err)
		}
	})
}
