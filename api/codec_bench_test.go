package api

import (
	"encoding/json"
	"testing"
)

// BenchmarkOSTHeaders encodes and decodes one request and one reply
// header: the framing cost of every data path request.
func BenchmarkOSTHeaders(b *testing.B) {
	req := ReqHeader{Op: OSTRead, Object: 0x1234, Offset: 5 << 20, Length: 1 << 20}
	resp := RespHeader{PayloadLen: 1 << 20, Value: 64 << 20}
	var rb [ReqHeaderSize]byte
	var pb [RespHeaderSize]byte
	for b.Loop() {
		EncodeReqHeader(rb[:], req)
		if _, err := DecodeReqHeader(rb[:]); err != nil {
			b.Fatal(err)
		}
		EncodeRespHeader(pb[:], resp)
		if _, err := DecodeRespHeader(pb[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMetaLookupCodec is the encoding work of one metadata lookup on
// both ends: request out and in, a 4-stripe entry reply out and in.
func BenchmarkMetaLookupCodec(b *testing.B) {
	req := LookupReq{Parent: 12345, Name: "file-000123.dat"}
	objs := make([]StripeObject, 4)
	for i := range objs {
		objs[i] = StripeObject{OST: uint32(i), ObjID: uint64(1000 + i)}
	}
	resp := EntryResp{
		Attr:   Attr{Ino: 99, Mode: ModeReg | 0o644, Nlink: 1, Size: 1 << 30, Atime: 1, Mtime: 2, Ctime: 3},
		Layout: &Layout{StripeCount: 4, StripeSize: 1 << 20, Objects: objs},
	}
	for b.Loop() {
		rq, _ := json.Marshal(req)
		var gotReq LookupReq
		if err := json.Unmarshal(rq, &gotReq); err != nil {
			b.Fatal(err)
		}
		rs, _ := json.Marshal(resp)
		var gotResp EntryResp
		if err := json.Unmarshal(rs, &gotResp); err != nil {
			b.Fatal(err)
		}
	}
}
