package lockd

import (
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stria/stria/api"
)

// Defaults of Config.
const (
	DefaultFSName          = "stria"
	DefaultLease           = 10 * time.Second
	DefaultCallbackTimeout = 5 * time.Second
)

// Config is the lock service's configuration. The JSON tags are the flag
// names. Zero values mean the defaults.
type Config struct {
	// FSName is the file system served; it prefixes subjects.
	FSName string `json:"fsname"`
	// Lease is how long a client may trust its locks after a ping; a
	// client not heard from for a lease loses them, and a restarted lockd
	// lets no change through for a lease.
	Lease time.Duration `json:"lease"`
	// CallbackTimeout bounds a client's answer to a recall; a client that
	// does not answer is evicted (its locks go when its lease runs out).
	CallbackTimeout time.Duration `json:"callback-timeout"`
	// FreshNATS says the NATS server started together with this lockd (as
	// in stria up): every client's connection to the previous one broke,
	// and a client trusts no lock across a reconnect, so no change need
	// wait out the previous instance's leases.
	FreshNATS bool `json:"-"`
}

// DefaultConfig returns a configuration with every default filled in.
func DefaultConfig() Config {
	return Config{FSName: DefaultFSName, Lease: DefaultLease, CallbackTimeout: DefaultCallbackTimeout}
}

// AddFlags registers the configuration's flags on fs; the current values of c
// are the flag defaults.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.FSName, "fsname", c.FSName, "file system name")
	fs.DurationVar(&c.Lease, "lease", c.Lease, "client lease: how long a client trusts its locks without renewing")
	fs.DurationVar(&c.CallbackTimeout, "callback-timeout", c.CallbackTimeout, "how long a client has to answer a lock recall before it is evicted")
}

func (c Config) withDefaults() Config {
	if c.FSName == "" {
		c.FSName = DefaultFSName
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.CallbackTimeout == 0 {
		c.CallbackTimeout = DefaultCallbackTimeout
	}
	return c
}

// Validate checks the configuration; zero fields count as their defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	if err := api.ValidFSName(c.FSName); err != nil {
		return fmt.Errorf("lockd: %w", err)
	}
	if c.Lease < 100*time.Millisecond || c.Lease > 10*time.Minute {
		return fmt.Errorf("lockd: lease %v: must be 100ms to 10m", c.Lease)
	}
	if c.CallbackTimeout < 10*time.Millisecond || c.CallbackTimeout > c.Lease {
		return fmt.Errorf("lockd: callback-timeout %v: must be 10ms up to the lease", c.CallbackTimeout)
	}
	return nil
}

// Deps are the connections the service uses; it does not close them.
type Deps struct {
	NATS   *nats.Conn
	Logger *slog.Logger
}
