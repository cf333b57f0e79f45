// Package ost is the object storage target: it keeps stripe objects on
// local disk with a CRC32C per 4 KiB block, verified on every read, serves
// them over the TCP data path of api/ostwire.go, and registers itself in
// etcd under a lease.
package ost

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stria/stria/api"
	"github.com/stria/stria/api/iobuf"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
)

// requestTimeout bounds the reading of one request's payload and the
// writing of its reply, so a stalled peer cannot pin a connection forever.
// Idle connections between requests have no limit.
const requestTimeout = 60 * time.Second

// Server is one OST.
type Server struct {
	cfg   Config
	etcd  *clientv3.Client
	log   *slog.Logger
	id    identity
	store *store

	index     atomic.Uint32
	addr      atomic.Pointer[string]
	ready     chan struct{}
	readyOnce sync.Once
	started   atomic.Bool

	// connMu guards conns and serving; Run waits for the connections and
	// for the local calls (ServeOST, ReadOST) before closing the store.
	connMu     sync.Mutex
	conns      map[net.Conn]struct{}
	serving    bool
	localCalls sync.WaitGroup
}

// New checks the configuration, prepares the data directory (identity file,
// object directories) and counts the objects already there. It does not
// touch the network: Run does.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Etcd == nil {
		return nil, errors.New("ost: an etcd client is required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "ost")
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("ost: creating data directory: %w", err)
	}
	id, err := loadIdentity(cfg.DataDir, cfg.FSName)
	if err != nil {
		return nil, fmt.Errorf("ost: %w", err)
	}
	if id.Index >= 0 && cfg.Index >= 0 && id.Index != int64(cfg.Index) {
		return nil, fmt.Errorf("ost: data directory %s is OST index %d, but index %d was configured", cfg.DataDir, id.Index, cfg.Index)
	}
	s := &Server{
		cfg:   cfg,
		etcd:  deps.Etcd,
		log:   log,
		id:    id,
		ready: make(chan struct{}),
		conns: make(map[net.Conn]struct{}),
	}
	if id.Index >= 0 {
		s.index.Store(uint32(id.Index))
	} else if cfg.Index >= 0 {
		s.index.Store(uint32(cfg.Index))
	}
	s.store, err = openStore(filepath.Join(cfg.DataDir, "objects"), log)
	if err != nil {
		return nil, fmt.Errorf("ost: %w", err)
	}
	return s, nil
}

// Ready is closed once the OST listens and is registered in etcd.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the data path address ("" before Run listens).
func (s *Server) Addr() string {
	if a := s.addr.Load(); a != nil {
		return *a
	}
	return ""
}

// Index is the OST index; with automatic allocation it is known once Ready
// is closed.
func (s *Server) Index() uint32 { return s.index.Load() }

// Run claims the OST index, listens, registers, and serves until ctx ends.
// It returns only after every goroutine it started has ended and every
// object file is closed: nil when ctx ended, else why it could not serve
// (for example ErrIndexConflict). Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("ost: Run called twice")
	}
	defer s.store.close()
	idx, err := s.claimIndex(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // asked to stop before we started
		}
		return fmt.Errorf("ost: %w", err)
	}
	s.index.Store(idx)
	s.log = s.log.With("index", idx)
	s.store.log = s.log

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("ost: listen: %w", err)
	}
	addr := ln.Addr().String()
	s.addr.Store(&addr)
	advertise := addr
	if s.cfg.Advertise != "" {
		advertise = s.cfg.Advertise
	} else if tcp, ok := ln.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		s.log.Warn("listening on an unspecified address without an advertise address; clients elsewhere cannot reach it", "addr", addr)
	}
	s.log.Info("serving", "addr", addr, "data_dir", s.cfg.DataDir, "objects", s.store.objects.Load())

	listeners := []net.Listener{ln}
	socket := s.listenSocket(ctx)
	if socket != nil {
		listeners = append(listeners, socket)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.connMu.Lock()
	s.serving = true
	s.connMu.Unlock()
	var wg, conns sync.WaitGroup
	serveErrs := make([]error, len(listeners))
	for i, l := range listeners {
		wg.Go(func() {
			serveErrs[i] = s.serve(ctx, l, &conns)
			cancel()
		})
	}
	wg.Go(func() { s.register(ctx, idx, advertise, socket != nil) })

	<-ctx.Done()
	for _, l := range listeners {
		l.Close()
	}
	s.connMu.Lock()
	s.serving = false
	for c := range s.conns {
		c.Close()
	}
	s.connMu.Unlock()
	wg.Wait()
	conns.Wait()
	s.localCalls.Wait()
	s.log.Info("stopped")
	if err := errors.Join(serveErrs...); err != nil {
		return fmt.Errorf("ost: %w", err)
	}
	return nil
}

// listenSocket opens the Unix socket (Config.Socket) for clients on this
// machine. Without it they use TCP, so a failure is logged, not fatal.
func (s *Server) listenSocket(ctx context.Context) net.Listener {
	path := s.cfg.Socket
	if path == "none" || path == "" {
		return nil
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			s.log.Warn("another process serves the Unix socket; clients on this machine use TCP", "socket", path)
			return nil
		}
		os.Remove(path) // left by an OST that died
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		s.log.Warn("no Unix socket; clients on this machine use TCP", "socket", path, "err", err)
		return nil
	}
	return ln
}

// serve accepts connections until ln is closed.
func (s *Server) serve(ctx context.Context, ln net.Listener, conns *sync.WaitGroup) error {
	delay := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporary(err) {
				s.log.Warn("accept failed; retrying", "err", err)
				if !sleepCtx(ctx, delay) {
					return nil
				}
				delay = min(2*delay, time.Second)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		delay = 5 * time.Millisecond
		s.connMu.Lock()
		if ctx.Err() != nil {
			s.connMu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.connMu.Unlock()
		conns.Go(func() {
			defer func() {
				s.connMu.Lock()
				delete(s.conns, c)
				s.connMu.Unlock()
				c.Close()
			}()
			s.serveConn(ctx, c)
		})
	}
}

// peer names a connection's remote end for logs.
func peer(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return c.LocalAddr().Network()
}

// isTemporary reports errors such as EMFILE that a later accept may not see.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// serveConn answers one connection's requests one after another.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	br := bufio.NewReaderSize(c, 16<<10)
	scratch := make([]byte, 4096)
	var shared []byte // the connection's shared read region, see api.OSTShare
	defer func() {
		if shared != nil {
			unix.Munmap(shared)
		}
	}()
	var hdr [api.ReqHeaderSize]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				s.log.Debug("connection ended", "remote", peer(c), "err", err)
			}
			return
		}
		h, err := api.DecodeReqHeader(hdr[:])
		c.SetDeadline(time.Now().Add(requestTimeout))
		if err != nil {
			if !framed(hdr[:], h) {
				// The stream may be out of step: answer, then hang up.
				s.log.Warn("malformed request; closing the connection", "remote", peer(c), "err", err)
				api.WriteResponse(c, scratch, 0, nil, err)
				return
			}
			// A well-framed request we refuse: skip its payload and go on.
			s.log.Warn("invalid request", "remote", peer(c), "err", err)
			if _, err := br.Discard(int(h.PayloadLen)); err != nil {
				return
			}
			if api.WriteResponse(c, scratch, 0, nil, err) != nil {
				return
			}
			c.SetDeadline(time.Time{})
			continue
		}
		if err := s.handle(ctx, c, br, h, scratch, &shared); err != nil {
			if ctx.Err() == nil {
				s.log.Debug("connection failed", "remote", peer(c), "err", err)
			}
			return
		}
		c.SetDeadline(time.Time{})
	}
}

// framed reports whether a header that failed validation still delimits
// its frame (right magic and version, a payload length within bounds), so
// the connection can skip the payload and stay in step.
func framed(b []byte, h api.ReqHeader) bool {
	var ref [api.ReqHeaderSize]byte
	api.EncodeReqHeader(ref[:], api.ReqHeader{}) // magic and version
	return bytes.Equal(b[:3], ref[:3]) && h.PayloadLen <= api.MaxFramePayload
}

// handle serves one request whose header has been read. It returns an
// error only when the connection can no longer be used.
func (s *Server) handle(ctx context.Context, c net.Conn, br *bufio.Reader, h api.ReqHeader, scratch []byte, shared *[]byte) error {
	var (
		value   uint64
		payload []byte
		err     error
	)
	switch h.Op {
	case api.OSTShare:
		return s.share(c, h, shared, scratch)
	case api.OSTRead:
		var into []byte
		if h.Flags&api.FlagShared != 0 {
			if into = *shared; into == nil {
				err = api.Errorf(api.CodeInvalid, "a shared read on a connection without a shared region")
				break
			}
		}
		var res readResult
		res, err = s.store.read(ctx, h.Object, int64(h.Offset), int(h.Length), into, into != nil)
		if err == nil && into != nil {
			value = uint64(res.size)
			payload = api.EncodeSharedPlace(api.SharedPlace{Start: uint32(res.start), Len: uint32(len(res.payload))})
			break
		}
		if err == nil && res.buf != nil {
			// Reply header and data in one writev, without a copy.
			var hdr [api.RespHeaderSize]byte
			api.EncodeRespHeader(hdr[:], api.RespHeader{
				PayloadLen: uint32(len(res.payload)),
				Value:      uint64(res.size),
			})
			bufs := net.Buffers{hdr[:], res.payload}
			_, werr := bufs.WriteTo(c)
			iobuf.Put(res.buf)
			return werr
		}
		value = uint64(res.size)
	default:
		// The payload (a write's data, an allocate's length, a destroy's
		// list), then the operation.
		var bp *[]byte
		if h.PayloadLen > 0 {
			bp = iobuf.Get(int(h.PayloadLen))
			if _, rerr := io.ReadFull(br, *bp); rerr != nil {
				iobuf.Put(bp)
				return fmt.Errorf("reading the payload of operation %d: %w", h.Op, rerr)
			}
			value, payload, err = s.exec(ctx, h, *bp)
			iobuf.Put(bp)
		} else {
			value, payload, err = s.exec(ctx, h, nil)
		}
	}
	if err != nil {
		s.logFailure(h, err)
	}
	return api.WriteResponse(c, scratch, value, payload, err)
}

// exec runs an operation other than a read or a share, given its
// payload, and returns the reply's value and payload.
func (s *Server) exec(ctx context.Context, h api.ReqHeader, payload []byte) (uint64, []byte, error) {
	switch h.Op {
	case api.OSTWrite:
		size, err := s.store.write(ctx, h.Object, int64(h.Offset), payload, h.Flags&api.FlagSync != 0)
		return uint64(size), nil, err
	case api.OSTAllocate:
		n := int64(binary.BigEndian.Uint64(payload)) // Check made it 8 bytes
		return 0, nil, s.store.allocate(ctx, h.Object, int64(h.Offset), n, h.Flags&api.FlagKeepSize != 0)
	case api.OSTPunch:
		return h.Offset, nil, s.store.punch(ctx, h.Object, int64(h.Offset))
	case api.OSTSync:
		return 0, nil, s.store.sync(ctx, h.Object)
	case api.OSTGetSize:
		size, err := s.store.size(ctx, h.Object)
		return uint64(size), nil, err
	case api.OSTDestroy:
		objs := []uint64{h.Object}
		if len(payload) > 0 {
			var err error
			if objs, err = api.DecodeObjectList(payload); err != nil {
				return 0, nil, err
			}
		}
		var removed uint64
		for _, obj := range objs {
			if err := s.store.destroy(ctx, obj); err != nil {
				return removed, nil, err
			}
			removed++
		}
		return removed, nil, nil
	case api.OSTStatFS:
		st, err := s.store.statfs(s.cfg.DataDir, s.Index())
		return 0, api.EncodeStatfs(st), err
	}
	return 0, nil, api.Errorf(api.CodeInvalid, "unknown OST operation %d", h.Op)
}

// beginLocal admits a call from a client in this process while the OST
// serves; endLocal must follow.
func (s *Server) beginLocal() error {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if !s.serving {
		return api.Errorf(api.CodeUnavailable, "OST is not serving")
	}
	s.localCalls.Add(1)
	return nil
}

func (s *Server) endLocal() { s.localCalls.Done() }

// ServeOST answers one request from a client in this process (`stria up`
// gives its mount the OSTs it runs) as a connection would, without the
// socket: the same checks, operations and errors. A write's data is
// stored straight from the caller's buffer: through the socket every byte
// was copied twice more, and each request cost a hand-off between
// goroutines on both ends.
func (s *Server) ServeOST(ctx context.Context, h api.ReqHeader, payload, dest []byte) (api.RespHeader, []byte, error) {
	if err := h.Check(); err != nil {
		return api.RespHeader{}, nil, err
	}
	if int(h.PayloadLen) != len(payload) {
		return api.RespHeader{}, nil, api.Errorf(api.CodeInvalid, "payload of %d bytes, header says %d", len(payload), h.PayloadLen)
	}
	switch h.Op {
	case api.OSTShare:
		return api.RespHeader{}, nil, api.Errorf(api.CodeInvalid, "shared memory needs a Unix socket connection")
	case api.OSTRead:
		data, done, size, err := s.readLocal(ctx, h, dest)
		if err != nil {
			return api.RespHeader{}, nil, err
		}
		n := len(data)
		if n > 0 && &data[0] != &dest[0] {
			n = copy(dest, data)
		}
		done()
		return api.RespHeader{PayloadLen: uint32(n), Value: uint64(size)}, dest[:n], nil
	}
	if err := s.beginLocal(); err != nil {
		return api.RespHeader{}, nil, err
	}
	defer s.endLocal()
	value, reply, err := s.exec(ctx, h, payload)
	if err != nil {
		s.logFailure(h, err)
		// The value still counts: how many objects a destroy removed.
		return api.RespHeader{Status: api.AsError(err).Code, Value: value}, nil, err
	}
	return api.RespHeader{PayloadLen: uint32(len(reply)), Value: value}, reply, nil
}

// ReadOST reads for a client in this process: whole blocks straight into
// dest, anything else into a buffer of the OST's that it lends until done.
func (s *Server) ReadOST(ctx context.Context, obj uint64, off int64, dest []byte) ([]byte, func(), error) {
	h := api.ReqHeader{Op: api.OSTRead, Object: obj, Offset: uint64(off), Length: uint32(len(dest))}
	if err := h.Check(); err != nil {
		return nil, nil, err
	}
	data, done, _, err := s.readLocal(ctx, h, dest)
	return data, done, err
}

// readLocal serves a checked read header for ServeOST and ReadOST. A read
// of whole blocks lands in dest, where the caller wants the bytes (a FUSE
// reply's buffer: over io_uring the kernel takes the reply only from the
// ring's buffer, so bytes read elsewhere would be copied once more); any
// other read needs the partial blocks at its ends for their checksums, and
// goes to a buffer of its own, lent until done.
func (s *Server) readLocal(ctx context.Context, h api.ReqHeader, dest []byte) ([]byte, func(), int64, error) {
	if err := s.beginLocal(); err != nil {
		return nil, nil, 0, err
	}
	defer s.endLocal()
	res, err := s.store.read(ctx, h.Object, int64(h.Offset), int(h.Length), dest[:min(len(dest), int(h.Length))], false)
	if err != nil {
		s.logFailure(h, err)
		return nil, nil, 0, err
	}
	if res.buf == nil {
		return res.payload, func() {}, res.size, nil
	}
	return res.payload, func() { iobuf.Put(res.buf) }, res.size, nil
}

// share gives the connection a shared read region (api.OSTShare): memory
// this OST reads objects into and the client maps read-only, its
// descriptor sent with the reply. Without one the client reads through the
// socket, so a failure here is an error reply, not a broken connection.
func (s *Server) share(c net.Conn, h api.ReqHeader, shared *[]byte, scratch []byte) error {
	uc, ok := c.(*net.UnixConn)
	switch {
	case !ok:
		return api.WriteResponse(c, scratch, 0, nil, api.Errorf(api.CodeInvalid, "shared memory needs a Unix socket connection"))
	case *shared != nil:
		return api.WriteResponse(c, scratch, 0, nil, api.Errorf(api.CodeInvalid, "this connection already has a shared region"))
	}
	fd, err := unix.MemfdCreate("stria-ost-read", unix.MFD_CLOEXEC)
	if err != nil {
		return api.WriteResponse(c, scratch, 0, nil, api.Errorf(api.CodeUnavailable, "shared memory: %v", err))
	}
	defer unix.Close(fd)
	var mem []byte
	if err = unix.Ftruncate(fd, int64(h.Length)); err == nil {
		mem, err = unix.Mmap(fd, 0, int(h.Length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	}
	if err != nil {
		return api.WriteResponse(c, scratch, 0, nil, api.Errorf(api.CodeUnavailable, "shared memory: %v", err))
	}
	var hdr [api.RespHeaderSize]byte
	api.EncodeRespHeader(hdr[:], api.RespHeader{})
	if _, _, err := uc.WriteMsgUnix(hdr[:], unix.UnixRights(fd), nil); err != nil {
		unix.Munmap(mem)
		return err
	}
	*shared = mem
	return nil
}

// logFailure records a failed request: server-side faults loudly, caller
// errors quietly. Checksum failures were logged where they were found.
func (s *Server) logFailure(h api.ReqHeader, err error) {
	attrs := []any{"op", h.Op, "object", fmt.Sprintf("%016x", h.Object), "offset", h.Offset, "err", err}
	switch api.CodeOf(err) {
	case api.CodeCorrupt, api.CodeCanceled:
	case api.CodeIO, api.CodeInternal:
		s.log.Error("request failed", attrs...)
	case api.CodeNoSpace:
		s.log.Warn("request failed", attrs...)
	default:
		s.log.Debug("request failed", attrs...)
	}
}
