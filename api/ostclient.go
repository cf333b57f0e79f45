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

	"golang.org/x/sys/unix"
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
	// MaxInFlight bounds the requests in flight to one OST; zero means
	// MaxIdle. Further requests wait for one to end, as Lustre's
	// max_rpcs_in_flight makes an OSC's RPCs wait: a mount with tens of
	// MiB of write-behind to one OST had hundreds of requests dial
	// connections of their own, beyond the pool, only to close them after
	// one request, while the OST served them one at a time anyway.
	MaxInFlight int
	// Sockets, when set, names the Unix sockets of OSTs on this machine:
	// new connections to them use the socket (here several times the
	// throughput of TCP over loopback), and TCP if it cannot be dialled.
	Sockets interface {
		LocalSocket(addr string) (path string, ok bool)
	}

	mu     sync.Mutex
	idle   map[string][]*ostConn
	slots  map[string]chan struct{} // per OST, a token per request in flight
	closed bool
	// Local, when set, names the OSTs in this process (`stria up`):
	// requests to them are calls, with no socket.
	Local *LocalOSTs
}

// OSTHandler is an OST in the caller's process (`stria up` runs its OSTs
// beside its mount), which a client calls directly instead of through a
// socket. It validates and answers requests as a connection does, with
// the same errors.
type OSTHandler interface {
	// ServeOST answers one request (h.PayloadLen is len(payload)): a
	// read's bytes go into dest and the reply's payload is a prefix of it;
	// other replies' payload is returned.
	ServeOST(ctx context.Context, h ReqHeader, payload, dest []byte) (RespHeader, []byte, error)
	// ReadOST reads len(dest) bytes at off of obj, verified: into dest
	// when they are whole checksum blocks (data is then a prefix of dest),
	// else into a buffer of the OST's that it lends; done, which must be
	// called once, gives that back.
	ReadOST(ctx context.Context, obj uint64, off int64, dest []byte) (data []byte, done func(), err error)
}

// LocalOSTs is the OSTs in this process by data path address, for
// OSTClient.Local. OSTs may be added while clients use it.
type LocalOSTs struct{ m sync.Map }

// Add has requests to the OST at addr go to h.
func (l *LocalOSTs) Add(addr string, h OSTHandler) { l.m.Store(addr, h) }

// LocalOST returns the OST at addr if it is in this process (none when l
// is nil).
func (l *LocalOSTs) LocalOST(addr string) (OSTHandler, bool) {
	if l == nil {
		return nil, false
	}
	v, ok := l.m.Load(addr)
	if !ok {
		return nil, false
	}
	return v.(OSTHandler), true
}

// localErr names the OST in an error from one in this process, as
// exchange does for an error reply.
func localErr(addr string, err error) error {
	e := AsError(err)
	return &Error{Code: e.Code, Msg: "OST " + addr + ": " + e.Msg}
}

// ostConn is one connection of the pool, with the OST's shared read region
// mapped read-only once asked for (Unix socket connections only).
type ostConn struct {
	net.Conn
	shared   []byte
	noShared bool          // the OST cannot share: read through the socket
	slots    chan struct{} // its OST's in-flight tokens, one held during a request
}

// done gives back the in-flight token the connection held for its request
// (a connection lent with a shared read's bytes holds none: a reader
// holding several such must not wait for tokens the others hold).
func (c *ostConn) done() {
	if c.slots != nil {
		<-c.slots
		c.slots = nil
	}
}

func (c *ostConn) Close() error {
	if c.shared != nil {
		unix.Munmap(c.shared)
		c.shared = nil
	}
	return c.Conn.Close()
}

// NewOSTClient returns a client with the given per-request bound.
func NewOSTClient(timeout time.Duration) *OSTClient {
	return &OSTClient{Timeout: timeout, idle: make(map[string][]*ostConn)}
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

// get returns a connection to the OST at addr, from the pool or dialled,
// once fewer than MaxInFlight requests to it are in flight; the
// connection holds one of them until its request's reply is read (done),
// and must go back through put or discard.
func (c *OSTClient) get(ctx context.Context, addr string) (*ostConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, Errorf(CodeUnavailable, "OST client closed")
	}
	slots := c.slots[addr]
	if slots == nil {
		if c.slots == nil {
			c.slots = make(map[string]chan struct{})
		}
		slots = make(chan struct{}, c.maxInFlight())
		c.slots[addr] = slots
	}
	c.mu.Unlock()
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	conn, err := c.connect(ctx, addr)
	if err != nil {
		<-slots
		return nil, err
	}
	conn.slots = slots
	return conn, nil
}

// connect takes an idle connection to addr or dials one (not once the
// client is closed: a request may have waited for its slot across Close).
func (c *OSTClient) connect(ctx context.Context, addr string) (*ostConn, error) {
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
				return &ostConn{Conn: conn}, nil
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
	return &ostConn{Conn: conn, noShared: true}, nil
}

// put gives back a connection get returned, to the pool.
func (c *OSTClient) put(addr string, conn *ostConn) {
	conn.done() // before another request can take it from the pool
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || len(c.idle[addr]) >= c.maxIdle() {
		conn.Close()
		return
	}
	if c.idle == nil {
		c.idle = make(map[string][]*ostConn)
	}
	c.idle[addr] = append(c.idle[addr], conn)
}

// discard closes a connection get returned.
func (c *OSTClient) discard(conn *ostConn) {
	conn.Close()
	conn.done()
}

func (c *OSTClient) maxIdle() int {
	if c.MaxIdle > 0 {
		return c.MaxIdle
	}
	return 16
}

func (c *OSTClient) maxInFlight() int {
	if c.MaxInFlight > 0 {
		return c.MaxInFlight
	}
	return c.maxIdle()
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
	if err := c.checkSizes(ctx, payload, dest); err != nil {
		return RespHeader{}, nil, err
	}
	if l, ok := c.Local.LocalOST(addr); ok {
		h.PayloadLen = uint32(len(payload))
		resp, body, err := l.ServeOST(ctx, h, payload, dest)
		if err != nil {
			return resp, nil, localErr(addr, err)
		}
		return resp, body, nil
	}
	conn, err := c.get(ctx, addr)
	if err != nil {
		return RespHeader{}, nil, err
	}
	resp, body, inStep, err := c.exchange(ctx, conn, addr, h, payload, dest)
	c.release(addr, conn, inStep)
	return resp, body, err
}

func (c *OSTClient) checkSizes(ctx context.Context, payload, dest []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(payload) > MaxFramePayload || len(dest) > MaxFramePayload {
		return Errorf(CodeInvalid, "request of %d bytes exceeds the %d-byte frame limit", max(len(payload), len(dest)), MaxFramePayload)
	}
	return nil
}

// release gives a connection back after exchange: to the pool if it is
// still in step, else closed.
func (c *OSTClient) release(addr string, conn *ostConn, inStep bool) {
	if inStep {
		c.put(addr, conn)
	} else {
		c.discard(conn)
	}
}

// exchange sends one request on conn and reads its reply. inStep says
// whether conn may carry another request: not after a transport failure,
// nor after a request the OST refused as invalid (it may hang up then).
func (c *OSTClient) exchange(ctx context.Context, conn *ostConn, addr string, h ReqHeader, payload, dest []byte) (resp RespHeader, body []byte, inStep bool, err error) {
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
		return resp, nil, false, c.transportErr(ctx, addr, err)
	}
	var rh [RespHeaderSize]byte
	if _, err := io.ReadFull(conn, rh[:]); err != nil {
		return resp, nil, false, c.transportErr(ctx, addr, err)
	}
	if resp, err = DecodeRespHeader(rh[:]); err != nil {
		return resp, nil, false, err
	}
	if resp.Status == CodeOK && dest != nil {
		if int(resp.PayloadLen) > len(dest) {
			return resp, nil, false, Errorf(CodeIO, "OST %s sent %d bytes for a %d-byte read", addr, resp.PayloadLen, len(dest))
		}
		body = dest[:resp.PayloadLen]
	} else {
		body = make([]byte, resp.PayloadLen)
	}
	if _, err := io.ReadFull(conn, body); err != nil {
		return resp, nil, false, c.transportErr(ctx, addr, err)
	}
	stop()
	conn.SetDeadline(time.Time{})
	if resp.Status != CodeOK {
		return resp, nil, resp.Status != CodeInvalid, &Error{Code: resp.Status, Msg: "OST " + addr + ": " + string(body)}
	}
	return resp, body, true, nil
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

// sharedRegionSize is what a gateway asks for: a 1 MiB FUSE read with the
// checksum blocks (64 KiB at most) at both of its edges.
const sharedRegionSize = 1<<20 + 128<<10

// ReadShared reads like Read but, from an OST on this machine, lets the OST
// leave the bytes in memory it shares with this client instead of copying
// them through the socket: data then points into that memory, valid until
// done is called, which must happen once. Otherwise (TCP, an OST that
// cannot share, a read larger than the region) it reads into dest, and
// done does nothing.
func (c *OSTClient) ReadShared(ctx context.Context, addr string, obj uint64, off int64, dest []byte) (data []byte, done func(), err error) {
	if err := c.checkSizes(ctx, nil, dest); err != nil {
		return nil, nil, err
	}
	if l, ok := c.Local.LocalOST(addr); ok {
		data, done, err := l.ReadOST(ctx, obj, off, dest)
		if err != nil {
			return nil, nil, localErr(addr, err)
		}
		return data, done, nil
	}
	conn, err := c.get(ctx, addr)
	if err != nil {
		return nil, nil, err
	}
	if conn.shared == nil && !conn.noShared {
		if err := c.share(ctx, conn, addr); err != nil {
			c.discard(conn)
			return nil, nil, err
		}
	}
	h := ReqHeader{Op: OSTRead, Object: obj, Offset: uint64(off), Length: uint32(len(dest))}
	if conn.shared == nil || len(dest)+2*StripeSizeUnit > len(conn.shared) {
		_, body, inStep, err := c.exchange(ctx, conn, addr, h, nil, dest)
		c.release(addr, conn, inStep)
		return body, func() {}, err
	}
	h.Flags |= FlagShared
	var place [8]byte
	_, body, inStep, err := c.exchange(ctx, conn, addr, h, nil, place[:])
	if err == nil {
		var p SharedPlace
		if p, err = DecodeSharedPlace(body, len(conn.shared), len(dest)); err == nil {
			conn.done()
			return conn.shared[p.Start : p.Start+p.Len], func() { c.put(addr, conn) }, nil
		}
		inStep = false
	}
	c.release(addr, conn, inStep)
	return nil, nil, err
}

// share asks the OST at the other end of a Unix socket connection for a
// shared read region and maps it read-only. An OST that cannot share marks
// the connection so; an error means the connection is unusable.
func (c *OSTClient) share(ctx context.Context, conn *ostConn, addr string) error {
	uc, ok := conn.Conn.(*net.UnixConn)
	if !ok {
		conn.noShared = true
		return nil
	}
	conn.SetDeadline(time.Now().Add(c.timeout()))
	defer conn.SetDeadline(time.Time{})
	var hdr [ReqHeaderSize]byte
	EncodeReqHeader(hdr[:], ReqHeader{Op: OSTShare, Length: sharedRegionSize})
	if _, err := uc.Write(hdr[:]); err != nil {
		return c.transportErr(ctx, addr, err)
	}
	// The descriptor travels with the reply header's first bytes.
	var rh [RespHeaderSize]byte
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := uc.ReadMsgUnix(rh[:], oob)
	if err != nil {
		return c.transportErr(ctx, addr, err)
	}
	fd := -1
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) == 1 {
		if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(fds) >= 1 {
			fd = fds[0]
			for _, extra := range fds[1:] {
				unix.Close(extra)
			}
		}
	}
	if fd >= 0 {
		defer unix.Close(fd)
	}
	if _, err := io.ReadFull(uc, rh[n:]); err != nil {
		return c.transportErr(ctx, addr, err)
	}
	resp, err := DecodeRespHeader(rh[:])
	if err != nil {
		return err
	}
	if _, err := io.CopyN(io.Discard, uc, int64(resp.PayloadLen)); err != nil {
		return c.transportErr(ctx, addr, err)
	}
	if resp.Status != CodeOK || fd < 0 {
		conn.noShared = true // an OST that cannot share: read through the socket
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Size != sharedRegionSize {
		conn.noShared = true
		return nil
	}
	m, err := unix.Mmap(fd, 0, sharedRegionSize, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		conn.noShared = true
		return nil
	}
	conn.shared = m
	return nil
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

// Destroy removes objects from the OST at addr, MaxDestroyBatch per round
// trip, and returns how many, in order, were removed before the first
// failure. Destroying an absent object succeeds.
func (c *OSTClient) Destroy(ctx context.Context, addr string, objs []uint64) (int, error) {
	done := 0
	for len(objs) > 0 {
		batch := objs[:min(len(objs), MaxDestroyBatch)]
		objs = objs[len(batch):]
		resp, _, err := c.roundTrip(ctx, addr, ReqHeader{Op: OSTDestroy}, EncodeObjectList(batch), nil)
		done += int(min(resp.Value, uint64(len(batch))))
		if err != nil {
			return done, err
		}
	}
	return done, nil
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
