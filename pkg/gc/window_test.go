package gc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// hookDriver runs hook once, before the first storage call match accepts.
// match sees every call in order, so it can wait for a sequence.
type hookDriver struct {
	*agedDriver
	mu    sync.Mutex
	fired bool
	match func(op, path string) bool
	hook  func()
}

func (h *hookDriver) before(op, p string) {
	h.mu.Lock()
	fire := !h.fired && h.match(op, p)
	if fire {
		h.fired = true
	}
	h.mu.Unlock()
	if fire {
		h.hook()
	}
}

func (h *hookDriver) PutContent(ctx context.Context, p string, b []byte) error {
	h.before("put", p)
	return h.agedDriver.PutContent(ctx, p, b)
}

func (h *hookDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	h.before("get", p)
	return h.agedDriver.GetContent(ctx, p)
}

func (h *hookDriver) Delete(ctx context.Context, p string) error {
	h.before("delete", p)
	return h.agedDriver.Delete(ctx, p)
}

// TestPushInEveryWindowOfTheSweep mounts an unreferenced old blob into a
// repository and pushes a manifest that uses it, at each point of the
// sweep where a push could slip in. Whatever the interleaving, the push is
// either refused (and the client uploads again) or its blob survives; in
// the windows after the pending set is written it must be refused.
func TestPushInEveryWindowOfTheSweep(t *testing.T) {
	setWritten := func() func(op, p string) bool {
		armed := false
		return func(op, p string) bool {
			if op == "put" && strings.HasPrefix(p, pendingRoot) {
				armed = true
				return false
			}
			// The re-check starts with a lease check.
			return armed && op == "get" && p == leasePath
		}
	}
	windows := []struct {
		name        string
		match       func(op, path string) bool
		wantRefused bool
	}{
		{"before the pending set is written", func(op, p string) bool {
			return op == "put" && strings.HasPrefix(p, pendingRoot)
		}, false},
		{"after the pending set, before the re-check", setWritten(), true},
		{"right before the blob is deleted", func(op, p string) bool {
			return op == "delete" && strings.HasPrefix(p, blobsRoot)
		}, true},
		{"right before the pending set is removed", func(op, p string) bool {
			return op == "delete" && strings.HasPrefix(p, pendingRoot)
		}, true},
	}
	for _, w := range windows {
		t.Run(w.name, func(t *testing.T) {
			ctx := context.Background()
			aged := newAged(48 * time.Hour)
			p := pusher{drv: aged}
			orphan := must[digest.Digest](t)(p.blob(ctx, "src", []byte("old unreferenced layer")))
			cfg := must[digest.Digest](t)(p.blob(ctx, "dst", []byte("config")))
			var pushErr error
			pushed := false
			hd := &hookDriver{agedDriver: aged, match: w.match, hook: func() {
				pushed = true
				if pushErr = p.mount(ctx, "dst", "src", orphan); pushErr != nil {
					return
				}
				_, pushErr = p.manifest(ctx, "dst", "v1", imageManifest(cfg, orphan))
			}}
			r, err := NewRunner(hd, testConfig(), RunnerOptions{Holder: "n", LeaseSettle: time.Millisecond, Logger: discard()})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Run(ctx, RunOptions{}); err != nil {
				t.Fatal(err)
			}
			if !pushed {
				t.Fatal("the hook never ran; the window was not exercised")
			}
			refused := errors.Is(pushErr, errRetry)
			if pushErr != nil && !refused {
				t.Fatalf("push failed for another reason: %v", pushErr)
			}
			if w.wantRefused && !refused {
				t.Errorf("a push in this window must be refused, it succeeded")
			}
			if pushErr == nil {
				if err := pull(ctx, aged, "dst", "v1"); err != nil {
					t.Errorf("acknowledged push lost its blob: %v", err)
				}
			}
			// The client's retry after the sweep uploads the blob again.
			if refused {
				// The config was unreferenced too, and went in the same sweep.
				for _, b := range []string{"old unreferenced layer", "config"} {
					if _, err := p.blob(ctx, "dst", []byte(b)); err != nil {
						t.Fatalf("re-upload after the sweep: %v", err)
					}
				}
				if _, err := p.manifest(ctx, "dst", "v1", imageManifest(cfg, orphan)); err != nil {
					t.Fatalf("manifest push after re-upload: %v", err)
				}
				if err := pull(ctx, aged, "dst", "v1"); err != nil {
					t.Errorf("pull after retry: %v", err)
				}
			}
		})
	}
}
