package hostile_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/eventually"
)

// slowBody is an upload chunk whose body a hostile client sends a byte at
// a time every interval (0: one byte, then nothing), until stopped.
type slowBody struct {
	pw   *io.PipeWriter
	stop chan struct{}
	once sync.Once
	done chan int // the answer's status, or 0 when the request failed
}

func startSlowChunk(t *testing.T, c *client, repo string, interval time.Duration) *slowBody {
	t.Helper()
	a := c.expect(c.do("POST", "/v2/"+repo+"/blobs/uploads/", nil), http.StatusAccepted, "attacker's upload start")
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPatch, c.base+a.header.Get("Location"), pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	sb := &slowBody{pw: pw, stop: make(chan struct{}), done: make(chan int, 1)}
	// Each on a connection of its own, as separate clients are.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		resp, err := hc.Do(req)
		if err != nil {
			sb.done <- 0
			return
		}
		resp.Body.Close()
		sb.done <- resp.StatusCode
	}()
	go func() {
		for {
			if _, err := pw.Write([]byte("x")); err != nil || interval == 0 {
				return
			}
			select {
			case <-sb.stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	t.Cleanup(sb.close)
	return sb
}

func (sb *slowBody) close() {
	sb.once.Do(func() {
		close(sb.stop)
		sb.pw.CloseWithError(io.ErrUnexpectedEOF)
	})
}

// TestTricklingUploadsDoNotHoldUpHonestPushes: 64 clients trickle chunk
// bodies a byte at a time and 16 more stall theirs; the origin once
// serialized every chunked upload on 64 locks shared by hash of the upload
// id, held while a body was read, so these froze every chunked push on the
// node. Honest chunked pushes must complete while they run; the stalled
// bodies must be cut by the body progress deadline, and their sessions
// stay resumable.
func TestTricklingUploadsDoNotHoldUpHonestPushes(t *testing.T) {
	o := startOrigin(t, "file://"+t.TempDir(), "registry:\n  bodyTimeout: 2s\n")
	c := newClient(t, o)
	const tricklers, stallers = 64, 16
	for range tricklers {
		startSlowChunk(t, c, "attacker/trickle", 200*time.Millisecond)
	}
	eventually.True(t, fmt.Sprintf("the %d trickling chunks all to reach the origin", tricklers), func() bool {
		return metrics(t, o).Sum("shoal_origin_upload_chunks_in_flight") >= tricklers
	})
	stalled := make([]*slowBody, stallers)
	for i := range stalled {
		stalled[i] = startSlowChunk(t, c, "attacker/stall", 0)
	}

	c.pushImage("team/app", "v1", randomBytes(t, 3<<20))
	eventually.True(t, fmt.Sprintf("bodyTimeout to cut all %d stalled chunk bodies", stallers), func() bool {
		return metrics(t, o).Sum("shoal_origin_body_timeouts_total", "handler", "upload") >= stallers
	})
	for i, sb := range stalled {
		if status := <-sb.done; status != http.StatusRequestTimeout && status != 0 {
			t.Errorf("stalled chunk %d answered %d, want 408 or a closed connection", i, status)
		}
	}
	// While the tricklers go on, honest pushes still complete.
	if n := metrics(t, o).Sum("shoal_origin_upload_chunks_in_flight"); n < tricklers/2 {
		t.Logf("only %v trickling chunks still in flight", n)
	}
	c.pushImage("team/app", "v2", randomBytes(t, 1<<20))
	c.pushImage("team/other", "v1", randomBytes(t, 100<<10))
}

// TestACutUploadResumes: a session whose chunk was cut for stalling keeps
// what it had, and its client can resume and finish it.
func TestACutUploadResumes(t *testing.T) {
	o := startOrigin(t, "file://"+t.TempDir(), "registry:\n  bodyTimeout: 1s\n")
	c := newClient(t, o)
	blob := randomBytes(t, 1<<20)
	a := c.expect(c.do("POST", "/v2/team/app/blobs/uploads/", nil), http.StatusAccepted, "upload start")
	loc := a.header.Get("Location")
	a = c.expect(c.do("PATCH", loc, blob[:1000], "Content-Range", "0-999"), http.StatusAccepted, "first chunk")
	loc = a.header.Get("Location")

	pr, pw := io.Pipe()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPatch, c.base+loc, pr)
	req.Header.Set("Content-Range", fmt.Sprintf("1000-%d", len(blob)-1))
	go func() { _, _ = pw.Write(blob[1000:5000]) }() // then nothing
	t.Cleanup(func() { pw.Close() })
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := hc.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("stalled chunk answered %d, want 408", resp.StatusCode)
		}
	}
	a = c.expect(c.do("GET", loc, nil), http.StatusNoContent, "upload status after the cut")
	if got := a.header.Get("Range"); got != "0-999" {
		t.Fatalf("after the cut the session reports Range %q, want 0-999", got)
	}
	a = c.expect(c.do("PATCH", loc, blob[1000:], "Content-Range", fmt.Sprintf("1000-%d", len(blob)-1)), http.StatusAccepted, "resumed chunk")
	d := sha256Digest(blob)
	c.expect(c.do("PUT", a.header.Get("Location")+"?digest="+d, nil), http.StatusCreated, "finish")
}
