package api

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestReqHeaderRoundTrip(t *testing.T) {
	h := ReqHeader{Op: OSTWrite, Flags: FlagSync, Object: 1 << 40, Offset: 12345, PayloadLen: 4096, Fence: 9}
	var b [ReqHeaderSize]byte
	EncodeReqHeader(b[:], h)
	got, err := DecodeReqHeader(b[:])
	if err != nil || got != h {
		t.Fatalf("got %+v %v, want %+v", got, err, h)
	}
}

func TestDecodeReqHeaderRejects(t *testing.T) {
	good := ReqHeader{Op: OSTRead, Object: 1, Length: 10}
	cases := []struct {
		name   string
		mutate func(b []byte)
		n      int
	}{
		{"short", nil, 10},
		{"bad magic", func(b []byte) { b[0] = 'X' }, ReqHeaderSize},
		{"bad version", func(b []byte) { b[2] = 9 }, ReqHeaderSize},
		{"unknown op", func(b []byte) { b[3] = 200 }, ReqHeaderSize},
		{"zero op", func(b []byte) { b[3] = 0 }, ReqHeaderSize},
		{"huge payload", func(b []byte) { b[28] = 0xff }, ReqHeaderSize},
		{"payload on read", func(b []byte) { b[31] = 1 }, ReqHeaderSize},
		{"offset overflow", func(b []byte) { b[16] = 0xff }, ReqHeaderSize},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b [ReqHeaderSize]byte
			EncodeReqHeader(b[:], good)
			if tc.mutate != nil {
				tc.mutate(b[:])
			}
			if _, err := DecodeReqHeader(b[:tc.n]); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestWriteResponseCarriesError(t *testing.T) {
	var w bytes.Buffer
	scratch := make([]byte, 64)
	if err := WriteResponse(&w, scratch, 0, nil, Errorf(CodeCorrupt, "block 3")); err != nil {
		t.Fatal(err)
	}
	h, err := DecodeRespHeader(w.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if h.Status != CodeCorrupt || string(w.Bytes()[RespHeaderSize:]) != "block 3" {
		t.Fatalf("got %+v %q", h, w.Bytes()[RespHeaderSize:])
	}
}

func TestErrorIs(t *testing.T) {
	err := error(Errorf(CodeNotFound, "x"))
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) {
		t.Fatal("Is by code")
	}
	if CodeOf(nil) != CodeOK || CodeOf(errors.New("?")) != CodeInternal {
		t.Fatal("CodeOf")
	}
	for _, c := range AllCodes() {
		if codeAt(codeIndex(c)) != c {
			t.Fatalf("code %q does not survive the OST status byte", c)
		}
	}
}

func FuzzDecodeReqHeader(f *testing.F) {
	var b [ReqHeaderSize]byte
	EncodeReqHeader(b[:], ReqHeader{Op: OSTWrite, Object: 3, Offset: 4096, PayloadLen: 512})
	f.Add(b[:])
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, ReqHeaderSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := DecodeReqHeader(data)
		if err != nil {
			return
		}
		// Whatever decodes must encode back to the same bytes and stay
		// within the limits.
		maxLength := uint32(MaxFramePayload)
		if h.Op == OSTShare {
			maxLength = MaxSharedRegion
		}
		if h.PayloadLen > MaxFramePayload || h.Length > maxLength || h.Op == 0 || h.Op > ostOpMax {
			t.Fatalf("accepted out-of-range header %+v", h)
		}
		var again [ReqHeaderSize]byte
		EncodeReqHeader(again[:], h)
		if !bytes.Equal(again[:], data[:ReqHeaderSize]) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzDecodeRespHeader(f *testing.F) {
	var b [RespHeaderSize]byte
	EncodeRespHeader(b[:], RespHeader{Status: CodeIO, PayloadLen: 5, Value: 1})
	f.Add(b[:])
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := DecodeRespHeader(data)
		if err == nil && h.PayloadLen > MaxFramePayload {
			t.Fatalf("accepted payload %d", h.PayloadLen)
		}
	})
}

func FuzzDecodeSharedPlace(f *testing.F) {
	f.Add(EncodeSharedPlace(SharedPlace{Start: 100, Len: 4096}), 1<<20, 4096)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1}, 1<<20, 10)
	f.Fuzz(func(t *testing.T, data []byte, size, asked int) {
		p, err := DecodeSharedPlace(data, size, asked)
		if err != nil {
			return
		}
		// Whatever is accepted can be sliced out of the region safely.
		if int64(p.Start)+int64(p.Len) > int64(size) || int(p.Len) > asked {
			t.Fatalf("accepted %+v for a %d-byte region, %d asked", p, size, asked)
		}
	})
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"parent":1,"name":"a","mode":33188,"caller":{"uid":0,"gid":0}}`))
	f.Add([]byte(`{"parent":1,"name":"a","extra":1}`))
	f.Add([]byte(`{} {}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r CreateReq
		if err := Decode(data, &r); err != nil && CodeOf(err) != CodeInvalid {
			t.Fatalf("decode error of code %q", CodeOf(err))
		}
	})
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"a", ".", "..", "a/b", "x\x00", string(make([]byte, 300))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidName(name)
		ok := name != "" && len(name) <= MaxNameLen && name != "." && name != ".." &&
			!bytes.ContainsAny([]byte(name), "/\x00") && utf8.ValidString(name)
		if (err == nil) != ok {
			t.Fatalf("ValidName(%q) = %v", name, err)
		}
	})
}

func TestDecodeChangeRecords(t *testing.T) {
	msg := []byte(`{"seq":7,"type":"CREAT","time":1,"ino":20,"parent":1,"name":"a"}` + "\n" +
		`{"seq":8,"type":"UNLNK","time":2,"ino":20,"parent":1,"name":"a"}` + "\n")
	recs, err := DecodeChangeRecords(msg)
	if err != nil || len(recs) != 2 || recs[0].Seq != 7 || recs[1].Type != ChangeUnlink || recs[1].Name != "a" {
		t.Fatalf("decoded %+v, %v", recs, err)
	}
	if id := ChangeMsgID(recs[0].Seq, recs[1].Seq); id != "7-8" {
		t.Fatalf("message ID %q", id)
	}
	bad := append(append([]byte{}, msg...), `{"seq":9,`...)
	if _, err := DecodeChangeRecords(bad); CodeOf(err) != CodeInvalid {
		t.Fatalf("a cut record: %v, want invalid", err)
	}
}

func TestValidClientID(t *testing.T) {
	for _, id := range []string{"a", "0", "mount-3f2a", strings.Repeat("z", 64)} {
		if err := ValidClientID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	for _, id := range []string{"", strings.Repeat("z", 65), "Mount", "a_b", "a.b", "a b", "a*", "é"} {
		if err := ValidClientID(id); CodeOf(err) != CodeInvalid {
			t.Errorf("%q: got %v, want an invalid-argument error", id, err)
		}
	}
}
