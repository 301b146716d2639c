package gc

import (
	"context"
	"sync/atomic"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// StorageCalls counts what a run asked of storage, for the report and the
// benchmark.
type StorageCalls struct {
	List    int64 `json:"list"`
	Stat    int64 `json:"stat"`
	Read    int64 `json:"read"`
	Write   int64 `json:"write"`
	Delete  int64 `json:"delete"`
	Walk    int64 `json:"walk"`
	Visited int64 `json:"visited"`
}

// countingDriver counts the calls a run makes; everything else passes
// through the embedded driver.
type countingDriver struct {
	storage.Driver
	list, stat, read, write, del, walk, visited atomic.Int64
}

func (c *countingDriver) calls() StorageCalls {
	return StorageCalls{List: c.list.Load(), Stat: c.stat.Load(), Read: c.read.Load(), Write: c.write.Load(),
		Delete: c.del.Load(), Walk: c.walk.Load(), Visited: c.visited.Load()}
}

func (c *countingDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	c.read.Add(1)
	return c.Driver.GetContent(ctx, p)
}

func (c *countingDriver) PutContent(ctx context.Context, p string, b []byte) error {
	c.write.Add(1)
	return c.Driver.PutContent(ctx, p, b)
}

func (c *countingDriver) Stat(ctx context.Context, p string) (storage.FileInfo, error) {
	c.stat.Add(1)
	return c.Driver.Stat(ctx, p)
}

func (c *countingDriver) List(ctx context.Context, p string) ([]string, error) {
	c.list.Add(1)
	return c.Driver.List(ctx, p)
}

func (c *countingDriver) Delete(ctx context.Context, p string) error {
	c.del.Add(1)
	return c.Driver.Delete(ctx, p)
}

func (c *countingDriver) Walk(ctx context.Context, p string, f storage.WalkFn, opts ...func(*storage.WalkOptions)) error {
	c.walk.Add(1)
	return c.Driver.Walk(ctx, p, func(fi storage.FileInfo) error {
		c.visited.Add(1)
		return f(fi)
	}, opts...)
}
