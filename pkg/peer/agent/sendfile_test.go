package agent

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/eventually"
)

// TestCachedBlobIsSentWithSendfile: once a blob is complete in the agent's
// cache, the mirror hands a plaintext client its file (sendfile(2)), not a
// buffer's copies, for a whole GET and for a Range resume alike; the first
// pull, streamed while the pieces arrived, adds up with it to every byte.
func TestCachedBlobIsSentWithSendfile(t *testing.T) {
	o := startOrigin(t)
	layer := randomBytes(6<<20+321, 21)
	size := float64(len(layer))
	d := o.pushBlob("team/app", layer)
	seeder := startSeeder(t, "origin-1", testPieceLen, false)
	seeder.add(layer)
	a := startAgent(t, testConfig(t, o.URL, []string{seeder.addr}, nil))
	path := "/v2/team/app/blobs/" + d.String()
	sent := func() (file, buffer float64) {
		return a.metric("shoal_agent_blob_sent_bytes_total", "how", "file"), a.metric("shoal_agent_blob_sent_bytes_total", "how", "buffer")
	}

	resp, body := a.get(http.MethodGet, path)
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != d {
		t.Fatalf("first pull: %s with %d bytes; want 200 with the layer's %d", resp.Status, len(body), len(layer))
	}
	if file, buffer := sent(); file+buffer != size {
		t.Fatalf("first pull: %.0f bytes sent as a file and %.0f through a buffer; want %.0f in all", file, buffer, size)
	}
	eventually.True(t, "the download to end", func() bool { return a.metric("shoal_agent_downloads_active") == 0 })

	file0, buffer0 := sent()
	resp, body = a.get(http.MethodGet, path)
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != d {
		t.Fatalf("cached pull: %s with %d bytes; want 200 with the layer's %d", resp.Status, len(body), len(layer))
	}
	if file, buffer := sent(); file-file0 != size || buffer != buffer0 {
		t.Fatalf("cached pull: %.0f bytes sent as a file and %.0f through a buffer; want all %.0f as a file", file-file0, buffer-buffer0, size)
	}

	const from = 1<<20 + 77
	resp, body = a.get(http.MethodGet, path, "Range", "bytes=1048653-")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, layer[from:]) {
		t.Fatalf("Range resume from %d: %s with %d bytes; want 206 with the layer's %d bytes from there", from, resp.Status, len(body), len(layer)-from)
	}
	if file, buffer := sent(); file-file0 != 2*size-from || buffer != buffer0 {
		t.Fatalf("Range resume: %.0f bytes sent as a file and %.0f through a buffer; want %.0f as a file", file-file0-size, buffer-buffer0, size-from)
	}
}
