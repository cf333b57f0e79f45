package api

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Headers NATS micro sets on an error reply.
const (
	hdrErrorCode = "Nats-Service-Error-Code"
	hdrError     = "Nats-Service-Error"
)

// MetaClient calls the metadata service over NATS request/reply, or
// directly when one runs in this process (Local).
type MetaClient struct {
	nc     *nats.Conn
	fsname string
	// Timeout bounds a call through NATS whose context has no deadline.
	Timeout time.Duration
	// client is the lock client id sent with every request (HeaderClient).
	client atomic.Pointer[string]
	// Local, when set before the first call, is the file system's
	// metadata service in this process: every call goes to it, not
	// through NATS.
	Local MetaHandler
}

// MetaHandler is a metadata service in the caller's process.
type MetaHandler interface {
	// ServeMeta answers one request for op on behalf of lock client id
	// client (empty for none), as the service's NATS endpoint would. req
	// is the request as Call takes it (a value or a pointer); the reply is
	// a value of the op's reply type, or the error an *Error.
	ServeMeta(client, op string, req any) (any, error)
}

// NewMetaClient returns a client for file system fsname.
func NewMetaClient(nc *nats.Conn, fsname string, timeout time.Duration) *MetaClient {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return &MetaClient{nc: nc, fsname: fsname, Timeout: timeout}
}

// SetLockClient names the lock client whose caches this client's changes
// keep current (it changes when lockd evicts the old one).
func (c *MetaClient) SetLockClient(id string) { c.client.Store(&id) }

// Call sends req to operation op and decodes the reply into resp.
func (c *MetaClient) Call(ctx context.Context, op string, req, resp any) error {
	var id string
	if p := c.client.Load(); p != nil {
		id = *p
	}
	if c.Local != nil {
		return localCall(c.Local, id, op, req, resp)
	}
	var hdr nats.Header
	if id != "" {
		hdr = nats.Header{HeaderClient: []string{id}}
	}
	return natsCall(ctx, c.nc, MetaSubject(c.fsname, op), "metadata", op, c.Timeout, hdr, req, resp)
}

// localCall is natsCall to a service in this process: the same errors,
// without NATS, and without JSON when resp points to the reply's type.
func localCall(h MetaHandler, client, op string, req, resp any) error {
	out, err := h.ServeMeta(client, op, req)
	if err != nil || resp == nil {
		return err
	}
	dst := reflect.ValueOf(resp)
	if v := reflect.ValueOf(out); dst.Kind() == reflect.Pointer && !dst.IsNil() && v.IsValid() && dst.Elem().Type() == v.Type() {
		dst.Elem().Set(v)
		return nil
	}
	// Another type (a caller decoding part of a reply, or a reply that is
	// JSON already): through JSON, as from NATS.
	data, ok := out.(json.RawMessage)
	if !ok {
		if data, err = json.Marshal(out); err != nil {
			return Errorf(CodeIO, "encoding %s reply: %v", op, err)
		}
	}
	return decodeReply(op, data, resp)
}

// decodeReply decodes a JSON reply into resp, if not nil.
func decodeReply(op string, data []byte, resp any) error {
	if resp == nil {
		return nil
	}
	if err := json.Unmarshal(data, resp); err != nil {
		return Errorf(CodeIO, "decoding %s reply: %v", op, err)
	}
	return nil
}

// natsCall sends a JSON request to subject and decodes the JSON reply into
// resp (if not nil); service names the callee in errors.
func natsCall(ctx context.Context, nc *nats.Conn, subject, service, op string, timeout time.Duration, hdr nats.Header, req, resp any) error {
	data, err := json.Marshal(req)
	if err != nil {
		return Errorf(CodeInvalid, "encoding %s request: %v", op, err)
	}
	m := &nats.Msg{Subject: subject, Data: data, Header: hdr}
	var msg *nats.Msg
	if ctx.Done() == nil {
		// Nothing can cancel this call (the gateway detaches its calls
		// from interrupted FUSE requests): a plain request, whose timer
		// NATS pools, costs less than a context with a deadline.
		msg, err = nc.RequestMsg(m, timeout)
	} else {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		msg, err = nc.RequestMsgWithContext(ctx, m)
	}
	if err != nil {
		switch {
		case errors.Is(err, context.Canceled):
			return err
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
			return Errorf(CodeUnavailable, "%s service did not answer %s in time", service, op)
		case errors.Is(err, nats.ErrNoResponders):
			return Errorf(CodeUnavailable, "no %s service is serving %s", service, op)
		}
		return Errorf(CodeUnavailable, "%s %s: %v", service, op, err)
	}
	if code := msg.Header.Get(hdrErrorCode); code != "" {
		return &Error{Code: Code(code), Msg: msg.Header.Get(hdrError)}
	}
	return decodeReply(op, msg.Data, resp)
}
