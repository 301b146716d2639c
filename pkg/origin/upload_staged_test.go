package origin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/storage"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

// stagingMemory is the in-memory driver with staged writes as an object
// store makes them: the bytes are held aside and written to the path in
// one step at Commit. It counts what the origin asks of it.
type stagingMemory struct {
	storage.Driver
	mu     sync.Mutex
	n      stagingCounts
	stages []string
	// failWriteAt makes a staged writer fail past this many bytes (0:
	// never).
	failWriteAt int
	// storedMeanwhile makes a commit fail after another push stored the
	// same bytes at the path.
	storedMeanwhile bool
}

type stagingCounts struct{ opened, commits, cancels, moves int }

func (d *stagingMemory) counts() stagingCounts {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

func newStagingMemory() *stagingMemory { return &stagingMemory{Driver: inmemory.New()} }

func (d *stagingMemory) count(f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f()
}

func (d *stagingMemory) StagedWriter(ctx context.Context, p, stage string) (storage.FileWriter, error) {
	w := &memStaged{d: d, path: p}
	d.count(func() {
		d.n.opened++
		d.stages = append(d.stages, stage)
		w.failAt, w.storedMeanwhile = d.failWriteAt, d.storedMeanwhile
	})
	return w, nil
}

func (d *stagingMemory) Move(ctx context.Context, src, dst string) error {
	d.count(func() { d.n.moves++ })
	return d.Driver.Move(ctx, src, dst)
}

type memStaged struct {
	d               *stagingMemory
	path            string
	buf             bytes.Buffer
	failAt          int
	storedMeanwhile bool
	done            bool
}

func (w *memStaged) Write(p []byte) (int, error) {
	if w.failAt > 0 && w.buf.Len()+len(p) > w.failAt {
		return 0, fmt.Errorf("injected store failure: %w", storage.ErrUnavailable)
	}
	return w.buf.Write(p)
}

func (w *memStaged) Size() int64 { return int64(w.buf.Len()) }

func (w *memStaged) Commit(ctx context.Context) error {
	w.done = true
	if w.storedMeanwhile {
		if err := w.d.Driver.PutContent(ctx, w.path, w.buf.Bytes()); err != nil {
			return err
		}
		return errors.New("the store would not commit over the blob another push stored")
	}
	w.d.count(func() { w.d.n.commits++ })
	return w.d.Driver.PutContent(ctx, w.path, w.buf.Bytes())
}

func (w *memStaged) Cancel(context.Context) error {
	if !w.done {
		w.done = true
		w.d.count(func() { w.d.n.cancels++ })
	}
	return nil
}

func (w *memStaged) Close() error { return w.Cancel(context.Background()) }

// pushWithPUT starts a session and sends the whole blob in its closing PUT,
// as containerd and the storage benchmark push.
func (e exchange) pushWithPUT(name string, content []byte, d digest.Digest) *http.Response {
	e.t.Helper()
	resp := e.do("POST", "/v2/"+name+"/blobs/uploads/", nil)
	e.expect(resp, http.StatusAccepted)
	return e.do("PUT", resp.Header.Get("Location")+"?digest="+d.String(), content)
}

// TestStagedPushStoresTheBlobWithoutAMove: a push whose one request
// carries the blob and its digest is written straight to the blob's path
// on a store with staged writes and committed there, with no Move; the
// blob reads back whole, its session is gone, and a push of the blob again
// stages nothing (it is already stored). Chunked pushes keep the Move.
func TestStagedPushStoresTheBlobWithoutAMove(t *testing.T) {
	d := newStagingMemory()
	_, e := newServerOn(t, d)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		push func(name string, content []byte, dg digest.Digest) *http.Response
	}{
		{"PUT", e.pushWithPUT},
		{"POST", func(name string, content []byte, dg digest.Digest) *http.Response {
			return e.do("POST", "/v2/"+name+"/blobs/uploads/?digest="+dg.String(), content)
		}},
		{"PUT without Content-Length", func(name string, content []byte, dg digest.Digest) *http.Response {
			resp := e.do("POST", "/v2/"+name+"/blobs/uploads/", nil)
			e.expect(resp, http.StatusAccepted)
			return e.streamed("PUT", resp.Header.Get("Location")+"?digest="+dg.String(), content)
		}},
	} {
		content := randomBlob(t, 3<<20+len(tc.name))
		dg := digest.FromBytes(content)
		before := d.counts()
		e.expect(tc.push("team/app", content, dg), http.StatusCreated)
		if n := d.counts(); n.opened != before.opened+1 || n.commits != before.commits+1 || n.moves != before.moves {
			t.Fatalf("%s: staged writers opened %d, committed %d, Moves %d; want one staged write committed and no Move",
				tc.name, n.opened-before.opened, n.commits-before.commits, n.moves-before.moves)
		}
		got := e.expect(e.do("GET", "/v2/team/app/blobs/"+dg.String(), nil), http.StatusOK)
		if !bytes.Equal(got, content) {
			t.Fatalf("%s: the blob reads back as %d bytes that differ from the %d pushed", tc.name, len(got), len(content))
		}
		var stage string
		d.count(func() { stage = d.stages[len(d.stages)-1] })
		if _, err := d.Driver.Stat(ctx, stage); !errors.As(err, new(storage.PathNotFoundError)) {
			t.Errorf("%s: the session's directory %s is still there after the push (Stat: %v)", tc.name, stage, err)
		}
		e.expect(tc.push("team/other", content, dg), http.StatusCreated)
		if d.counts().opened != before.opened+1 {
			t.Errorf("%s: a push of a blob already stored opened a staged writer", tc.name)
		}
	}
	before := d.counts()
	e.pushChunked("team/app", []byte("a chunked push keeps the session's parts"))
	if n := d.counts(); n.opened != before.opened || n.moves != before.moves+1 {
		t.Errorf("a chunked push opened %d staged writers and made %d Moves; want none and one", n.opened-before.opened, n.moves-before.moves)
	}
}

// TestStagedPushWithAWrongDigestLeavesNoBlob: a body that does not have
// the digest its request names is refused with DIGEST_INVALID, its staged
// write is cancelled, never committed, and nothing is at the blob's path;
// the session can still be finished with the right body.
func TestStagedPushWithAWrongDigestLeavesNoBlob(t *testing.T) {
	d := newStagingMemory()
	_, e := newServerOn(t, d)
	content := randomBlob(t, 2<<20)
	dg := digest.FromBytes(content)
	wrong := append(bytes.Clone(content[:len(content)-1]), content[len(content)-1]^1)

	resp := e.do("POST", "/v2/team/app/blobs/uploads/", nil)
	e.expect(resp, http.StatusAccepted)
	loc := resp.Header.Get("Location")
	for what, r := range map[string]*http.Response{
		"PUT":  e.do("PUT", loc+"?digest="+dg.String(), wrong),
		"POST": e.do("POST", "/v2/team/app/blobs/uploads/?digest="+dg.String(), wrong),
	} {
		if code := errorCode(t, e.expect(r, http.StatusBadRequest)); code != ociapi.CodeDigestInvalid {
			t.Errorf("%s of a body with another digest: code %s, want %s", what, code, ociapi.CodeDigestInvalid)
		}
	}
	if n := d.counts(); n.opened != 2 || n.commits != 0 || n.cancels != 2 {
		t.Fatalf("staged writers opened %d, committed %d, cancelled %d; want 2 opened, both cancelled, none committed", n.opened, n.commits, n.cancels)
	}
	if _, err := d.Driver.Stat(context.Background(), blobDataPath(dg)); !errors.As(err, new(storage.PathNotFoundError)) {
		t.Fatalf("the blob's path after the refused pushes: Stat %v, want not found", err)
	}
	e.expect(e.do("HEAD", "/v2/team/app/blobs/"+dg.String(), nil), http.StatusNotFound)

	e.expect(e.do("PUT", loc+"?digest="+dg.String(), content), http.StatusCreated)
	if got := e.expect(e.do("GET", "/v2/team/app/blobs/"+dg.String(), nil), http.StatusOK); !bytes.Equal(got, content) {
		t.Errorf("after the session was finished with the right body, the blob reads %d bytes that differ", len(got))
	}
}

// TestFailedStagedPushLeavesNothing: a store that fails mid-body and a
// body past the repository's size limit each end the push with their own
// error (503 naming storage, 413); the staged write is
// cancelled and nothing is at the blob's path.
func TestFailedStagedPushLeavesNothing(t *testing.T) {
	d := newStagingMemory()
	_, e := newServerOn(t, d, func(c *Config) {
		c.BlobSizeLimits = []BlobSizeLimit{{Repositories: []string{"small/**"}, MaxBlobSize: 1 << 20}}
	})
	content := randomBlob(t, 3<<20)
	dg := digest.FromBytes(content)

	resp := e.do("POST", "/v2/small/app/blobs/uploads/", nil)
	e.expect(resp, http.StatusAccepted)
	resp = e.streamed("PUT", resp.Header.Get("Location")+"?digest="+dg.String(), content)
	if code := errorCode(t, e.expect(resp, http.StatusRequestEntityTooLarge)); code != ociapi.CodeSizeInvalid {
		t.Errorf("a staged push past the size limit: code %s, want %s", code, ociapi.CodeSizeInvalid)
	}
	d.count(func() { d.failWriteAt = 1 << 20 }) // last: the storage breaker then refuses writes for a while
	expectUnavailable(e, e.pushWithPUT("team/app", content, dg), "a staged push whose store fails", d.Name())

	if n := d.counts(); n.opened != 2 || n.commits != 0 || n.cancels != 2 {
		t.Fatalf("staged writers opened %d, committed %d, cancelled %d; want 2 opened, both cancelled", n.opened, n.commits, n.cancels)
	}
	if _, err := d.Driver.Stat(context.Background(), blobDataPath(dg)); !errors.As(err, new(storage.PathNotFoundError)) {
		t.Fatalf("the blob's path after the failed pushes: Stat %v, want not found", err)
	}
}

// TestStagedPushOfABlobAnotherPushStored: a staged write whose commit
// fails because another push of the same blob stored it meanwhile (on
// Azure, as an append blob a block list is not committed over) is a
// successful push: the blob at its path is verified content too.
func TestStagedPushOfABlobAnotherPushStored(t *testing.T) {
	d := newStagingMemory()
	d.storedMeanwhile = true
	_, e := newServerOn(t, d)
	content := randomBlob(t, 2<<20)
	dg := digest.FromBytes(content)
	e.expect(e.pushWithPUT("team/app", content, dg), http.StatusCreated)
	if got := e.expect(e.do("GET", "/v2/team/app/blobs/"+dg.String(), nil), http.StatusOK); !bytes.Equal(got, content) {
		t.Errorf("the blob reads %d bytes that differ from the %d pushed", len(got), len(content))
	}
}

// TestMonolithicPushHasAStartTimeWhileItRuns: a monolithic POST
// (?digest= with the blob) writes its session's start time before any of
// its bytes, on a store with staged writes and on one without: GC purges
// only the sessions that have one, so an origin killed mid-push leaves
// nothing behind for good. The push then completes.
func TestMonolithicPushHasAStartTimeWhileItRuns(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    storage.Driver
	}{
		{"staged", newStagingMemory()},
		{"parts", inmemory.New()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, e := newServerOn(t, tc.d)
			content := randomBlob(t, 1<<20)
			dg := digest.FromBytes(content)
			push := startStalled(t, http.MethodPost, e.base+"/v2/team/app/blobs/uploads/?digest="+dg.String(), content[:1000], "")
			uploads := path.Dir(uploadPath("team/app", "x"))
			var started []string
			eventually.True(t, "the monolithic push's session to show in storage", func() bool {
				ids, err := tc.d.List(context.Background(), uploads)
				if err != nil || len(ids) != 1 {
					return false
				}
				started, err = tc.d.List(context.Background(), ids[0])
				return err == nil && len(started) > 0
			})
			if !slices.Contains(started, path.Join(path.Dir(started[0]), "startedat")) {
				t.Errorf("the session of a monolithic push in flight holds %v, no startedat", started)
			}
			resp := push.finish(t, content[1000:])
			if resp.StatusCode != http.StatusCreated {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("the monolithic push, finished: status %d, want 201: %s", resp.StatusCode, b)
			}
		})
	}
}
