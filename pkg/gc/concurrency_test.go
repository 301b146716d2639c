package gc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// shiftedClock makes the runner believe it is later than it is, so that
// with the minimum one-minute grace the sweep may delete what was written
// a few milliseconds ago: pushes and sweeps then really interleave.
func shiftedClock(by time.Duration) func() time.Time {
	return func() time.Time { return time.Now().Add(by) }
}

// writer is one client pushing to its own repositories, with blobs shared
// with the other writers (by identical content and by mounts).
type writer struct {
	id    int
	rng   *rand.Rand
	p     pusher
	pool  [][]byte
	known *knownBlobs
	// tags is what this writer was told succeeded: repo -> tag -> digest.
	tags    map[string]map[string]digest.Digest
	retries int
	n       int
}

type knownBlobs struct {
	mu sync.Mutex
	at []RepoDigest
}

func (k *knownBlobs) add(repo string, d digest.Digest) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.at = append(k.at, RepoDigest{Repo: repo, Digest: d})
}

func (k *knownBlobs) pick(r *rand.Rand) (RepoDigest, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.at) == 0 {
		return RepoDigest{}, false
	}
	return k.at[r.IntN(len(k.at))], true
}

// retry repeats op until it succeeds or fails for another reason than GC.
func (w *writer) retry(op func() error) error {
	for range 500 {
		err := op()
		if !errors.Is(err, errRetry) {
			return err
		}
		w.retries++
		time.Sleep(time.Millisecond)
	}
	return errors.New("gave up after 500 attempts")
}

func (w *writer) image(ctx context.Context, repo string) (digest.Digest, error) {
	var layers []digest.Digest
	for range 1 + w.rng.IntN(3) {
		if kb, ok := w.known.pick(w.rng); ok && w.rng.IntN(3) == 0 && kb.Repo != repo {
			// Cross-repository mount; if the source is gone, upload instead.
			if err := w.p.mount(ctx, repo, kb.Repo, kb.Digest); err == nil {
				layers = append(layers, kb.Digest)
				continue
			} else if !errors.Is(err, errRetry) {
				return "", err
			}
		}
		d, err := w.p.blob(ctx, repo, w.pool[w.rng.IntN(len(w.pool))])
		if err != nil {
			return "", err
		}
		w.known.add(repo, d)
		layers = append(layers, d)
	}
	w.n++
	cfg, err := w.p.blob(ctx, repo, []byte(fmt.Sprintf("config of writer %d image %d", w.id, w.n)))
	if err != nil {
		return "", err
	}
	// A client is slow between its blobs and its manifest now and then.
	time.Sleep(time.Duration(w.rng.IntN(3)) * time.Millisecond)
	return w.p.manifest(ctx, repo, "", imageManifest(cfg, layers...))
}

func (w *writer) step(ctx context.Context) error {
	repo := fmt.Sprintf("w%d/%s", w.id, []string{"app", "lib"}[w.rng.IntN(2)])
	tag := "t" + strconv.Itoa(w.rng.IntN(4))
	if w.tags[repo] == nil {
		w.tags[repo] = map[string]digest.Digest{}
	}
	switch op := w.rng.IntN(10); {
	case op < 5: // push a tagged image, moving the tag if it exists
		return w.retry(func() error {
			d, err := w.image(ctx, repo)
			if err != nil {
				return err
			}
			m, err := w.p.drv.GetContent(ctx, blobDataPath(d))
			if err != nil {
				return fmt.Errorf("%w: %w", errRetry, err)
			}
			if _, err := w.p.manifest(ctx, repo, tag, m); err != nil {
				return err
			}
			w.tags[repo][tag] = d
			return nil
		})
	case op < 7: // push a two-platform index
		return w.retry(func() error {
			a, err := w.image(ctx, repo)
			if err != nil {
				return err
			}
			b, err := w.image(ctx, repo)
			if err != nil {
				return err
			}
			d, err := w.p.manifest(ctx, repo, tag, indexManifest(a, b))
			if err != nil {
				return err
			}
			w.tags[repo][tag] = d
			return nil
		})
	default: // delete a manifest by digest, with its tags
		d, ok := w.tags[repo][tag]
		if !ok {
			return nil
		}
		if err := (StorageDeleter{Driver: w.p.drv}).DeleteManifest(ctx, repo, d); err != nil {
			return err
		}
		for t, td := range w.tags[repo] {
			if td == d {
				delete(w.tags[repo], t)
			}
		}
		return nil
	}
}

func TestConcurrentPushesNeverLoseABlob(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("GC_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("GC_TEST_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with GC_TEST_SEED=%d)", seed, seed)
	const writers, steps = 6, 100
	ctx := context.Background()
	drv := inmemory.New()
	pool := make([][]byte, 24)
	for i := range pool {
		pool[i] = []byte(fmt.Sprintf("shared layer %d", i))
	}
	known := &knownBlobs{}

	cfg := testConfig()
	cfg.Grace = Duration(time.Minute)
	cfg.LeaseTTL = Duration(10 * time.Second)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	// Blobs written more than 5ms ago are past the grace period.
	runners := make([]*Runner, 2)
	for i := range runners {
		r, err := NewRunner(drv, cfg, RunnerOptions{Holder: fmt.Sprintf("node-%d", i), Logger: quiet,
			LeaseSettle: 50 * time.Millisecond, Now: shiftedClock(time.Minute - 5*time.Millisecond)})
		if err != nil {
			t.Fatal(err)
		}
		runners[i] = r
	}

	var deleted, runs, lost atomic.Int64
	done := make(chan struct{})
	var gcWG sync.WaitGroup
	for _, r := range runners {
		gcWG.Add(1)
		go func() {
			defer gcWG.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				rep, err := r.Run(ctx, RunOptions{})
				switch {
				case err == nil:
					runs.Add(1)
					deleted.Add(int64(len(rep.Blobs)))
				case errors.Is(err, ErrLeaseHeld):
					time.Sleep(time.Millisecond)
				case errors.Is(err, ErrLeaseLost):
					// Both read the lease before either wrote it and the
					// loser noticed at its next check: the lease working.
					lost.Add(1)
				default:
					t.Errorf("gc run: %v", err)
					return
				}
			}
		}()
	}

	ws := make([]*writer, writers)
	var wWG sync.WaitGroup
	for i := range ws {
		ws[i] = &writer{id: i, rng: rand.New(rand.NewPCG(seed, uint64(i))), p: pusher{drv: drv}, pool: pool,
			known: known, tags: map[string]map[string]digest.Digest{}}
		wWG.Add(1)
		go func() {
			defer wWG.Done()
			for range steps {
				time.Sleep(time.Duration(ws[i].rng.IntN(8000)) * time.Microsecond)
				if err := ws[i].step(ctx); err != nil {
					t.Errorf("writer %d: %v", i, err)
					return
				}
			}
		}()
	}
	wWG.Wait()
	close(done)
	gcWG.Wait()

	check := func(when string) {
		t.Helper()
		for _, w := range ws {
			for repo, tags := range w.tags {
				for tag, d := range tags {
					got, err := readLink(ctx, drv, tagCurrentLinkPath(repo, tag))
					if err != nil || got != d {
						t.Errorf("%s: %s:%s points at %s (%v), the last acknowledged push was %s", when, repo, tag, got, err, d)
						continue
					}
					if err := pull(ctx, drv, repo, tag); err != nil {
						t.Errorf("%s: pull %s:%s: %v", when, repo, tag, err)
					}
				}
			}
		}
	}
	check("after concurrent pushes")
	retries := 0
	for _, w := range ws {
		retries += w.retries
	}
	t.Logf("%d gc runs deleted %d blobs (%d stopped on losing the lease); writers retried %d times", runs.Load(), deleted.Load(), lost.Load(), retries)
	if runs.Load() == 0 || deleted.Load() == 0 {
		t.Errorf("gc never ran or never deleted anything: the test exercised nothing")
	}

	// Quiesced, everything is past grace: GC removes exactly the garbage.
	final, err := runners[0].Run(ctx, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check("after a final gc")
	inv, err := readInventory(ctx, drv)
	if err != nil {
		t.Fatal(err)
	}
	marked, err := Mark(ctx, inv, newManifestReader(drv).refs)
	if err != nil {
		t.Fatal(err)
	}
	var unmarked []digest.Digest
	for d := range blobsIn(t, drv) {
		if !marked.Marked[d] {
			unmarked = append(unmarked, d)
		}
	}
	slices.Sort(unmarked)
	if len(unmarked) > 0 {
		t.Errorf("after the final gc (%d deleted) %d unreferenced blobs remain: %v", len(final.Blobs), len(unmarked), unmarked)
	}
	if m := pendingSetsIn(t, drv); len(m) > 0 {
		t.Errorf("pending sets left behind: %v", m)
	}
	var _ storage.Driver = drv
}
