package meta

import (
	"context"
	"testing"
	"time"

	"github.com/stria/stria/api"
)

// TestServeMetaInProcess checks that a client in meta's process (stria
// up's gateway) gets through ServeMeta what it would through NATS: the
// same changes, replies and errors, and refusals before meta serves and
// once it stops.
func TestServeMetaInProcess(t *testing.T) {
	h := newHarness(t, 1)
	local := api.NewMetaClient(env.nc, h.fs, 20*time.Second)
	local.Local = h.srv
	ctx := context.Background()

	// A change made one way is seen the other way, with the same reply.
	var made api.EntryResp
	if err := local.Call(ctx, api.OpCreate, api.CreateReq{Parent: api.RootIno, Name: "local", Mode: regMode, Caller: caller}, &made); err != nil {
		t.Fatal(err)
	}
	if !made.Created || made.Layout == nil {
		t.Fatalf("create reply %+v", made)
	}
	seen, err := h.lookup(api.RootIno, "local")
	if err != nil || seen.Attr.Ino != made.Attr.Ino {
		t.Fatalf("lookup through NATS: %+v, %v; want inode %d", seen, err, made.Attr.Ino)
	}
	remote := h.mkfile(api.RootIno, "remote")
	var back api.EntryResp
	if err := local.Call(ctx, api.OpLookup, api.LookupReq{Parent: api.RootIno, Name: "remote"}, &back); err != nil || back.Attr.Ino != remote {
		t.Fatalf("local lookup: %+v, %v; want inode %d", back, err, remote)
	}

	// Errors arrive as the same typed errors.
	for _, c := range []struct {
		name string
		op   string
		req  any
	}{
		{"absent name", api.OpLookup, api.LookupReq{Parent: api.RootIno, Name: "absent"}},
		{"existing name", api.OpCreate, api.CreateReq{Parent: api.RootIno, Name: "local", Mode: regMode, Exclusive: true, Caller: caller}},
		{"bad name", api.OpCreate, api.CreateReq{Parent: api.RootIno, Name: "a/b", Mode: regMode, Caller: caller}},
	} {
		viaNATS := h.call(c.op, c.req, nil)
		viaLocal := local.Call(ctx, c.op, c.req, nil)
		if viaNATS == nil || viaLocal == nil || viaNATS.Error() != viaLocal.Error() || codeOf(viaLocal) != codeOf(viaNATS) {
			t.Errorf("%s: local %v, NATS %v; want the same error", c.name, viaLocal, viaNATS)
		}
	}

	// Replies are values of their own: changing one changes nothing in
	// meta. A caller asking for another type gets the reply through JSON.
	made.Layout.Objects[0].ObjID++
	var again api.EntryResp
	if err := local.Call(ctx, api.OpLookup, api.LookupReq{Parent: api.RootIno, Name: "local"}, &again); err != nil || again.Layout.Objects[0].ObjID+1 != made.Layout.Objects[0].ObjID {
		t.Fatalf("lookup after the reply was changed: %+v, %v", again.Layout, err)
	}
	var part struct {
		Attr struct {
			Ino uint64 `json:"ino"`
		} `json:"attr"`
	}
	if err := local.Call(ctx, api.OpLookup, &api.LookupReq{Parent: api.RootIno, Name: "local"}, &part); err != nil || part.Attr.Ino != made.Attr.Ino {
		t.Fatalf("lookup into another type: %+v, %v", part, err)
	}

	// Requests of the wrong type and unknown operations change nothing.
	before := h.attr(api.RootIno)
	if _, err := h.srv.ServeMeta("", api.OpCreate, []byte(`{"parent": 1, "name": "json"}`)); codeOf(err) != api.CodeInvalid {
		t.Errorf("JSON request: %v, want invalid", err)
	}
	if _, err := h.srv.ServeMeta("", api.OpCreate, api.LookupReq{Parent: api.RootIno, Name: "wrong"}); codeOf(err) != api.CodeInvalid {
		t.Errorf("another op's request: %v, want invalid", err)
	}
	if _, err := h.srv.ServeMeta("", "no-such-op", api.InoReq{Ino: api.RootIno}); codeOf(err) != api.CodeInvalid {
		t.Errorf("unknown operation: %v, want invalid", err)
	}
	if after := h.attr(api.RootIno); after.Nlink != before.Nlink || after.Mtime != before.Mtime {
		t.Errorf("root changed by refused requests: %+v, then %+v", before, after)
	}
	// A client id that is not valid is ignored, as over NATS.
	if _, err := h.srv.ServeMeta("bad id!", api.OpGetAttr, api.InoReq{Ino: api.RootIno}); err != nil {
		t.Errorf("getattr with an invalid client id: %v", err)
	}

	// Not before meta serves, nor after it stops.
	idle := h.newServer(t.TempDir(), nil)
	if _, err := idle.ServeMeta("", api.OpGetAttr, api.InoReq{Ino: api.RootIno}); codeOf(err) != api.CodeUnavailable {
		t.Errorf("before Run: %v, want unavailable", err)
	}
	h.stop()
	if err := local.Call(ctx, api.OpGetAttr, api.InoReq{Ino: api.RootIno}, nil); codeOf(err) != api.CodeUnavailable {
		t.Errorf("after stop: %v, want unavailable", err)
	}
}
