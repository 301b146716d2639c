package interop

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/testpki"
)

// serverCert writes a certificate for 127.0.0.1 (server use) and its key,
// and returns their paths and a pool that trusts the certificate's CA.
func serverCert(t *testing.T) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	ca := testpki.NewCA(t, "shoal test CA")
	cert, key := ca.Issue(t, "shoal test origin", 2, x509.ExtKeyUsageServerAuth)
	dir := t.TempDir()
	return testpki.WriteFile(t, dir, "cert.pem", cert), testpki.WriteFile(t, dir, "key.pem", key), ca.Pool()
}

func TestOriginServesTLS(t *testing.T) {
	bin := testenv.Binary(t, "origin")
	certPath, keyPath, pool := serverCert(t)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
	addr, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p, err := testenv.Start(t.Context(), testenv.Options{
		Name:    "origin (TLS) " + addr,
		Path:    bin,
		Args:    []string{"--listen", addr, "--storage", "file://" + t.TempDir(), "--tls-cert", certPath, "--tls-key", keyPath},
		LogPath: filepath.Join(t.TempDir(), "origin.log"),
		Ready: func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/readyz", nil)
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("readyz: %s", resp.Status)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(testenv.DefaultStopTimeout); err != nil {
			t.Errorf("stopping the TLS origin: %v", err)
		}
	})

	content := []byte("over TLS")
	d := digest.FromBytes(content)
	resp, err := client.Post("https://"+addr+"/v2/tls/test/blobs/uploads/?digest="+d.String(), "application/octet-stream", bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push over TLS: %s", resp.Status)
	}
	resp, err = client.Get("https://" + addr + "/v2/tls/test/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, content) {
		t.Fatalf("pull over TLS returned %q", got)
	}
	// Plain HTTP on the TLS listener is refused, not served.
	resp, err = http.Get("http://" + addr + "/v2/")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("the TLS listener answered plain HTTP with 200")
		}
	}
}

// TestOriginFinishesChunkInFlightOnSIGTERM sends SIGTERM while a chunk is
// being uploaded: the origin finishes that request before exiting, exits
// cleanly, and the upload, which lives in storage, is finished by a new
// origin process.
func TestOriginFinishesChunkInFlightOnSIGTERM(t *testing.T) {
	store := "file://" + t.TempDir()
	bin := testenv.Binary(t, "origin")
	a, err := testenv.StartOrigin(t.Context(), testenv.OriginOptions{Binary: bin, Storage: store, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Kill() })

	resp, err := http.Post(a.URL()+"/v2/graceful/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("starting upload: %s, Location %q", resp.Status, loc)
	}

	content := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPatch, a.URL()+loc, pr)
	req.ContentLength = int64(len(content))
	req.Header.Set("Content-Range", fmt.Sprintf("0-%d", len(content)-1))
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	// A connection of its own: a kept-alive one looks idle to the server
	// until it reads the new request, and Shutdown closes idle ones.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		r, err := client.Do(req)
		done <- result{r, err}
	}()
	if _, err := pw.Write(content[:len(content)/2]); err != nil {
		t.Fatal(err)
	}
	// Wait until the origin has opened the chunk's part in storage, so that
	// the request is in its handler when the origin is asked to stop. The
	// part's size says nothing: the first half may still be in the
	// origin's copy buffers, which go to the store writer when full or when
	// the writer is idle, and the writer buffers small writes.
	parts := filepath.Join(strings.TrimPrefix(store, "file://"), "docker/registry/v2/repositories/graceful/_uploads/*/parts/*")
	if err := eventually.Wait(eventually.Timeout, func() bool {
		m, _ := filepath.Glob(parts)
		return len(m) > 0
	}); err != nil {
		t.Fatalf("waiting for the origin to open the chunk's part in storage: %v\n%s", err, a.LogTail(20))
	}
	stopped := make(chan error, 1)
	go func() { stopped <- a.Stop(testenv.DefaultStopTimeout) }()
	// The rest of the body goes once the origin has taken SIGTERM (it logs
	// that it is shutting down), so the request is incomplete when it does.
	if err := eventually.Wait(eventually.Timeout, func() bool {
		b, _ := os.ReadFile(a.LogPath)
		return bytes.Contains(b, []byte("shutting down"))
	}); err != nil {
		t.Fatalf("waiting for the origin to log that it is shutting down: %v\n%s", err, a.LogTail(20))
	}
	if _, err := pw.Write(content[len(content)/2:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	res := <-done
	if res.err != nil {
		t.Fatalf("chunk in flight during SIGTERM failed: %v", res.err)
	}
	res.resp.Body.Close()
	if res.resp.StatusCode != http.StatusAccepted {
		t.Fatalf("chunk in flight during SIGTERM answered %s", res.resp.Status)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("origin did not shut down cleanly: %v\n%s", err, a.LogTail(20))
	}

	b := testenv.Origin(t, store)
	d := digest.FromBytes(content)
	req, _ = http.NewRequest(http.MethodPut, b.URL()+loc+"?digest="+d.String(), nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("finishing the upload on a new origin: %s %s", resp.Status, body)
	}
	resp, err = http.Get(b.URL() + "/v2/graceful/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, content) {
		t.Fatalf("blob after restart has %d bytes, want the %d pushed", len(got), len(content))
	}
	if !strings.Contains(a.LogTail(5), "stopped") {
		t.Errorf("origin log does not end with its shutdown:\n%s", a.LogTail(5))
	}
}
