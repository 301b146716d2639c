package hdfsorigin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPullsSurviveADatanodeRestart restarts a datanode while ten clients
// pull a 256 MiB blob (16 blocks, each on two of the three datanodes):
// every pull must end with the blob's digest. A client whose stream breaks
// resumes with a Range request from where it stopped, as docker and
// containerd do; resumes are counted and logged, not failures.
func TestPullsSurviveADatanodeRestart(t *testing.T) {
	c := testCluster(t)
	p := newPhases(t)
	o := startOrigin(t, c, "/datanode-restart")
	p.done("start origin")

	const (
		repo    = "hdfs/big"
		size    = 256 << 20
		clients = 10
		// Every client reads this much, then waits until the restart
		// begins, so that the restart hits ten streams in flight.
		gate = 64 << 20
	)
	blob := func() io.Reader { return io.LimitReader(rand.NewChaCha8([32]byte{4}), size) }
	h := sha256.New()
	if _, err := io.Copy(h, blob()); err != nil {
		t.Fatal(err)
	}
	dig := "sha256:" + hex.EncodeToString(h.Sum(nil))
	r := send(t, http.MethodPost, o.URL()+"/v2/"+repo+"/blobs/uploads/?digest="+dig, blob(), size,
		map[string]string{"Content-Type": "application/octet-stream"})
	wantStatus(t, r, http.StatusCreated, "monolithic push of the 256 MiB blob")
	p.done("push 256 MiB")

	// Bounds the pulls, so that a stream that hangs fails the test.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	var read atomic.Int64
	reached := make(chan struct{}, clients)
	release := make(chan struct{})
	results := make([]pullResult, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			results[i] = pullResuming(ctx, o.URL()+"/v2/"+repo+"/blobs/"+dig, size, gate, reached, release, &read)
		})
	}
	for range clients {
		<-reached
	}
	p.done(fmt.Sprintf("%d pulls read %d MiB each", clients, gate>>20))

	restarted := make(chan error, 1)
	go func() { restarted <- c.RestartDataNode(0) }()
	close(release)
	if err := <-restarted; err != nil {
		t.Error(err)
	}
	t.Logf("datanode 0 restarted; the clients had read %d of %d MiB by then", read.Load()>>20, clients*size>>20)
	p.done("restart datanode 0")
	wg.Wait()
	p.done("pulls finish")

	resumes := 0
	for i, res := range results {
		resumes += len(res.resumes)
		for _, why := range res.resumes {
			t.Logf("client %d resumed: %s", i, why)
		}
		switch {
		case res.err != nil:
			t.Errorf("client %d: %v", i, res.err)
		case res.digest != dig:
			t.Errorf("client %d pulled %d bytes with digest %s, want %s", i, res.n, res.digest, dig)
		}
	}
	t.Logf("%d pulls of %d MiB, %d resumed requests", clients, size>>20, resumes)
}

type pullResult struct {
	n       int64
	digest  string
	resumes []string // why each Range request after the first was sent
	err     error
}

// maxResumes bounds a client's Range requests: a stream that breaks again
// and again is a failure, not bad luck.
const maxResumes = 5

// pullResuming GETs a blob of size bytes, resuming with Range after a
// broken stream. Once it has read gate bytes it signals reached and waits
// for release. It runs on its own goroutine, so it reports instead of
// failing the test.
func pullResuming(ctx context.Context, url string, size, gate int64, reached chan<- struct{}, release <-chan struct{}, read *atomic.Int64) (res pullResult) {
	h := sha256.New()
	signalled := false
	signal := func() {
		if !signalled {
			signalled = true
			reached <- struct{}{}
		}
	}
	defer signal() // a client that failed early must not block the test
	buf := make([]byte, 256<<10)
	for res.n < size {
		if len(res.resumes) > maxResumes {
			res.err = fmt.Errorf("gave up after %d resumed requests at byte %d: %v", maxResumes, res.n, res.resumes)
			return res
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			res.err = err
			return res
		}
		want := http.StatusOK
		if res.n > 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", res.n))
			want = http.StatusPartialContent
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			res.resumes = append(res.resumes, fmt.Sprintf("GET from byte %d failed: %v", res.n, err))
			continue
		}
		if resp.StatusCode != want {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			res.err = fmt.Errorf("GET %s (Range %q): %s, want %d: %s", url, req.Header.Get("Range"), resp.Status, want, b)
			return res
		}
		if want == http.StatusPartialContent {
			if got, wantCR := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", res.n, size-1, size); got != wantCR {
				resp.Body.Close()
				res.err = fmt.Errorf("GET with Range from %d: Content-Range %q, want %q", res.n, got, wantCR)
				return res
			}
		}
		for {
			m, err := resp.Body.Read(buf)
			h.Write(buf[:m])
			res.n += int64(m)
			read.Add(int64(m))
			if !signalled && res.n >= gate {
				signal()
				<-release
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				res.resumes = append(res.resumes, fmt.Sprintf("stream broke at byte %d: %v", res.n, err))
				break
			}
		}
		resp.Body.Close()
	}
	if res.n != size {
		res.err = fmt.Errorf("read %d bytes, the blob has %d", res.n, size)
	}
	res.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return res
}
