package ost

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/stria/stria/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults of Config.
const (
	DefaultListen   = "127.0.0.1:0"
	DefaultFSName   = "stria"
	DefaultLeaseTTL = 10 * time.Second
)

// Config is an OST's configuration. JSON tags equal the flag names.
//
// The zero value of Index means index 0; use NewConfig (Index -1) to have the
// index allocated automatically.
type Config struct {
	// DataDir holds ost.json and the objects. Required.
	DataDir string `json:"data-dir"`
	// Listen is the data path address; default 127.0.0.1:0 (any free port).
	Listen string `json:"listen"`
	// Advertise is the address registered in etcd for clients to dial;
	// empty means the listener's own address.
	Advertise string `json:"advertise"`
	// FSName is the file system this OST belongs to; default "stria".
	FSName string `json:"fsname"`
	// Index is the OST index; -1 allocates the lowest free one on first
	// start. Once the data directory has an index, it is kept.
	Index int `json:"index"`
	// LeaseTTL is the TTL of the etcd registration lease; default 10s.
	LeaseTTL time.Duration `json:"lease-ttl"`
	// Socket is a Unix socket serving the data path to clients on this
	// machine, besides Listen: empty means ost.sock in DataDir, "none" no
	// socket. If it cannot be opened (a path too long for a Unix socket,
	// say) the OST logs why and serves TCP alone.
	Socket string `json:"socket"`
}

// NewConfig returns a Config with every default set and Index -1.
func NewConfig() Config {
	return Config{Listen: DefaultListen, FSName: DefaultFSName, Index: -1, LeaseTTL: DefaultLeaseTTL}
}

// AddFlags registers the config's flags on fs, with c's values as defaults.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "OST data directory (objects and ost.json)")
	fs.StringVar(&c.Listen, "listen", c.Listen, "data path listen address")
	fs.StringVar(&c.Advertise, "advertise", c.Advertise, "address registered in etcd (default: the listen address)")
	fs.StringVar(&c.FSName, "fsname", c.FSName, "file system name")
	fs.IntVar(&c.Index, "index", c.Index, "OST index, -1 to allocate the lowest free one")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", c.LeaseTTL, "TTL of the etcd registration lease")
	fs.StringVar(&c.Socket, "socket", c.Socket, "Unix socket for clients on this machine (default: ost.sock in the data directory; none: no socket)")
}

// Validate fills empty fields with their defaults and checks the rest.
func (c *Config) Validate() error {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.FSName == "" {
		c.FSName = DefaultFSName
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.Socket == "" && c.DataDir != "" {
		c.Socket = filepath.Join(c.DataDir, "ost.sock")
	}
	if c.Socket != "none" && c.Socket != "" {
		abs, err := filepath.Abs(c.Socket)
		if err != nil {
			return fmt.Errorf("ost config: socket %q: %w", c.Socket, err)
		}
		c.Socket = abs
	}
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data-dir must be set"))
	}
	if err := api.ValidFSName(c.FSName); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	}
	if c.Index < -1 || int64(c.Index) > 1<<31 {
		errs = append(errs, fmt.Errorf("index %d: must be -1 (automatic) or 0..%d", c.Index, 1<<31))
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("lease-ttl %v: must be at least 1s", c.LeaseTTL))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ost config: %w", err)
	}
	return nil
}

// Deps are the OST's connections to the rest of the system.
type Deps struct {
	// Etcd is required: the OST claims its index and registers there.
	Etcd *clientv3.Client
	// Logger defaults to discarding.
	Logger *slog.Logger
}
