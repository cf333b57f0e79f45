package gateway

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/stria/stria/api"
)

func TestEveryCodeHasAnErrno(t *testing.T) {
	for _, c := range api.AllCodes() {
		if _, ok := errnoByCode[c]; !ok {
			t.Errorf("code %q has no errno", c)
		}
	}
}

func TestToErrno(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"not found", api.Errorf(api.CodeNotFound, "x"), syscall.ENOENT},
		{"wrapped exists", fmt.Errorf("create: %w", api.Errorf(api.CodeExists, "x")), syscall.EEXIST},
		{"no space", api.ErrNoSpace, syscall.ENOSPC},
		{"corrupt block", api.Errorf(api.CodeCorrupt, "crc"), syscall.EIO},
		{"OST unavailable", api.Errorf(api.CodeUnavailable, "down"), syscall.EIO},
		{"name too long", api.Errorf(api.CodeNameTooLong, ""), syscall.ENAMETOOLONG},
		{"not empty", api.Errorf(api.CodeNotEmpty, ""), syscall.ENOTEMPTY},
		{"no xattr", api.ErrNoAttr, syscall.ENODATA},
		{"cancelled", context.Canceled, syscall.EINTR},
		{"cancelled code", api.Errorf(api.CodeCanceled, ""), syscall.EINTR},
		{"deadline", context.DeadlineExceeded, syscall.EIO},
		{"raw errno", syscall.EROFS, syscall.EROFS},
		{"unknown", errors.New("boom"), syscall.EIO},
		{"unknown code", &api.Error{Code: "martian"}, syscall.EIO},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := toErrno(tc.err); got != tc.want {
				t.Fatalf("toErrno(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
