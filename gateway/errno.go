package gateway

import (
	"context"
	"errors"
	"syscall"

	"github.com/stria/stria/api"
)

// errnoByCode is the one place where a wire error becomes an errno.
var errnoByCode = map[api.Code]syscall.Errno{
	api.CodeNotFound:     syscall.ENOENT,
	api.CodeExists:       syscall.EEXIST,
	api.CodeNotDir:       syscall.ENOTDIR,
	api.CodeIsDir:        syscall.EISDIR,
	api.CodeNotEmpty:     syscall.ENOTEMPTY,
	api.CodeInvalid:      syscall.EINVAL,
	api.CodeNameTooLong:  syscall.ENAMETOOLONG,
	api.CodeNoSpace:      syscall.ENOSPC,
	api.CodeAccess:       syscall.EACCES,
	api.CodePerm:         syscall.EPERM,
	api.CodeIO:           syscall.EIO,
	api.CodeCorrupt:      syscall.EIO,
	api.CodeUnavailable:  syscall.EIO,
	api.CodeNoAttr:       syscall.ENODATA,
	api.CodeRange:        syscall.ERANGE,
	api.CodeTooBig:       syscall.E2BIG,
	api.CodeCanceled:     syscall.EINTR,
	api.CodeTimeout:      syscall.EIO,
	api.CodeNotSupported: syscall.EOPNOTSUPP,
	api.CodeBusy:         syscall.EBUSY,
	api.CodeCrossDevice:  syscall.EXDEV,
	api.CodeInternal:     syscall.EIO,
	api.CodeEvicted:      syscall.EIO,
}

// toErrno maps any error to the errno the mount returns: wire codes by the
// table, a cancelled request to EINTR, anything unknown to EIO.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	if errors.Is(err, context.Canceled) {
		return syscall.EINTR
	}
	if e, ok := errnoByCode[api.CodeOf(err)]; ok {
		return e
	}
	return syscall.EIO
}

// errno maps err like toErrno and logs the failures a user cannot explain
// from the errno alone (EIO and friends), naming the operation.
func (g *Gateway) errno(op string, err error) syscall.Errno {
	e := toErrno(err)
	if e == syscall.EIO {
		g.log.Warn("I/O error", "op", op, "err", err)
	}
	return e
}
