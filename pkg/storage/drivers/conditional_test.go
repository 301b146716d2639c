package drivers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/shoal-dev/shoal/pkg/storage"
)

// Every driver Open builds here offers conditional writes, with the same
// answers: GC's lease (pkg/gc) is safe only where they hold.
func TestConditionalWrites(t *testing.T) {
	eachDriver(t, func(t *testing.T, d storage.Driver, _ store) {
		ctx := context.Background()
		c := conditionalWriter(t, d)
		const p = "/cond/file"
		if _, _, err := c.GetContentVersion(ctx, p); !errors.As(err, new(storage.PathNotFoundError)) {
			t.Fatalf("GetContentVersion of a missing file: %v, want PathNotFoundError", err)
		}
		if _, err := c.PutContentIf(ctx, p, []byte("x"), "no-such-version"); !errors.Is(err, storage.ErrConditionFailed) {
			t.Fatalf("replacing a missing file: %v, want ErrConditionFailed", err)
		}
		v1, err := c.PutContentIf(ctx, p, []byte("one"), "")
		if err != nil || v1 == "" {
			t.Fatalf("creating a file: version %q, %v", v1, err)
		}
		got, gotV, err := c.GetContentVersion(ctx, p)
		if err != nil || string(got) != "one" || gotV != v1 {
			t.Fatalf("read back %q version %q (%v), want %q version %q", got, gotV, err, "one", v1)
		}
		if _, err := c.PutContentIf(ctx, p, []byte("again"), ""); !errors.Is(err, storage.ErrConditionFailed) {
			t.Fatalf("creating an existing file: %v, want ErrConditionFailed", err)
		}
		v2, err := c.PutContentIf(ctx, p, []byte("two"), v1)
		if err != nil || v2 == "" || v2 == v1 {
			t.Fatalf("replacing version %q: new version %q, %v", v1, v2, err)
		}
		if _, err := c.PutContentIf(ctx, p, []byte("stale"), v1); !errors.Is(err, storage.ErrConditionFailed) {
			t.Fatalf("replacing with a stale version: %v, want ErrConditionFailed", err)
		}
		// An unconditional write is a change too.
		if err := d.PutContent(ctx, p, []byte("three")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.PutContentIf(ctx, p, []byte("stale"), v2); !errors.Is(err, storage.ErrConditionFailed) {
			t.Fatalf("replacing a file PutContent rewrote: %v, want ErrConditionFailed", err)
		}
		if b, err := d.GetContent(ctx, p); err != nil || string(b) != "three" {
			t.Fatalf("after refused writes the file holds %q (%v), want %q", b, err, "three")
		}
	})
}

// Of writers racing from the same state, exactly one succeeds: creators of
// one file, then replacers of one version.
func TestConditionalWritesRacing(t *testing.T) {
	eachDriver(t, func(t *testing.T, d storage.Driver, _ store) {
		ctx := context.Background()
		c := conditionalWriter(t, d)
		const p = "/cond/raced"
		race := func(ifVersion string) string {
			t.Helper()
			const writers = 8
			var (
				wg       sync.WaitGroup
				mu       sync.Mutex
				won      []string
				versions []string
			)
			for i := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					content := fmt.Sprintf("writer %d after %q", i, ifVersion)
					v, err := c.PutContentIf(ctx, p, []byte(content), ifVersion)
					switch {
					case err == nil:
						mu.Lock()
						won, versions = append(won, content), append(versions, v)
						mu.Unlock()
					case !errors.Is(err, storage.ErrConditionFailed):
						t.Errorf("writer %d: %v", i, err)
					}
				}()
			}
			wg.Wait()
			if len(won) != 1 {
				t.Fatalf("%d of %d writers from version %q succeeded (%q), want exactly 1", len(won), writers, ifVersion, won)
			}
			if b, v, err := c.GetContentVersion(ctx, p); err != nil || string(b) != won[0] || v != versions[0] {
				t.Fatalf("the file holds %q version %q (%v), want the winner's %q version %q", b, v, err, won[0], versions[0])
			}
			return versions[0]
		}
		v := race("")
		race(v)
	})
}

func conditionalWriter(t *testing.T, d storage.Driver) storage.ConditionalWriter {
	t.Helper()
	c, ok := storage.ConditionalWriterOf(d)
	if !ok {
		t.Fatalf("%s offers no storage.ConditionalWriter", d.Name())
	}
	return c
}
