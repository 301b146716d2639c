// Package hdfs is the storage driver for HDFS, the origin's production
// storage. It speaks HDFS's native RPC through github.com/colinmarc/hdfs/v2
// and implements the reference registry's driver contract, so an origin on
// HDFS keeps registry:2's on-storage layout.
//
// The client library has sharp edges that the driver handles so that callers
// need not: a file's Close can report that replication is still in progress
// (retried with backoff), a client sends one namenode call at a time (the
// driver keeps a pool), renames need the destination's parent and must
// replace an existing destination, seeking past the end must be the
// contract's InvalidOffsetError, and outages must be told apart from missing
// paths (storage.ErrUnavailable). docs/hdfs.md describes these choices,
// including what the driver does not solve: a writer that died keeps its
// HDFS lease on the file for a minute.
package hdfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"time"

	"github.com/colinmarc/hdfs/v2"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// DriverName is the name in errors and the scheme of storage URLs.
const DriverName = "hdfs"

// tmpDirName is the directory, directly under the root, where PutContent
// writes files before renaming them into place. The "~" cannot occur in a
// storage path (storage.PathRegexp), so it never collides with stored data;
// List and Walk hide it.
const tmpDirName = ".shoal~tmp"

// staleTmpAge is how old a leftover temporary file must be before Open
// deletes it. PutContent writes small files in well under a second; a day
// leaves no doubt that the process that wrote it is gone.
const staleTmpAge = 24 * time.Hour

// Driver stores files in HDFS under a root directory. It is safe for
// concurrent use.
type Driver struct {
	cfg  Config
	root string
	tmp  string
	pool *pool
}

var _ storage.Driver = (*Driver)(nil)

// Open returns a driver for a storage URL such as
// hdfs://nn1:8020,nn2:8020/shoal?user=shoal (see ParseURL).
func Open(ctx context.Context, u *url.URL) (storage.Driver, error) {
	cfg, err := ParseURL(u)
	if err != nil {
		return nil, err
	}
	return New(ctx, cfg)
}

// New connects to HDFS and creates the root directory if it is missing. It
// fails, with an error matching storage.ErrUnavailable, if no namenode
// answers.
func New(ctx context.Context, cfg Config) (*Driver, error) { return newWithDial(ctx, cfg, nil) }

// newWithDial is New with a wrapper around the namenode dial function, which
// tests use to cut the driver off from a real namenode at a moment of their
// choosing.
func newWithDial(ctx context.Context, cfg Config, wrapNamenodeDial func(dialFunc) dialFunc) (*Driver, error) {
	def := DefaultConfig()
	if len(cfg.NameNodes) == 0 {
		return nil, errors.New("hdfs: no namenode address")
	}
	if cfg.Root == "" {
		cfg.Root = def.Root
	}
	if cfg.Clients <= 0 {
		cfg.Clients = def.Clients
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = def.DialTimeout
	}
	if cfg.IOTimeout <= 0 {
		cfg.IOTimeout = def.IOTimeout
	}
	dial := dialer(cfg.DialTimeout, cfg.IOTimeout)
	opts := hdfs.ClientOptions{
		Addresses:              cfg.NameNodes,
		User:                   cfg.User,
		UseDatanodeHostname:    cfg.UseDatanodeHostname,
		NamenodeDialFunc:       dial,
		DatanodeDialFunc:       dial,
		DataTransferProtection: cfg.DataTransferProtection,
	}
	if wrapNamenodeDial != nil {
		opts.NamenodeDialFunc = wrapNamenodeDial(opts.NamenodeDialFunc)
	}
	if cfg.Kerberos != nil {
		kc, err := cfg.Kerberos.client()
		if err != nil {
			return nil, err
		}
		opts.KerberosClient = kc
		opts.KerberosServicePrincipleName = cfg.Kerberos.ServicePrincipal
	} else if opts.User == "" {
		u, err := defaultUser()
		if err != nil {
			return nil, err
		}
		opts.User = u
		cfg.User = u
	}

	root := path.Clean("/" + cfg.Root)
	d := &Driver{
		cfg:  cfg,
		root: root,
		tmp:  path.Join(root, tmpDirName),
		pool: newPool(opts, cfg.Clients),
	}
	err := d.do("open", "/", func(c *client) error {
		return c.MkdirAll(d.tmp, 0o755)
	})
	if err != nil {
		_ = d.pool.close()
		return nil, fmt.Errorf("hdfs: open %s on %v as %s: %w", root, cfg.NameNodes, opts.User, err)
	}
	d.removeStaleTmp(ctx)
	return d, nil
}

// Close closes the driver's HDFS clients. Readers and writers still open
// fail afterwards. The storage interface has no Close: long-lived origins
// never call it, tests do.
func (d *Driver) Close() error { return d.pool.close() }

// Name returns "hdfs".
func (d *Driver) Name() string { return DriverName }

// RedirectURL returns "": HDFS has no URLs a registry client could fetch
// from, so the origin serves every blob itself.
func (d *Driver) RedirectURL(*http.Request, string) (string, error) { return "", nil }

// full maps a storage path to its HDFS path.
func (d *Driver) full(p string) string { return path.Join(d.root, p) }

// do runs fn with a pooled client and maps its error for operation op on
// storage path p.
func (d *Driver) do(op, p string, fn func(c *client) error) error {
	c, err := d.pool.get()
	if err != nil {
		return d.mapErr(op, p, err)
	}
	err = fn(c)
	d.pool.put(c, err)
	return d.mapErr(op, p, err)
}

// validPath reports whether p is a storage path; root says whether "/"
// itself is acceptable for the operation (listing and walking it is).
func validPath(p string, root bool) bool {
	return storage.PathRegexp.MatchString(p) || (root && p == "/")
}

func invalidPath(p string) error {
	return storage.InvalidPathError{Path: p, DriverName: DriverName}
}

// removeStaleTmp deletes temporary files that a crashed process left behind.
// It is best effort: a failure costs a little space, not correctness.
func (d *Driver) removeStaleTmp(ctx context.Context) {
	err := d.do("clean temporary files", "/", func(c *client) error {
		entries, err := c.ReadDir(d.tmp)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Since(e.ModTime()) > staleTmpAge {
				if err := c.Remove(path.Join(d.tmp, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		slog.Warn("hdfs: could not remove stale temporary files", "dir", d.tmp, "err", err)
	}
}

// tmpName returns a fresh path in the temporary directory.
func (d *Driver) tmpName() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand documents it)
	return path.Join(d.tmp, hex.EncodeToString(b[:]))
}
