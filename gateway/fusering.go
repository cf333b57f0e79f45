package gateway

// FUSE over io_uring (Linux 6.14+, CONFIG_FUSE_IO_URING, fuse module
// parameter enable_uring). Over /dev/fuse every request wakes a reader
// thread of the mount, often on the other CPU, and its reply wakes the
// caller back; on this VM that round trip costs more than most handlers
// (stop 18's perf profile: an eighth of all CPU in wake-ups and their
// IPIs during stats). Over io_uring the kernel keeps one queue per CPU and
// hands a request to a thread of the queue of the CPU it was made on, which
// replies and waits for the next request in one system call. Measured on a
// go-fuse loopback mount here: creates, stats, reads and unlinks of small
// files 1.3-1.7 times as many per second.
//
// The kernel still sends INIT, FORGET and INTERRUPT through /dev/fuse, and
// notifications still go that way, so go-fuse's server keeps serving the
// device; the ring threads pass every other request to a
// fuse.ProtocolServer over the same file system. An INTERRUPT for a request
// on the ring finds no such request in go-fuse's server and is dropped: such
// a request runs to its end (every call it makes is bounded by
// --meta-timeout or --ost-timeout); a fatal signal still ends the caller at
// once.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// ringThreadsPerQueue is how many requests of one CPU's queue are served at
// once: each ring thread holds one request at a time, so one blocked on meta
// or an OST leaves the others to the rest of that CPU's requests.
const ringThreadsPerQueue = 8

const (
	sysIOURingSetup = 425
	sysIOURingEnter = 426

	ioringSetupSQE128    = 1 << 10 // the FUSE command needs the 128-byte SQE
	ioringEnterGetevents = 1
	ioringFeatSingleMmap = 1
	ioringOffSQRing      = 0
	ioringOffSQEs        = 0x10000000
	ioringOpURingCmd     = 46
	sqeSize              = 128
	cqeSize              = 16

	fuseURingCmdRegister       = 1
	fuseURingCmdCommitAndFetch = 2

	// struct fuse_uring_req_header: the request's fuse_in_header (the
	// reply's fuse_out_header), its operation's own header, then struct
	// fuse_uring_ent_in_out {flags, commit_id, payload_sz, ...}.
	ringHdrInOut     = 0
	ringHdrOpIn      = 128
	ringHdrOpInSize  = 128
	ringHdrCommitID  = 256 + 8
	ringHdrPayloadSz = 256 + 16
	ringHdrSize      = 288
	fuseInHeaderSize = 40
	fuseOutHdrSize   = 16
	fuseOpRead       = 15
	fuseOpWrite      = 16
	fuseOpInit       = 26
	fuseReadInSizeAt = 16 // struct fuse_read_in: fh, offset, then size (u32)

	// largeRead is the READ size from which a ring thread unpins itself.
	largeRead = 128 << 10
)

var le = binary.LittleEndian

// fuseRingParam is the kernel's switch for FUSE over io_uring.
const fuseRingParam = "/sys/module/fuse/parameters/enable_uring"

// fuseRingUnavailable says why this mount cannot use FUSE over io_uring, or
// nil. As root it turns the kernel's switch on: it only lets a FUSE server
// that asks for io_uring use it, and every other one is served as before.
func fuseRingUnavailable(log *slog.Logger) error {
	if os.Geteuid() != 0 {
		return errors.New("not root: the ring needs the mount's /dev/fuse, which only a mount of our own hands us")
	}
	b, err := os.ReadFile(fuseRingParam)
	if err != nil {
		return fmt.Errorf("kernel without FUSE over io_uring (Linux 6.14+, CONFIG_FUSE_IO_URING): %w", err)
	}
	if strings.TrimSpace(string(b)) != "Y" {
		if err := os.WriteFile(fuseRingParam, []byte("Y"), 0); err != nil {
			return fmt.Errorf("turning on %s: %w", fuseRingParam, err)
		}
		log.Info("turned on FUSE over io_uring in the kernel", "param", fuseRingParam)
	}
	r, err := newIOURing(1)
	if err != nil {
		return err
	}
	r.close()
	return nil
}

// mountDevFD mounts a FUSE file system at mountpoint as go-fuse's direct
// mount does, and returns the /dev/fuse descriptor, which go-fuse then
// serves through its "/dev/fd/N" mount point; the ring needs the descriptor
// too, and go-fuse does not hand out its own.
func mountDevFD(mountpoint string, o *fuse.MountOptions) (int, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		return -1, err
	}
	fd, err := syscall.Open("/dev/fuse", os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	opts := []string{
		"fd=" + strconv.Itoa(fd),
		fmt.Sprintf("rootmode=%o", st.Mode&syscall.S_IFMT),
		"user_id=" + strconv.Itoa(os.Geteuid()),
		"group_id=" + strconv.Itoa(os.Getegid()),
		"max_read=" + strconv.Itoa(o.MaxWrite),
	}
	opts = append(opts, o.Options...)
	if o.AllowOther {
		opts = append(opts, "allow_other")
	}
	err = syscall.Mount(o.FsName, mountpoint, "fuse."+o.Name, syscall.MS_NOSUID|syscall.MS_NODEV, strings.Join(opts, ","))
	if err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("mount(2) %s: %w", mountpoint, err)
	}
	return fd, nil
}

// fuseRing serves a mount's requests over io_uring: ringThreadsPerQueue
// threads for each CPU's queue, each pinned to that CPU.
type fuseRing struct {
	devFD   int
	payload int // per-request buffer: the kernel's largest request or reply
	log     *slog.Logger
	server  *fuse.Server
	rawFS   fuse.RawFileSystem
	opts    *fuse.MountOptions

	// ps is made at the first request on the ring, from the INIT that
	// go-fuse's server has answered by then: the kernel sends nothing
	// before it has that answer.
	psOnce sync.Once
	ps     *fuse.ProtocolServer

	failed chan error // the first thread that fails
	wg     sync.WaitGroup

	mountpoint string
	abortOnce  sync.Once
}

func newFUSERing(mountpoint string, devFD int, server *fuse.Server, rawFS fuse.RawFileSystem, opts *fuse.MountOptions, log *slog.Logger) *fuseRing {
	// The kernel wants room for max(max_write, max_pages pages).
	pages := (opts.MaxWrite + os.Getpagesize() - 1) / os.Getpagesize()
	return &fuseRing{
		devFD:   devFD,
		payload: pages * os.Getpagesize(),
		log:     log,
		server:  server,
		rawFS:   rawFS,
		opts:    opts,
		failed:  make(chan error, 1),

		mountpoint: mountpoint,
	}
}

// start starts the ring threads; they register with the kernel, which holds
// every request of the mount until each CPU's queue has one.
func (r *fuseRing) start() error {
	cpus, err := possibleCPUs()
	if err != nil {
		return err
	}
	for q := range cpus {
		for range ringThreadsPerQueue {
			r.wg.Add(1)
			go r.serveQueue(q)
		}
	}
	r.log.Info("serving FUSE over io_uring", "queues", cpus, "threads_per_queue", ringThreadsPerQueue)
	return nil
}

// waitServing waits until a request on the mount is answered through the
// ring, a ring thread fails, or timeout passes.
func (r *fuseRing) waitServing(timeout time.Duration) error {
	answered := make(chan error, 1)
	go func() {
		var st syscall.Stat_t
		answered <- syscall.Stat(r.mountpoint, &st)
	}()
	select {
	case err := <-answered:
		return err
	case err := <-r.failed:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("no request answered over io_uring within %v", timeout)
	}
}

// wait returns once every ring thread has ended (the mount is gone).
func (r *fuseRing) wait() { r.wg.Wait() }

// fail reports a ring thread's end by error and aborts the mount: the
// kernel would hold the requests of that thread's CPU for it forever, and a
// dead mount is better than a hung one.
func (r *fuseRing) fail(err error) {
	select {
	case r.failed <- err:
	default:
	}
	r.abort()
}

func (r *fuseRing) abort() {
	r.abortOnce.Do(func() { abortFUSE(r.mountpoint, r.log) })
}

// possibleCPUs is the kernel's number of queues: one per possible CPU.
func possibleCPUs() (int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	last, err := strconv.Atoi(s[strings.LastIndexAny(s, ",-")+1:])
	if err != nil {
		return 0, fmt.Errorf("parsing possible CPUs %q: %w", s, err)
	}
	return last + 1, nil
}

func (r *fuseRing) protocolServer() *fuse.ProtocolServer {
	r.psOnce.Do(func() {
		r.ps = fuse.NewProtocolServer(r.rawFS, r.opts)
		// Replay the kernel's INIT so the protocol server decodes requests
		// as the kernel's version writes them. Reading KernelSettings is
		// ordered after go-fuse wrote it by the kernel: a request reaches
		// the ring only after go-fuse's INIT reply.
		initIn := *r.server.KernelSettings()
		initIn.Length = uint32(unsafe.Sizeof(initIn))
		initIn.Opcode = fuseOpInit
		initIn.Unique = 1
		in := unsafe.Slice((*byte)(unsafe.Pointer(&initIn)), unsafe.Sizeof(initIn))
		if _, st := r.ps.HandleRequest([][]byte{in}, [][]byte{make([]byte, 512)}); !st.Ok() {
			r.log.Error("FUSE over io_uring: replaying INIT", "status", st)
		}
	})
	return r.ps
}

// serveQueue is one ring thread of queue qid.
func (r *fuseRing) serveQueue(qid int) {
	defer r.wg.Done()
	// The thread stays locked: it carries the queue's CPU affinity, and
	// io_uring completes a command on the thread that submitted it. It
	// ends with the goroutine.
	runtime.LockOSThread()
	if err := r.serve(qid); err != nil {
		r.log.Error("FUSE over io_uring: a ring thread failed; aborting the mount", "queue", qid, "err", err)
		r.fail(err)
	}
}

func (r *fuseRing) serve(qid int) error {
	// A request is served on the CPU it was made on: its caller waits
	// there, and a wake-up on the same CPU costs no IPI (stats in a shared
	// directory and of 4 KiB files 1.6-1.9 times as many per second as
	// unpinned). A large read is the exception: its copies would all land
	// on the reader's CPU, beside the reader's own (streaming reads ran at
	// 0.6-0.8 times /dev/fuse's pinned, level unpinned), so the thread lets
	// the scheduler place it while it serves large reads, and pins itself
	// again at the next other request.
	var here, anywhere unix.CPUSet
	here.Set(qid)
	if err := unix.SchedGetaffinity(0, &anywhere); err != nil {
		return fmt.Errorf("sched_getaffinity: %w", err)
	}
	pinned := unix.SchedSetaffinity(0, &here) == nil // an offline CPU's queue still serves, unpinned
	canPin := pinned
	ring, err := newIOURing(2)
	if err != nil {
		return err
	}
	defer ring.close()
	buf, err := unix.Mmap(-1, 0, ringHdrSize+r.payload, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("ring buffer: %w", err)
	}
	defer unix.Munmap(buf)
	header, payload := buf[:ringHdrSize], buf[ringHdrSize:]
	iov := []unix.Iovec{{Base: &header[0]}, {Base: &payload[0]}}
	iov[0].SetLen(len(header))
	iov[1].SetLen(len(payload))

	submit := func(op uint32, commitID uint64) {
		sqe := ring.nextSQE()
		sqe[0] = ioringOpURingCmd
		le.PutUint32(sqe[4:], uint32(r.devFD))
		le.PutUint32(sqe[8:], op) // cmd_op
		if op == fuseURingCmdRegister {
			le.PutUint64(sqe[16:], uint64(uintptr(unsafe.Pointer(&iov[0]))))
			le.PutUint32(sqe[24:], uint32(len(iov)))
		}
		// struct fuse_uring_cmd_req in the SQE's command area.
		le.PutUint64(sqe[56:], commitID)
		le.PutUint16(sqe[64:], uint16(qid))
		ring.push()
	}
	lastOp, lastCommit := uint32(fuseURingCmdRegister), uint64(0)
	submit(lastOp, lastCommit)
	// The request's pieces (in) and the reply's place (out) are the same
	// buffers every time; only in's lengths change.
	in := make([][]byte, 3)
	out := [][]byte{header[ringHdrInOut : ringHdrInOut+fuseOutHdrSize], payload}
	var names []byte
	for {
		err := ring.enter(1)
		runtime.KeepAlive(iov)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("io_uring_enter: %w", err)
		}
		res, ok := ring.popCQE()
		if !ok {
			continue
		}
		switch errno := syscall.Errno(-res); {
		case res == 0:
		case errno == syscall.EAGAIN && lastOp == fuseURingCmdRegister:
			// The kernel has not had go-fuse's INIT reply yet.
			time.Sleep(time.Millisecond)
			submit(lastOp, lastCommit)
			continue
		case errno == syscall.EAGAIN || errno == syscall.EINTR:
			submit(lastOp, lastCommit)
			continue
		case errno == syscall.ENOTCONN || errno == syscall.ECONNABORTED || errno == syscall.ENODEV:
			return nil // unmounted
		default:
			return fmt.Errorf("ring command %d: %w", lastOp, errno)
		}

		inLen := int(le.Uint32(header[ringHdrInOut:]))
		opcode := le.Uint32(header[ringHdrInOut+4:])
		unique := le.Uint64(header[ringHdrInOut+8:])
		commitID := le.Uint64(header[ringHdrCommitID:])
		payloadLen := min(int(le.Uint32(header[ringHdrPayloadSz:])), len(payload))
		opLen := min(max(inLen-fuseInHeaderSize-payloadLen, 0), ringHdrOpInSize)
		in[0], in[1], in[2] = header[ringHdrInOut:ringHdrInOut+fuseInHeaderSize], header[ringHdrOpIn:ringHdrOpIn+opLen], payload[:payloadLen]
		if payloadLen > 0 && opcode != fuseOpWrite {
			// Names and xattr values: the reply goes to the same buffer,
			// and may be written before the handler is done reading them.
			names = append(names[:0], payload[:payloadLen]...)
			in[2] = names
		}
		large := opcode == fuseOpRead && opLen >= fuseReadInSizeAt+4 && le.Uint32(header[ringHdrOpIn+fuseReadInSizeAt:]) >= largeRead
		if canPin && large == pinned {
			if large {
				pinned = unix.SchedSetaffinity(0, &anywhere) != nil
			} else {
				pinned = unix.SchedSetaffinity(0, &here) == nil
			}
		}
		n, st := r.protocolServer().HandleRequest(in, out)
		if !st.Ok() || n < fuseOutHdrSize {
			if st.Ok() {
				st = fuse.EIO // a request the kernel waits for needs a reply
			}
			le.PutUint32(header[ringHdrInOut:], fuseOutHdrSize)
			le.PutUint32(header[ringHdrInOut+4:], uint32(-int32(st)))
			le.PutUint64(header[ringHdrInOut+8:], unique)
			n = fuseOutHdrSize
		}
		le.PutUint32(header[ringHdrPayloadSz:], uint32(n-fuseOutHdrSize))
		lastOp, lastCommit = fuseURingCmdCommitAndFetch, commitID
		submit(lastOp, lastCommit)
	}
}

// ioURing is the little of io_uring the FUSE ring needs: one submitter,
// 128-byte SQEs, commands only.
type ioURing struct {
	fd                     int
	rings, sqes            []byte
	sqHead, sqTail, sqMask *uint32
	sqArray                []uint32
	sqEntries              uint32
	cqHead, cqTail, cqMask *uint32
	cqes                   []byte
}

// ioURingParams is struct io_uring_params.
type ioURingParams struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  struct {
		Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
		UserAddr                                                        uint64
	}
	CQOff struct {
		Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, Resv1 uint32
		UserAddr                                                        uint64
	}
}

func newIOURing(entries uint32) (*ioURing, error) {
	p := ioURingParams{Flags: ioringSetupSQE128}
	fd, _, errno := syscall.Syscall(sysIOURingSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &ioURing{fd: int(fd), sqEntries: p.SQEntries}
	if p.Features&ioringFeatSingleMmap == 0 {
		syscall.Close(r.fd)
		return nil, errors.New("io_uring_setup: kernel without IORING_FEAT_SINGLE_MMAP")
	}
	size := max(p.SQOff.Array+p.SQEntries*4, p.CQOff.CQEs+p.CQEntries*cqeSize)
	rings, err := unix.Mmap(r.fd, ioringOffSQRing, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		syscall.Close(r.fd)
		return nil, fmt.Errorf("mapping io_uring rings: %w", err)
	}
	sqes, err := unix.Mmap(r.fd, ioringOffSQEs, int(p.SQEntries*sqeSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		unix.Munmap(rings)
		syscall.Close(r.fd)
		return nil, fmt.Errorf("mapping io_uring SQEs: %w", err)
	}
	r.rings, r.sqes = rings, sqes
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&rings[off])) }
	r.sqHead, r.sqTail, r.sqMask = at(p.SQOff.Head), at(p.SQOff.Tail), at(p.SQOff.RingMask)
	r.sqArray = unsafe.Slice(at(p.SQOff.Array), p.SQEntries)
	r.cqHead, r.cqTail, r.cqMask = at(p.CQOff.Head), at(p.CQOff.Tail), at(p.CQOff.RingMask)
	r.cqes = rings[p.CQOff.CQEs : p.CQOff.CQEs+p.CQEntries*cqeSize]
	return r, nil
}

func (r *ioURing) close() {
	unix.Munmap(r.sqes)
	unix.Munmap(r.rings)
	syscall.Close(r.fd)
}

// nextSQE returns the next SQE, zeroed; push queues it. The ring thread
// submits at most one command at a time, so there is always room.
func (r *ioURing) nextSQE() []byte {
	idx := *r.sqTail & *r.sqMask
	s := r.sqes[idx*sqeSize : (idx+1)*sqeSize]
	clear(s)
	r.sqArray[idx] = idx
	return s
}

func (r *ioURing) push() { atomic.StoreUint32(r.sqTail, *r.sqTail+1) }

// enter submits what is queued and waits for minComplete completions.
func (r *ioURing) enter(minComplete uint32) error {
	toSubmit := *r.sqTail - atomic.LoadUint32(r.sqHead)
	_, _, errno := syscall.Syscall6(sysIOURingEnter, uintptr(r.fd), uintptr(toSubmit), uintptr(minComplete), ioringEnterGetevents, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// popCQE takes the next completion's result, if there is one.
func (r *ioURing) popCQE() (res int32, ok bool) {
	head := *r.cqHead
	if head == atomic.LoadUint32(r.cqTail) {
		return 0, false
	}
	res = int32(le.Uint32(r.cqes[(head&*r.cqMask)*cqeSize+8:]))
	atomic.StoreUint32(r.cqHead, head+1)
	return res, true
}

// mountFUSERing mounts root with its requests served over io_uring.
func mountFUSERing(mountpoint string, root fs.InodeEmbedder, opts *fs.Options, timeout time.Duration, log *slog.Logger) (*fuse.Server, *fuseRing, error) {
	mountpoint, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, nil, err
	}
	fd, err := mountDevFD(mountpoint, &opts.MountOptions)
	if err != nil {
		return nil, nil, err
	}
	opts.ExtraCapabilities |= fuse.CAP_OVER_IO_URING
	opts.DirectMount = false
	rawFS := fs.NewNodeFS(root, opts)
	server, err := fuse.NewServer(newForgetPacer(rawFS), "/dev/fd/"+strconv.Itoa(fd), &opts.MountOptions)
	if err != nil {
		syscall.Unmount(mountpoint, syscall.MNT_DETACH)
		syscall.Close(fd)
		return nil, nil, err
	}
	go server.Serve()
	ring := newFUSERing(mountpoint, fd, server, rawFS, &opts.MountOptions, log)
	err = ring.start()
	if err == nil {
		err = ring.waitServing(timeout)
	}
	if err != nil {
		// The kernel holds every request until the ring is complete:
		// never leave a mount that would hang whoever touches it.
		ring.abort()
		return nil, nil, fmt.Errorf("FUSE over io_uring: %w", err)
	}
	return server, ring, nil
}

// abortFUSE aborts the connection of the FUSE mount at mountpoint (its
// waiting requests fail with ENOTCONN) and detaches the mount.
func abortFUSE(mountpoint string, log *slog.Logger) {
	if dev, err := mountDevice(mountpoint); err == nil {
		if err := os.WriteFile(fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", unix.Minor(dev)), []byte("1"), 0); err != nil {
			log.Warn("aborting FUSE connection", "err", err)
		}
	}
	if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err != nil {
		log.Warn("detaching mount", "err", err)
	}
}

// mountDevice reads the device number of the mount at mountpoint from
// /proc/self/mountinfo, which, unlike stat(2), asks the FUSE server nothing.
func mountDevice(mountpoint string) (uint64, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0, err
	}
	var dev uint64
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[4] != mountpoint {
			continue
		}
		var major, minor uint32
		if _, err := fmt.Sscanf(f[2], "%d:%d", &major, &minor); err == nil {
			dev, found = unix.Mkdev(major, minor), true // the last mount there is the one on top
		}
	}
	if !found {
		return 0, fmt.Errorf("%s is not a mount point", mountpoint)
	}
	return dev, nil
}

// forgetPacer lets FORGETs gather in the kernel. With the ring serving
// every other request, /dev/fuse carries little but the FORGET each
// evicted inode brings (every unlinked file's, at once), and go-fuse's
// reader, always waiting, was woken for nearly each one: 18,441 reads of
// /dev/fuse for 20,000 unlinks, 9 % of the mount's CPU in a profile of
// unlinks. A FORGET needs no reply and nothing waits for it, so before the
// first FORGET of each read (one that follows the last by more than
// forgetBatchGap, as one read's do not) the reader rests forgetPause, and
// its next read takes all that came meanwhile in one BATCH_FORGET: 1,581
// reads for the same 20,000 unlinks, and 18 % fewer context switches of
// the mount. (The kernel's INTERRUPTs also come this way; those of ring
// requests find nothing to interrupt in go-fuse either way, see the top of
// this file.)
type forgetPacer struct {
	fuse.RawFileSystem
	mu   sync.Mutex // held through a rest: every reader rests
	last time.Time  // when the last FORGET was handled
	// now and sleep are time.Now and time.Sleep but in tests.
	now   func() time.Time
	sleep func(time.Duration)
}

const (
	forgetPause    = 2 * time.Millisecond
	forgetBatchGap = 20 * time.Microsecond
)

func newForgetPacer(fs fuse.RawFileSystem) *forgetPacer {
	return &forgetPacer{RawFileSystem: fs, now: time.Now, sleep: time.Sleep}
}

func (p *forgetPacer) Forget(nodeid, nlookup uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.now().Sub(p.last) > forgetBatchGap {
		p.sleep(forgetPause)
	}
	p.RawFileSystem.Forget(nodeid, nlookup)
	p.last = p.now()
}
