package api

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
)

// Headers NATS micro sets on an error reply.
const (
	hdrErrorCode = "Nats-Service-Error-Code"
	hdrError     = "Nats-Service-Error"
)

// MetaClient calls the metadata service over NATS request/reply.
type MetaClient struct {
	nc     *nats.Conn
	fsname string
	// Timeout bounds a call whose context has no deadline.
	Timeout time.Duration
}

// NewMetaClient returns a client for file system fsname.
func NewMetaClient(nc *nats.Conn, fsname string, timeout time.Duration) *MetaClient {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return &MetaClient{nc: nc, fsname: fsname, Timeout: timeout}
}

// Call sends req to operation op and decodes the reply into resp.
func (c *MetaClient) Call(ctx context.Context, op string, req, resp any) error {
	data, err := json.Marshal(req)
	if err != nil {
		return Errorf(CodeInvalid, "encoding %s request: %v", op, err)
	}
	subject := MetaSubject(c.fsname, op)
	var msg *nats.Msg
	if ctx.Done() == nil {
		// Nothing can cancel this call (the gateway detaches its calls
		// from interrupted FUSE requests): a plain request, whose timer
		// NATS pools, costs less than a context with a deadline.
		msg, err = c.nc.Request(subject, data, c.Timeout)
	} else {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, c.Timeout)
			defer cancel()
		}
		msg, err = c.nc.RequestWithContext(ctx, subject, data)
	}
	if err != nil {
		switch {
		case errors.Is(err, context.Canceled):
			return err
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
			return Errorf(CodeUnavailable, "metadata service did not answer %s in time", op)
		case errors.Is(err, nats.ErrNoResponders):
			return Errorf(CodeUnavailable, "no metadata service is serving %s", op)
		}
		return Errorf(CodeUnavailable, "metadata %s: %v", op, err)
	}
	if code := msg.Header.Get(hdrErrorCode); code != "" {
		return &Error{Code: Code(code), Msg: msg.Header.Get(hdrError)}
	}
	if resp == nil {
		return nil
	}
	if err := json.Unmarshal(msg.Data, resp); err != nil {
		return Errorf(CodeIO, "decoding %s reply: %v", op, err)
	}
	return nil
}
