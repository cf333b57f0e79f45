package api

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// OSTClient talks the data path to any number of OSTs, keeping a pool of
// connections per address. Every call is bounded by Timeout (or the context's
// earlier deadline): an OST that stops answering yields CodeUnavailable, never
// a hang.
type OSTClient struct {
	// Timeout bounds one request; zero means 30 s.
	Timeout time.Duration
	// MaxIdle is the number of idle connections kept per OST; zero means 16.
	MaxIdle int
	// Sockets, when set, names the Unix sockets of OSTs on this machine:
	// new connections to them use the socket (here several times the
	// throughput of TCP over loopback), and TCP if it cannot be dialled.
	Sockets interface {
		LocalSocket(addr string) (path string, ok bool)
	}

	mu     sync.Mutex
	idle   map[string][]net.Conn
	closed bool
}

// NewOSTClient returns a client with the given per-request bound.
func NewOSTClient(timeout time.Duration) *OSTClient {
	return &OSTClient{Timeout: timeout, idle: make(map[string][]net.Conn)}
}

// Close drops all idle connections.
func (c *OSTClient) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, conns := range c.idle {
		for _, conn := range conns {
			conn.Close()
		}
	}
	c.idle = nil
}

func (c *OSTClient) get(ctx context.Context, addr string) (net.Conn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, Errorf(CodeUnavailable, "OST client closed")
	}
	if conns := c.idle[addr]; len(conns) > 0 {
		conn := conns[len(conns)-1]
		c.idle[addr] = conns[:len(conns)-1]
		c.mu.Unlock()
		return conn, nil
	}
	c.mu.Unlock()
	d := net.Dialer{Timeout: c.timeout()}
	if c.Sockets != nil {
		if path, ok := c.Sockets.LocalSocket(addr); ok {
			if conn, err := d.DialContext(ctx, "unix", path); err == nil {
				return conn, nil
			}
		}
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, Errorf(CodeUnavailable, "OST %s: %v", addr, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return conn, nil
}

func (c *OSTClient) put(addr string, conn net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	maxIdle := c.MaxIdle
	if maxIdle == 0 {
		maxIdle = 16
	}
	if c.closed || len(c.idle[addr]) >= maxIdle {
		conn.Close()
		return
	}
	if c.idle == nil {
		c.idle = make(map[string][]net.Conn)
	}
	c.idle[addr] = append(c.idle[addr], conn)
}

func (c *OSTClient) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return 30 * time.Second
}

// roundTrip sends one request and reads its reply; the reply payload goes to
// dest (reads) or is returned (statfs). A transport failure closes the
// connection; an error reply from the OST keeps it.
func (c *OSTClient) roundTrip(ctx context.Context, addr string, h ReqHeader, payload, dest []byte) (RespHeader, []byte, error) {
	if err := ctx.Err(); err != nil {
		return RespHeader{}, nil, err
	}
	if len(payload) > MaxFramePayload || len(dest) > MaxFramePayload {
		return RespHeader{}, nil, Errorf(CodeInvalid, "request of %d bytes exceeds the %d-byte frame limit", max(len(payload), len(dest)), MaxFramePayload)
	}
	conn, err := c.get(ctx, addr)
	if err != nil {
		return RespHeader{}, nil, err
	}
	deadline := time.Now().Add(c.timeout())
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	// Cancelling the context interrupts the blocked I/O at once.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var hdr [ReqHeaderSize]byte
	h.PayloadLen = uint32(len(payload))
	EncodeReqHeader(hdr[:], h)
	bufs := net.Buffers{hdr[:], payload}
	if _, err := bufs.WriteTo(conn); err != nil {
		conn.Close()
		return RespHeader{}, nil, c.transportErr(ctx, addr, err)
	}
	var rh [RespHeaderSize]byte
	if _, err := io.ReadFull(conn, rh[:]); err != nil {
		conn.Close()
		return RespHeader{}, nil, c.transportErr(ctx, addr, err)
	}
	resp, err := DecodeRespHeader(rh[:])
	if err != nil {
		conn.Close()
		return resp, nil, err
	}
	var body []byte
	if resp.Status == CodeOK && dest != nil {
		if int(resp.PayloadLen) > len(dest) {
			conn.Close()
			return resp, nil, Errorf(CodeIO, "OST %s sent %d bytes for a %d-byte read", addr, resp.PayloadLen, len(dest))
		}
		body = dest[:resp.PayloadLen]
	} else {
		body = make([]byte, resp.PayloadLen)
	}
	if _, err := io.ReadFull(conn, body); err != nil {
		conn.Close()
		return resp, nil, c.transportErr(ctx, addr, err)
	}
	stop()
	if resp.Status == CodeInvalid {
		// The OST may close a connection after a request it could not
		// make sense of: never reuse one.
		conn.Close()
	} else {
		conn.SetDeadline(time.Time{})
		c.put(addr, conn)
	}
	if resp.Status != CodeOK {
		return resp, nil, &Error{Code: resp.Status, Msg: "OST " + addr + ": " + string(body)}
	}
	return resp, body, nil
}

func (c *OSTClient) transportErr(ctx context.Context, addr string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Errorf(CodeUnavailable, "OST %s did not answer within %v", addr, c.timeout())
	}
	return Errorf(CodeUnavailable, "OST %s: %v", addr, err)
}

// Write stores data at off in object obj; with sync it is durable on return.
func (c *OSTClient) Write(ctx context.Context, addr string, obj uint64, off int64, data []byte, sync bool) error {
	h := ReqHeader{Op: OSTWrite, Object: obj, Offset: uint64(off)}
	if sync {
		h.Flags |= FlagSync
	}
	_, _, err := c.roundTrip(ctx, addr, h, data, nil)
	return err
}

// Read fills dest from off in object obj and returns the bytes read: fewer
// than len(dest) only at the end of the object. Holes read as zeros.
func (c *OSTClient) Read(ctx context.Context, addr string, obj uint64, off int64, dest []byte) (int, error) {
	_, body, err := c.roundTrip(ctx, addr, ReqHeader{Op: OSTRead, Object: obj, Offset: uint64(off), Length: uint32(len(dest))}, nil, dest)
	return len(body), err
}

// Punch truncates object obj to size bytes (creating it if absent).
func (c *OSTClient) Punch(ctx context.Context, addr string, obj uint64, size int64) error {
	_, _, err := c.roundTrip(ctx, addr, ReqHeader{Op: OSTPunch, Object: obj, Offset: uint64(size)}, nil, nil)
	return err
}

// Sync makes object obj durable.
func (c *OSTClient) Sync(ctx context.Context, addr string, obj uint64) error {
	_, _, err := c.roundTrip(ctx, addr, ReqHeader{Op: OSTSync, Object: obj}, nil, nil)
	return err
}

// Stat returns object obj's size (0 if absent).
func (c *OSTClient) Stat(ctx context.Context, addr string, obj uint64) (int64, error) {
	resp, _, err := c.roundTrip(ctx, addr, ReqHeader{Op: OSTGetSize, Object: obj}, nil, nil)
	return int64(resp.Value), err
}

// Destroy removes object obj; destroying an absent object succeeds.
func (c *OSTClient) Destroy(ctx context.Context, addr string, obj uint64) error {
	_, _, err := c.roundTrip(ctx, addr, ReqHeader{Op: OSTDestroy, Object: obj}, nil, nil)
	return err
}

// Statfs returns the OST's capacity and usage.
func (c *OSTClient) Statfs(ctx context.Context, addr string) (OSTStatfs, error) {
	_, body, err := c.roundTrip(ctx, addr, ReqHeader{Op: OSTStatFS}, nil, nil)
	if err != nil {
		return OSTStatfs{}, err
	}
	var s OSTStatfs
	if err := json.Unmarshal(body, &s); err != nil {
		return s, Errorf(CodeIO, "OST %s statfs reply: %v", addr, err)
	}
	return s, nil
}

// Allocate reserves space for [off, off+n) of object obj; unless keepSize,
// the object grows to cover it.
func (c *OSTClient) Allocate(ctx context.Context, addr string, obj uint64, off, n int64, keepSize bool) error {
	h := ReqHeader{Op: OSTAllocate, Object: obj, Offset: uint64(off)}
	if keepSize {
		h.Flags |= FlagKeepSize
	}
	var length [8]byte
	binary.BigEndian.PutUint64(length[:], uint64(n))
	_, _, err := c.roundTrip(ctx, addr, h, length[:], nil)
	return err
}
