//go:build tools

// This file only pins google.golang.org/genproto past its 2023 split: pebble's
// dependencies still require the old monolithic module, and in workspace mode
// that makes the googleapis/{api,rpc} packages ambiguous. It is never built.
package meta

import _ "google.golang.org/genproto/googleapis/type/date"
