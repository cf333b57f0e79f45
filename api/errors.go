package api

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Code names one kind of failure. It is the only error vocabulary that
// crosses a process boundary; the gateway alone turns it into an errno.
type Code string

// The codes. Their string values travel on the wire (NATS micro error header,
// and by index in OST frames), so never renumber ostStatusCodes, only append.
const (
	CodeOK           Code = ""
	CodeNotFound     Code = "not_found"
	CodeExists       Code = "exists"
	CodeNotDir       Code = "not_dir"
	CodeIsDir        Code = "is_dir"
	CodeNotEmpty     Code = "not_empty"
	CodeInvalid      Code = "invalid"
	CodeNameTooLong  Code = "name_too_long"
	CodeNoSpace      Code = "no_space"
	CodeAccess       Code = "access"
	CodePerm         Code = "perm"
	CodeIO           Code = "io"
	CodeCorrupt      Code = "corrupt"
	CodeUnavailable  Code = "unavailable"
	CodeNoAttr       Code = "no_attr"
	CodeRange        Code = "range"
	CodeTooBig       Code = "too_big"
	CodeCanceled     Code = "canceled"
	CodeTimeout      Code = "timeout"
	CodeNotSupported Code = "not_supported"
	CodeBusy         Code = "busy"
	CodeCrossDevice  Code = "cross_device"
	CodeInternal     Code = "internal"
	// CodeEvicted: the lock service no longer knows this client (its
	// lease lapsed or it failed a callback); it must drop what it cached
	// under locks and register again.
	CodeEvicted Code = "evicted"
)

// ostStatusCodes is the table of codes carried as one byte in OST frames.
var ostStatusCodes = []Code{
	CodeOK, CodeNotFound, CodeExists, CodeNotDir, CodeIsDir, CodeNotEmpty,
	CodeInvalid, CodeNameTooLong, CodeNoSpace, CodeAccess, CodePerm, CodeIO,
	CodeCorrupt, CodeUnavailable, CodeNoAttr, CodeRange, CodeTooBig,
	CodeCanceled, CodeTimeout, CodeNotSupported, CodeBusy, CodeCrossDevice,
	CodeInternal, CodeEvicted,
}

// AllCodes lists every code, for table tests of the errno mapping.
func AllCodes() []Code { return append([]Code(nil), ostStatusCodes[1:]...) }

func codeIndex(c Code) uint8 {
	for i, k := range ostStatusCodes {
		if k == c {
			return uint8(i)
		}
	}
	return codeIndex(CodeInternal)
}

func codeAt(i uint8) Code {
	if int(i) < len(ostStatusCodes) {
		return ostStatusCodes[i]
	}
	return CodeInternal
}

// Error is the typed error that crosses the wire.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Msg
}

// Is matches any *Error with the same code, so callers can write
// errors.Is(err, api.ErrNotFound).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Msg == "" || t.Msg == e.Msg)
}

// Sentinels for errors.Is.
var (
	ErrNotFound    = &Error{Code: CodeNotFound}
	ErrExists      = &Error{Code: CodeExists}
	ErrInvalid     = &Error{Code: CodeInvalid}
	ErrNoSpace     = &Error{Code: CodeNoSpace}
	ErrCorrupt     = &Error{Code: CodeCorrupt}
	ErrUnavailable = &Error{Code: CodeUnavailable}
	ErrNoAttr      = &Error{Code: CodeNoAttr}
)

// Errorf builds a typed error.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf classifies any error: a wrapped *Error keeps its code, context
// errors become canceled/timeout, local file system errors are classified by
// errno, and anything else is internal.
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	switch {
	case errors.Is(err, context.Canceled):
		return CodeCanceled
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return CodeTimeout
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOSPC, syscall.EDQUOT:
			return CodeNoSpace
		case syscall.ENOENT:
			return CodeNotFound
		case syscall.EEXIST:
			return CodeExists
		case syscall.EIO:
			return CodeIO
		case syscall.EFBIG:
			return CodeTooBig
		case syscall.EINVAL:
			return CodeInvalid
		case syscall.EACCES:
			return CodeAccess
		case syscall.EPERM:
			return CodePerm
		}
	}
	return CodeInternal
}

// AsError turns any error into a wire error, keeping its text.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeOf(err), Msg: err.Error()}
}
