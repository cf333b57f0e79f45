// Package cluster starts the embedded coordination services of a Stria
// file system: a NATS server with JetStream and a single-member etcd. It
// serves `stria up` (the embedded default) and tests that start real
// servers in-process.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// StartTimeout bounds how long each embedded server may take to be ready.
const StartTimeout = 60 * time.Second

// NATS is an embedded NATS server with JetStream.
type NATS struct {
	Server *natsserver.Server
	URL    string
}

// StartNATS starts NATS on 127.0.0.1 (port 0: any free port) with JetStream
// stored under dir, and waits until it accepts connections.
func StartNATS(dir string, port int) (*NATS, error) {
	if port == 0 {
		port = -1 // nats-server's "any free port"
	}
	opts := &natsserver.Options{
		ServerName: "stria",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(dir, "jetstream"),
		NoSigs:     true,
		NoLog:      true,
	}
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(StartTimeout) {
		ns.Shutdown()
		return nil, errors.New("nats: not ready in time")
	}
	return &NATS{Server: ns, URL: ns.ClientURL()}, nil
}

// Stop shuts the server down and waits for it.
func (n *NATS) Stop() {
	n.Server.Shutdown()
	n.Server.WaitForShutdown()
}

// Etcd is an embedded single-member etcd.
type Etcd struct {
	Server *embed.Etcd
	URL    string
}

// StartEtcd starts etcd with its data under dir, its client URL on a free
// loopback port, and waits until it is ready. Logs go to dir/etcd.log.
func StartEtcd(dir string) (*Etcd, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "stria"
	cfg.Dir = filepath.Join(dir, "data")
	client := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd: %w", err)
	case <-time.After(StartTimeout):
		e.Close()
		return nil, errors.New("etcd: not ready in time")
	}
	return &Etcd{Server: e, URL: "http://" + e.Clients[0].Addr().String()}, nil
}

// Stop closes etcd.
func (e *Etcd) Stop() { e.Server.Close() }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ConnectNATS connects to NATS, retrying for ever after a lost connection:
// a service rides out a NATS restart instead of dying.
func ConnectNATS(url, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("NATS reconnected") }),
	}, extra...)
	return nats.Connect(url, opts...)
}

// InProcess connects to this embedded server through an in-memory pipe
// instead of loopback TCP: every metadata RPC crosses NATS twice, and the
// TCP stack's wake-ups were most of its latency.
func (n *NATS) InProcess() nats.Option { return nats.InProcessServer(n.Server) }

// ConnectEtcd connects to etcd and checks it answers.
func ConnectEtcd(ctx context.Context, endpoints []string) (*clientv3.Client, error) {
	// The client's own retry chatter (zap, JSON) is not for users; our
	// services log what matters through slog.
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := cli.Get(cctx, "/stria/"); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd at %v: %w", endpoints, err)
	}
	return cli, nil
}
