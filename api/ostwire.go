package api

import (
	"encoding/binary"
	"encoding/json"
	"io"
)

// The OST data path: a small binary protocol over TCP, so bulk bytes never
// pass through the NATS server. One request at a time per connection; the
// client keeps a pool of connections per OST for parallelism.
//
//	request  = ReqHeader (40 bytes) payload
//	response = RespHeader (16 bytes) payload (data, or error text when Status != 0)

const (
	frameMagic   = 0x5354 // "ST"
	frameVersion = 1
	// ReqHeaderSize and RespHeaderSize are the fixed header lengths.
	ReqHeaderSize  = 40
	RespHeaderSize = 16
	// MaxFramePayload bounds one request or reply payload.
	MaxFramePayload = 8 << 20
)

// OST operations.
const (
	OSTWrite   uint8 = 1 // Payload at Offset of Object
	OSTRead    uint8 = 2 // Length bytes at Offset; short at end of object
	OSTPunch   uint8 = 3 // truncate Object to Offset bytes
	OSTSync    uint8 = 4 // make Object durable
	OSTGetSize uint8 = 5 // reply Value = object size
	// OSTDestroy removes Object or, with a payload, every object the
	// payload lists (EncodeObjectList, at most MaxDestroyBatch): one round
	// trip for what many unlinks freed. Reply Value = how many, in order,
	// were removed before the first failure. Removing an absent object
	// succeeds.
	OSTDestroy uint8 = 6
	OSTStatFS  uint8 = 7 // reply payload = JSON OSTStatfs
	// OSTAllocate reserves disk space for [Offset, Offset+n) of Object,
	// n being the 8-byte big-endian payload; without FlagKeepSize the
	// object grows to cover the range.
	OSTAllocate uint8 = 8
	// OSTShare asks the OST, on a Unix socket connection, for a shared
	// memory region of Length bytes (at most MaxSharedRegion); the reply
	// carries its file descriptor (SCM_RIGHTS). Reads with FlagShared on
	// that connection then leave their data there instead of in the reply,
	// sparing two copies through the socket.
	OSTShare uint8 = 9
	ostOpMax       = OSTShare
)

// MaxDestroyBatch bounds the objects one OSTDestroy request lists.
const MaxDestroyBatch = 4096

// MaxSharedRegion bounds the region OSTShare sets up.
const MaxSharedRegion = MaxFramePayload + 256<<10

// Request flags.
const (
	// FlagSync: reply only once the write is durable.
	FlagSync uint32 = 1 << 0
	// FlagKeepSize: OSTAllocate reserves space without growing the object.
	FlagKeepSize uint32 = 1 << 1
	// FlagShared: OSTRead leaves the data in the connection's shared
	// region; the reply payload is SharedPlace (8 bytes), saying where.
	FlagShared uint32 = 1 << 2
)

// SharedPlace is where a shared read left its data in the region: Len
// bytes from Start (fewer than asked only at the end of the object).
type SharedPlace struct{ Start, Len uint32 }

// EncodeSharedPlace is the 8-byte reply payload of a shared read.
func EncodeSharedPlace(p SharedPlace) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b[0:], p.Start)
	binary.BigEndian.PutUint32(b[4:], p.Len)
	return b
}

// DecodeSharedPlace parses a shared read's reply payload and checks that
// it lies within a region of size bytes and within the length asked.
func DecodeSharedPlace(b []byte, size, asked int) (SharedPlace, error) {
	if len(b) != 8 {
		return SharedPlace{}, Errorf(CodeIO, "shared read reply of %d bytes, want 8", len(b))
	}
	p := SharedPlace{Start: binary.BigEndian.Uint32(b[0:]), Len: binary.BigEndian.Uint32(b[4:])}
	if int64(p.Start)+int64(p.Len) > int64(size) || int(p.Len) > asked {
		return p, Errorf(CodeIO, "shared read placed %d bytes at %d: outside the %d-byte region or the %d asked", p.Len, p.Start, size, asked)
	}
	return p, nil
}

// ReqHeader is a request's fixed part.
type ReqHeader struct {
	Op     uint8
	Flags  uint32
	Object uint64
	Offset uint64
	Length uint32
	// PayloadLen is the number of payload bytes that follow.
	PayloadLen uint32
	// Fence is the writer's epoch; 0 means unfenced. An OST that knows a
	// newer epoch for the object refuses the write (persistent deployments).
	Fence uint64
}

// RespHeader is a reply's fixed part.
type RespHeader struct {
	Status     Code
	PayloadLen uint32
	// Value is the object's size after the operation for read, write,
	// punch and get-size replies.
	Value uint64
}

// OSTStatfs is an OST's capacity and usage.
type OSTStatfs struct {
	Index   uint32 `json:"index"`
	Total   uint64 `json:"total"`
	Free    uint64 `json:"free"`
	Avail   uint64 `json:"avail"`
	Objects uint64 `json:"objects"`
}

// EncodeReqHeader writes h into b (len ≥ ReqHeaderSize).
func EncodeReqHeader(b []byte, h ReqHeader) {
	binary.BigEndian.PutUint16(b[0:], frameMagic)
	b[2] = frameVersion
	b[3] = h.Op
	binary.BigEndian.PutUint32(b[4:], h.Flags)
	binary.BigEndian.PutUint64(b[8:], h.Object)
	binary.BigEndian.PutUint64(b[16:], h.Offset)
	binary.BigEndian.PutUint32(b[24:], h.Length)
	binary.BigEndian.PutUint32(b[28:], h.PayloadLen)
	binary.BigEndian.PutUint64(b[32:], h.Fence)
}

// DecodeReqHeader parses and validates a request header.
func DecodeReqHeader(b []byte) (ReqHeader, error) {
	if len(b) < ReqHeaderSize {
		return ReqHeader{}, Errorf(CodeInvalid, "short request header (%d bytes)", len(b))
	}
	if binary.BigEndian.Uint16(b[0:]) != frameMagic {
		return ReqHeader{}, Errorf(CodeInvalid, "bad frame magic")
	}
	if b[2] != frameVersion {
		return ReqHeader{}, Errorf(CodeInvalid, "unsupported frame version %d", b[2])
	}
	h := ReqHeader{
		Op:         b[3],
		Flags:      binary.BigEndian.Uint32(b[4:]),
		Object:     binary.BigEndian.Uint64(b[8:]),
		Offset:     binary.BigEndian.Uint64(b[16:]),
		Length:     binary.BigEndian.Uint32(b[24:]),
		PayloadLen: binary.BigEndian.Uint32(b[28:]),
		Fence:      binary.BigEndian.Uint64(b[32:]),
	}
	return h, h.Check()
}

// Check validates a request header: a known operation, sizes within the
// frame limits, the payload the operation takes, offsets in range.
func (h ReqHeader) Check() error {
	if h.Op == 0 || h.Op > ostOpMax {
		return Errorf(CodeInvalid, "unknown OST operation %d", h.Op)
	}
	if h.PayloadLen > MaxFramePayload || h.Length > MaxFramePayload && h.Op != OSTShare {
		return Errorf(CodeInvalid, "frame of %d/%d bytes exceeds %d", h.PayloadLen, h.Length, MaxFramePayload)
	}
	switch {
	case h.Op == OSTAllocate && h.PayloadLen != 8:
		return Errorf(CodeInvalid, "allocate takes an 8-byte length")
	case h.Op == OSTDestroy && (h.PayloadLen%8 != 0 || h.PayloadLen > MaxDestroyBatch*8):
		return Errorf(CodeInvalid, "destroy list of %d bytes: want a multiple of 8, at most %d objects", h.PayloadLen, MaxDestroyBatch)
	case h.Op != OSTWrite && h.Op != OSTAllocate && h.Op != OSTDestroy && h.PayloadLen != 0:
		return Errorf(CodeInvalid, "operation %d takes no payload", h.Op)
	case h.Op == OSTShare && (h.Length == 0 || h.Length > MaxSharedRegion):
		return Errorf(CodeInvalid, "shared region of %d bytes: want 1..%d", h.Length, MaxSharedRegion)
	}
	if h.Offset > 1<<62 || h.Offset+uint64(h.PayloadLen)+uint64(h.Length) > 1<<62 {
		return Errorf(CodeTooBig, "offset %d out of range", h.Offset)
	}
	return nil
}

// EncodeRespHeader writes h into b (len ≥ RespHeaderSize).
func EncodeRespHeader(b []byte, h RespHeader) {
	binary.BigEndian.PutUint16(b[0:], frameMagic)
	b[2] = frameVersion
	b[3] = codeIndex(h.Status)
	binary.BigEndian.PutUint32(b[4:], h.PayloadLen)
	binary.BigEndian.PutUint64(b[8:], h.Value)
}

// DecodeRespHeader parses and validates a reply header.
func DecodeRespHeader(b []byte) (RespHeader, error) {
	if len(b) < RespHeaderSize {
		return RespHeader{}, Errorf(CodeIO, "short reply header")
	}
	if binary.BigEndian.Uint16(b[0:]) != frameMagic || b[2] != frameVersion {
		return RespHeader{}, Errorf(CodeIO, "bad reply frame")
	}
	h := RespHeader{
		Status:     codeAt(b[3]),
		PayloadLen: binary.BigEndian.Uint32(b[4:]),
		Value:      binary.BigEndian.Uint64(b[8:]),
	}
	if h.PayloadLen > MaxFramePayload {
		return h, Errorf(CodeIO, "reply of %d bytes exceeds %d", h.PayloadLen, MaxFramePayload)
	}
	return h, nil
}

// WriteResponse sends a reply: on err, its code and text; else value and payload.
func WriteResponse(w io.Writer, scratch []byte, value uint64, payload []byte, err error) error {
	h := RespHeader{Value: value}
	if err != nil {
		e := AsError(err)
		h.Status = e.Code
		payload = []byte(e.Msg)
	}
	h.PayloadLen = uint32(len(payload))
	EncodeRespHeader(scratch[:RespHeaderSize], h)
	if len(payload) <= len(scratch)-RespHeaderSize {
		n := copy(scratch[RespHeaderSize:], payload)
		_, werr := w.Write(scratch[:RespHeaderSize+n])
		return werr
	}
	if _, werr := w.Write(scratch[:RespHeaderSize]); werr != nil {
		return werr
	}
	_, werr := w.Write(payload)
	return werr
}

// EncodeStatfs is the OSTStatfs reply payload.
func EncodeStatfs(s OSTStatfs) []byte {
	b, _ := json.Marshal(s) // plain struct: cannot fail
	return b
}

// EncodeObjectList is an OSTDestroy payload: each id, 8 bytes big-endian.
func EncodeObjectList(objs []uint64) []byte {
	b := make([]byte, 8*len(objs))
	for i, o := range objs {
		binary.BigEndian.PutUint64(b[8*i:], o)
	}
	return b
}

// DecodeObjectList parses an OSTDestroy payload.
func DecodeObjectList(b []byte) ([]uint64, error) {
	if len(b)%8 != 0 {
		return nil, Errorf(CodeInvalid, "object list of %d bytes is not a multiple of 8", len(b))
	}
	objs := make([]uint64, len(b)/8)
	for i := range objs {
		objs[i] = binary.BigEndian.Uint64(b[8*i:])
	}
	return objs, nil
}
