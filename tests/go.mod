module github.com/stria/stria/tests

go 1.26.0

require (
	github.com/hanwen/go-fuse/v2 v2.12.1
	github.com/nats-io/nats.go v1.55.0
	github.com/stria/stria/api v0.0.0
	github.com/stria/stria/cmd/stria v0.0.0
	golang.org/x/sys v0.49.0
)

replace (
	github.com/stria/stria/api => ../api
	github.com/stria/stria/cmd/stria => ../cmd/stria
	github.com/stria/stria/gateway => ../gateway
	github.com/stria/stria/services/meta => ../services/meta
	github.com/stria/stria/services/ost => ../services/ost
)
