package mirror

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/peer/piecestore"
)

// storeBlobs serves the complete blobs of a real piece store, its readers
// handing over the blob's file as the swarm's do (FileRanger). buffered
// hides FileRange: the path every blob took before. fileAfterRead offers
// the file only after a first Read, as the swarm's reader of a blob that
// completes while it streams does.
type storeBlobs struct {
	s             *piecestore.Store
	buffered      bool
	fileAfterRead bool
}

func (b *storeBlobs) Open(_ context.Context, d digest.Digest, _ string) (Blob, error) {
	release, err := b.s.Acquire(d)
	if err != nil {
		return nil, err
	}
	info, err := b.s.Stat(d)
	if err != nil {
		release()
		return nil, err
	}
	return &storeBlob{s: b.s, d: d, size: info.Size, buffered: b.buffered, fileAfterRead: b.fileAfterRead, release: release}, nil
}

type storeBlob struct {
	s             *piecestore.Store
	d             digest.Digest
	size          int64
	buffered      bool
	fileAfterRead bool
	release       func()
}

func (b *storeBlob) Size() int64  { return b.size }
func (b *storeBlob) Cached() bool { return true }
func (b *storeBlob) Close() error { b.release(); return nil }

func (b *storeBlob) NewReader(ctx context.Context, offset int64) (io.ReadCloser, error) {
	r, err := b.s.Reader(ctx, b.d, offset)
	if err != nil {
		return nil, err
	}
	fr := &fileReader{Reader: r, s: b.s, d: b.d, size: b.size, start: offset, fileAfterRead: b.fileAfterRead}
	if b.buffered {
		return struct{ io.ReadCloser }{fr}, nil
	}
	return fr, nil
}

// fileReader is the swarm's blobReader for a complete blob, reduced to
// what the mirror sees.
type fileReader struct {
	*piecestore.Reader
	s    *piecestore.Store
	d    digest.Digest
	size int64
	f    *piecestore.BlobFile
	// start is where the reader began; with fileAfterRead, the file is
	// offered only once the reader has moved past it.
	start         int64
	fileAfterRead bool
}

func (r *fileReader) FileRange() (*os.File, int64, int64, bool) {
	if r.fileAfterRead && r.Offset() == r.start {
		return nil, 0, 0, false
	}
	if r.f == nil {
		f, err := r.s.OpenFile(r.d)
		if err != nil {
			return nil, 0, 0, false
		}
		r.f = f
	}
	off := r.Offset()
	return r.f.File, off, r.size - off, true
}

func (r *fileReader) Close() error {
	if r.f != nil {
		r.f.Close()
	}
	return r.Reader.Close()
}

// cachedBlobMirror is a mirror on a loopback TCP listener (TLS when tls)
// whose piece store holds one complete blob of size random bytes.
type cachedBlobMirror struct {
	srv  *httptest.Server
	reg  *prometheus.Registry
	d    digest.Digest
	size int64
}

func newCachedBlobMirror(tb testing.TB, size int, buffered, tls bool) (*cachedBlobMirror, []byte) {
	return newCachedBlobMirrorWith(tb, size, &storeBlobs{buffered: buffered}, tls)
}

// newCachedBlobMirrorWith is newCachedBlobMirror with blobs, whose store
// it sets.
func newCachedBlobMirrorWith(tb testing.TB, size int, blobs *storeBlobs, tls bool) (*cachedBlobMirror, []byte) {
	tb.Helper()
	const pieceLen = 4 << 20
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(uint64(size), 7))
	for i := 0; i+8 <= len(data); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	d := digest.FromBytes(data)
	m, err := metainfo.Compute(bytes.NewReader(data), d, int64(size), pieceLen)
	if err != nil {
		tb.Fatal(err)
	}
	store, err := piecestore.Open(tb.TempDir(), 2*int64(size), piecestore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	if err := store.Create(m); err != nil {
		tb.Fatal(err)
	}
	for i := range m.NumPieces() {
		off := m.PieceOffset(i)
		if err := store.WritePiece(d, i, data[off:off+m.PieceSize(i)]); err != nil {
			tb.Fatal(err)
		}
	}
	if err := store.Complete(d); err != nil {
		tb.Fatal(err)
	}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead && r.URL.Path == "/v2/team/app/blobs/"+d.String() {
			w.Header().Set("Content-Length", strconv.Itoa(size))
			return
		}
		http.NotFound(w, r)
	}))
	tb.Cleanup(origin.Close)
	reg := prometheus.NewRegistry()
	blobs.s = store
	mir, err := New(testConfig(origin.URL), Options{Blobs: blobs,
		Registerer: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mir)
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	tb.Cleanup(srv.Close)
	return &cachedBlobMirror{srv: srv, reg: reg, d: d, size: int64(size)}, data
}

// get fetches the blob, with a Range header when rng is not empty, and
// returns the status and the body.
func (c *cachedBlobMirror) get(tb testing.TB, rng string) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, c.srv.URL+"/v2/team/app/blobs/"+c.d.String(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := c.srv.Client().Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("reading the blob (Range %q): %v", rng, err)
	}
	return resp.StatusCode, body
}

// sent returns the blob bytes the mirror sent as a file region and
// through a buffer.
func (c *cachedBlobMirror) sent(tb testing.TB) (file, buffer int64) {
	tb.Helper()
	mfs, err := c.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "shoal_agent_blob_sent_bytes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch m.GetLabel()[0].GetValue() {
			case "file":
				file = int64(m.GetCounter().GetValue())
			case "buffer":
				buffer = int64(m.GetCounter().GetValue())
			}
		}
	}
	return file, buffer
}

func TestCachedBlobGoesToAPlaintextClientAsAFile(t *testing.T) {
	c, data := newCachedBlobMirror(t, 9<<20+123, false, false)
	status, body := c.get(t, "")
	if status != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("GET of a cached blob: %d with %d bytes; want 200 with its %d bytes", status, len(body), len(data))
	}
	if file, buffer := c.sent(t); file != c.size || buffer != 0 {
		t.Fatalf("sent %d bytes as a file and %d through a buffer; want all %d as a file (sendfile)", file, buffer, c.size)
	}
	// A Range resume starting inside a piece goes out as a file region
	// from there.
	first, last := int64(5<<20+17), c.size-1001
	status, body = c.get(t, fmt.Sprintf("bytes=%d-%d", first, last))
	if status != http.StatusPartialContent || !bytes.Equal(body, data[first:last+1]) {
		t.Fatalf("GET bytes=%d-%d: %d with %d bytes; want 206 with the blob's %d bytes there", first, last, status, len(body), last-first+1)
	}
	if file, buffer := c.sent(t); file != c.size+last-first+1 || buffer != 0 {
		t.Fatalf("after the range request: %d bytes sent as a file and %d through a buffer; want %d as a file", file, buffer, c.size+last-first+1)
	}
}

// TestBlobGoesOnAsAFileOnceComplete: a reader that offers the file only
// after its first Read, as the swarm's does for a blob whose download ends
// while it streams, has the rest of the response sent from the file, from
// where the buffer stopped.
func TestBlobGoesOnAsAFileOnceComplete(t *testing.T) {
	c, data := newCachedBlobMirrorWith(t, 5<<20+99, &storeBlobs{fileAfterRead: true}, false)
	status, body := c.get(t, "bytes=3-")
	if status != http.StatusPartialContent || !bytes.Equal(body, data[3:]) {
		t.Fatalf("GET bytes=3-: %d with %d bytes; want 206 with the blob's %d bytes from 3", status, len(body), len(data)-3)
	}
	file, buffer := c.sent(t)
	if buffer != copyBufferSize || file != c.size-3-copyBufferSize {
		t.Fatalf("sent %d bytes through the buffer and %d as a file; want the first read's %d through the buffer and the other %d as a file",
			buffer, file, copyBufferSize, c.size-3-copyBufferSize)
	}
}

func TestCachedBlobGoesToATLSClientThroughABuffer(t *testing.T) {
	c, data := newCachedBlobMirror(t, 3<<20+5, false, true)
	status, body := c.get(t, "bytes=10-")
	if status != http.StatusPartialContent || !bytes.Equal(body, data[10:]) {
		t.Fatalf("GET bytes=10- over TLS: %d with %d bytes; want 206 with the blob's %d bytes from 10", status, len(body), len(data)-10)
	}
	if file, buffer := c.sent(t); file != 0 || buffer != c.size-10 {
		t.Fatalf("over TLS: %d bytes sent as a file and %d through a buffer; want all %d through the buffer (TLS encrypts in user space)", file, buffer, c.size-10)
	}
}

// cpuSeconds is the CPU time this process has used, user and system.
func cpuSeconds(tb testing.TB) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkCachedBlob serves a 256 MiB cached blob to a loopback client,
// through the mirror's buffer (buffer: the path before sendfile) and as a
// file (sendfile), and reports the CPU the serving process spent per GiB
// (loopback's receive processing included, which the kernel charges
// mostly to the sender) and the client's. The client is curl in a process
// of its own when it is on PATH, so that its reads are not counted as the
// mirror's; otherwise a Go client in this process, counted with the
// mirror (client-cpu-s/GiB 0). Compare the two paths from one run: the
// machine is shared.
//
//	go test -run '^$' -bench 'CachedBlob$' -benchtime 5x ./pkg/peer/mirror/
func BenchmarkCachedBlob(b *testing.B) {
	const size = 256 << 20
	curl, _ := exec.LookPath("curl")
	for _, how := range []string{"buffer", "sendfile"} {
		b.Run(how, func(b *testing.B) {
			c, _ := newCachedBlobMirror(b, size, how == "buffer", false)
			url := c.srv.URL + "/v2/team/app/blobs/" + c.d.String()
			var clientCPU time.Duration
			// Large reads keep an in-process client's share small.
			buf := make([]byte, 1<<20)
			pull := func() {
				if curl != "" {
					cmd := exec.Command(curl, "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}", url)
					out, err := cmd.Output()
					if err != nil || string(out) != strconv.Itoa(size) {
						b.Fatalf("curl pulled %q bytes: %v", out, err)
					}
					clientCPU += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
					return
				}
				resp, err := c.srv.Client().Get(url)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, buf)
				resp.Body.Close()
				if err != nil || n != size {
					b.Fatalf("pulled %d bytes: %v", n, err)
				}
			}
			pull() // the page cache warm, the origin's answer cached
			clientCPU = 0
			b.SetBytes(size)
			cpu := cpuSeconds(b)
			for b.Loop() {
				pull()
			}
			gib := float64(b.N) * size / (1 << 30)
			b.ReportMetric((cpuSeconds(b)-cpu)/gib, "cpu-s/GiB")
			b.ReportMetric(clientCPU.Seconds()/gib, "client-cpu-s/GiB")
		})
	}
}

// rssBytes is this process's resident set size.
func rssBytes(tb testing.TB) int64 {
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(statm))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		tb.Fatalf("parsing /proc/self/statm %q: %v", statm, err)
	}
	return pages * int64(os.Getpagesize())
}

// BenchmarkCachedBlob48Streams serves a 64 MiB cached blob to 48 loopback
// clients at once, through a buffer and as a file, and reports the
// process's peak RSS growth over the pulls (the clients discard what they
// read into small pooled buffers). The blob's bytes are dropped from the
// heap before the baseline is taken.
//
//	go test -run '^$' -bench CachedBlob48Streams -benchtime 2x ./pkg/peer/mirror/
func BenchmarkCachedBlob48Streams(b *testing.B) {
	const size, streams = 64 << 20, 48
	for _, how := range []string{"buffer", "sendfile"} {
		b.Run(how, func(b *testing.B) {
			c, _ := newCachedBlobMirror(b, size, how == "buffer", false)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: streams}}
			b.Cleanup(client.CloseIdleConnections)
			pull := func() error {
				resp, err := client.Get(c.srv.URL + "/v2/team/app/blobs/" + c.d.String())
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				n, err := io.Copy(io.Discard, resp.Body)
				if err == nil && n != size {
					err = fmt.Errorf("pulled %d bytes of %d", n, size)
				}
				return err
			}
			if err := pull(); err != nil {
				b.Fatal(err)
			}
			debug.FreeOSMemory()
			base := rssBytes(b)
			var peak int64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				tick := time.NewTicker(5 * time.Millisecond)
				defer tick.Stop()
				for {
					peak = max(peak, rssBytes(b))
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
			b.SetBytes(size * streams)
			for b.Loop() {
				var wg sync.WaitGroup
				errs := make(chan error, streams)
				for range streams {
					wg.Go(func() { errs <- pull() })
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			close(stop)
			<-sampled
			b.ReportMetric(float64(peak-base)/(1<<20), "rss-growth-MiB")
		})
	}
}
