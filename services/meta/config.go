package meta

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stria/stria/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults of Config.
const (
	DefaultFSName     = "stria"
	DefaultLeaseTTL   = 10 * time.Second
	DefaultOSTTimeout = 5 * time.Second
)

// Config is the metadata service's configuration. The JSON tags are the flag
// names. Zero values mean the defaults.
type Config struct {
	// DataDir holds the metadata store (DataDir/meta).
	DataDir string `json:"data-dir"`
	// FSName is the file system served; it prefixes subjects and etcd keys.
	FSName string `json:"fsname"`
	// LeaseTTL is the etcd session TTL of the leader lease: a dead leader's
	// standby takes over within about this long.
	LeaseTTL time.Duration `json:"lease-ttl"`
	// OSTTimeout bounds one call to an OST (statfs, destroy).
	OSTTimeout time.Duration `json:"ost-timeout"`
}

// DefaultConfig returns a configuration with every default filled in except
// DataDir.
func DefaultConfig() Config {
	return Config{FSName: DefaultFSName, LeaseTTL: DefaultLeaseTTL, OSTTimeout: DefaultOSTTimeout}
}

// AddFlags registers the configuration's flags on fs; the current values of c
// are the flag defaults.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory of the metadata store")
	fs.StringVar(&c.FSName, "fsname", c.FSName, "file system name")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", c.LeaseTTL, "leader lease TTL in etcd")
	fs.DurationVar(&c.OSTTimeout, "ost-timeout", c.OSTTimeout, "bound on one OST call (statfs, destroy)")
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.FSName == "" {
		c.FSName = DefaultFSName
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.OSTTimeout == 0 {
		c.OSTTimeout = DefaultOSTTimeout
	}
	return c
}

// Validate checks the configuration; zero fields count as their defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.DataDir == "" {
		return fmt.Errorf("meta: data-dir must be set")
	}
	if err := api.ValidFSName(c.FSName); err != nil {
		return fmt.Errorf("meta: %w", err)
	}
	if c.LeaseTTL < time.Second {
		return fmt.Errorf("meta: lease-ttl %v: must be at least 1s", c.LeaseTTL)
	}
	if c.OSTTimeout < 0 {
		return fmt.Errorf("meta: ost-timeout %v: must be positive", c.OSTTimeout)
	}
	return nil
}

// Deps are the connections the service uses; it does not close them.
type Deps struct {
	NATS   *nats.Conn
	Etcd   *clientv3.Client
	Logger *slog.Logger
	// Barriers, if set, is a lock service in this process (stria up);
	// otherwise meta reaches lockd over NATS.
	Barriers ChangeBarriers
	// OSTs, if set, are OSTs in this process (stria up): meta's destroys
	// and size queries reach them by call rather than through sockets.
	OSTs *api.LocalOSTs
}

// ChangeBarriers takes the change barriers meta needs before a namespace
// change (api/lock.go): api.LockSession over NATS, or a lockd in the same
// process.
type ChangeBarriers interface {
	Change(ctx context.Context, forID string, dirs []uint64) (uint64, error)
	Done(token uint64)
}
