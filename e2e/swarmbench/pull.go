package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"time"
)

// pullResult is one client's GET of the layer.
type pullResult struct {
	Host   int    `json:"host"`
	Bytes  int64  `json:"bytes"`
	Digest string `json:"digest"`
	// Start and End are Unix nanoseconds: the request sent, the last byte
	// hashed.
	Start int64  `json:"start"`
	End   int64  `json:"end"`
	Err   string `json:"err,omitempty"`
	// cpu is the client process's CPU time, filled in by its parent.
	cpu time.Duration
}

func (r pullResult) took() time.Duration { return time.Duration(r.End - r.Start) }

// pull GETs url and hashes the body, as a client verifying a layer does.
// The hashing runs beside the reading (pipelined through a few buffers) so
// that one SHA-256 pass does not cap what a fast server can deliver.
func pull(ctx context.Context, client *http.Client, url string) (r pullResult) {
	r.Start = time.Now().UnixNano()
	defer func() { r.End = time.Now().UnixNano() }()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	resp, err := client.Do(req)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		r.Err = fmt.Sprintf("GET %s: %s: %s", url, resp.Status, b)
		return r
	}
	h := sha256.New()
	r.Bytes, err = copyHashing(h, resp.Body)
	if err != nil {
		r.Err = fmt.Sprintf("reading %s after %d bytes: %v", url, r.Bytes, err)
	}
	r.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return r
}

// copyHashing reads src into h with the reads and the hashing in two
// goroutines.
func copyHashing(h hash.Hash, src io.Reader) (int64, error) {
	const bufs, size = 4, 1 << 20
	free := make(chan []byte, bufs)
	full := make(chan []byte, bufs)
	for range bufs {
		free <- make([]byte, size)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range full {
			h.Write(b)
			free <- b[:size]
		}
	}()
	var n int64
	var err error
	for {
		b := <-free
		// Fill b, but not with io.ReadFull: its io.ErrUnexpectedEOF for a
		// short last buffer would hide the body's own io.ErrUnexpectedEOF
		// (a response cut before its Content-Length), and a cut pull
		// would count as "wrong bytes" instead of failed.
		k := 0
		var rerr error
		for k < len(b) && rerr == nil {
			var m int
			m, rerr = src.Read(b[k:])
			k += m
		}
		n += int64(k)
		if k > 0 {
			full <- b[:k]
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	close(full)
	<-done
	return n, err
}

// pullMain is the client run inside a host's namespace (`ip netns exec ns
// <this binary> -pull URL ...`): it waits for the common start time, pulls
// and prints the result as JSON.
func pullMain(url string, host int, at int64, timeout time.Duration) {
	time.Sleep(time.Until(time.Unix(0, at)))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r := pull(ctx, &http.Client{Transport: &http.Transport{Proxy: nil}}, url)
	r.Host = host
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		os.Exit(1)
	}
}
