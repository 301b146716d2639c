package hdfsorigin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/internal/eventually"
	hdfsdriver "github.com/shoal-dev/shoal/pkg/storage/hdfs"
)

// TestNamenodeOutage stops the namenode under an origin that has a blob
// stored, an upload with a committed chunk and an upload with a chunk in
// flight. While it is down, pushes and pulls answer 503 UNAVAILABLE naming
// HDFS; neither upload becomes a visible blob; once the namenode is back,
// the origin is ready again, the interrupted upload can be finished, and
// pushes and pulls work.
func TestNamenodeOutage(t *testing.T) {
	c := testCluster(t)
	p := newPhases(t)
	// Debug logs show why a request was refused with a 4xx, should one be.
	o := testenv.Origin(t, c.URL("/namenode-outage"), "--log-level", "debug")
	const repo = "hdfs/outage"

	stored := randomBytes(1<<20, 5)
	storedDig := pushBlob(t, o.URL(), repo, stored)

	// Upload U: one chunk committed before the outage.
	unfinished := randomBytes(3<<20+5, 6)
	uDig := digestOf(unfinished)
	half := int64(1<<20 + 3)
	uLoc := startUpload(t, o.URL(), repo)
	r := patchChunk(t, uLoc.String(), 0, unfinished[:half], "PATCH U's first chunk before the outage")
	uLoc = location(t, o.URL(), r)

	// Upload V: a chunk in flight when the namenode stops. It is longer
	// than two blocks, so the origin needs the namenode to go on writing.
	inflight := randomBytes(2*testBlockSize+5<<20, 7)
	vDig := digestOf(inflight)
	vLoc := startUpload(t, o.URL(), repo)
	type result struct {
		r   reply
		err error
	}
	done := make(chan result, 1)
	before := rbwSizes(t, c)
	pr, pw := io.Pipe()
	go func() {
		r, err := trySend(t, http.MethodPatch, vLoc.String(), pr, int64(len(inflight)), chunkHeader(0, int64(len(inflight))))
		pr.CloseWithError(errors.New("request over"))
		done <- result{r, err}
	}()
	const early = 4 << 20
	go func() { _, _ = pw.Write(inflight[:early]) }()
	waitForHDFSWrite(t, c, before, 1<<20, func() error {
		select {
		case res := <-done:
			done <- res
			return fmt.Errorf("V's PATCH ended before the outage: %v %v", res.r, res.err)
		default:
			return nil
		}
	})
	p.done("push a blob, start upload U, stream part of V")

	if err := c.StopNameNode(); err != nil {
		t.Fatal(err)
	}
	down := true
	t.Cleanup(func() {
		// Later tests share the cluster.
		if down {
			if err := c.StartNameNode(); err != nil {
				t.Errorf("restarting the namenode after a failed test: %v", err)
			}
		}
	})
	p.done("stop the namenode")

	go func() {
		_, err := pw.Write(inflight[early:])
		pw.CloseWithError(err)
	}()
	res := <-done
	if res.err != nil {
		t.Errorf("V's PATCH in flight when the namenode stopped: no response: %v", res.err)
	} else {
		wantUnavailable(t, res.r, "V's PATCH in flight when the namenode stopped")
	}
	p.done("V's chunk in flight is refused")

	pull := send(t, http.MethodGet, o.URL()+"/v2/"+repo+"/blobs/"+storedDig, nil, 0, nil)
	wantUnavailable(t, pull, "GET a stored blob")
	if head := send(t, http.MethodHead, o.URL()+"/v2/"+repo+"/blobs/"+storedDig, nil, 0, nil); head.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("HEAD a stored blob: got %s, want 503", head.Status)
	}
	push := send(t, http.MethodPost, o.URL()+"/v2/"+repo+"/blobs/uploads/", nil, 0, nil)
	wantUnavailable(t, push, "POST to start an upload")
	rest := unfinished[half:]
	finish := send(t, http.MethodPut, withDigest(uLoc, uDig), bytes.NewReader(rest), int64(len(rest)), chunkHeader(half, int64(len(rest))))
	wantUnavailable(t, finish, "PUT finishing U with its last chunk")
	mono := randomBytes(1<<20, 8)
	monoPush := send(t, http.MethodPost, o.URL()+"/v2/"+repo+"/blobs/uploads/?digest="+digestOf(mono), bytes.NewReader(mono), int64(len(mono)), nil)
	wantUnavailable(t, monoPush, "monolithic POST")
	waitReady(t, o.URL(), false)
	p.done("requests during the outage")

	if err := c.StartNameNode(); err != nil {
		t.Fatal(err)
	}
	down = false
	p.done("start the namenode")
	waitReady(t, o.URL(), true)
	p.done("origin ready again")

	// Once ready, every HDFS client the origin pools serves, including
	// those idle through the outage: HEAD the stored blob more times than
	// there are clients, so that each of them answers at least once.
	for i := 0; i < 2*hdfsdriver.DefaultConfig().Clients; i++ {
		r := send(t, http.MethodHead, o.URL()+"/v2/"+repo+"/blobs/"+storedDig, nil, 0, nil)
		wantStatus(t, r, http.StatusOK, fmt.Sprintf("HEAD %d of the stored blob once the origin is ready again", i+1))
	}

	for _, d := range []string{uDig, vDig, digestOf(mono)} {
		r := send(t, http.MethodHead, o.URL()+"/v2/"+repo+"/blobs/"+d, nil, 0, nil)
		wantStatus(t, r, http.StatusNotFound, "HEAD of a blob whose upload the outage interrupted")
	}
	st := send(t, http.MethodGet, uLoc.String(), nil, 0, nil)
	wantStatus(t, st, http.StatusNoContent, "U's status after the outage")
	wantRange(t, st, half, "U's status after the outage")
	st = send(t, http.MethodGet, vLoc.String(), nil, 0, nil)
	wantStatus(t, st, http.StatusNoContent, "V's status after the outage")
	wantRange(t, st, 0, "V's status after the outage (its chunk was never committed)")

	r = patchChunk(t, uLoc.String(), half, rest, "PATCH U's last chunk after the outage")
	r = send(t, http.MethodPut, withDigest(location(t, o.URL(), r), uDig), nil, 0, nil)
	wantStatus(t, r, http.StatusCreated, "PUT finishing U after the outage")
	wantBlob(t, o.URL(), repo, unfinished)
	wantBlob(t, o.URL(), repo, stored)
	fresh := randomBytes(2<<20+1, 9)
	pushBlob(t, o.URL(), repo, fresh)
	wantBlob(t, o.URL(), repo, fresh)
	p.done("finish U, pull, push and pull again")
}

// wantUnavailable wants 503 with an OCI error body whose code is
// UNAVAILABLE and whose message names HDFS, so that an operator reading a
// client's error knows where to look. It does not stop the test, so that
// one run reports every request answered wrongly.
func wantUnavailable(t *testing.T, r reply, what string) {
	t.Helper()
	if r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("%s: got %s, want 503 Service Unavailable\n%s", what, r.Status, r)
		return
	}
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || len(body.Errors) == 0 {
		t.Errorf("%s: 503 without an OCI error body (%v): %s", what, err, r)
		return
	}
	if e := body.Errors[0]; e.Code != "UNAVAILABLE" || !strings.Contains(strings.ToLower(e.Message), "hdfs") {
		t.Errorf("%s: error %s %q, want UNAVAILABLE with a message naming HDFS", what, e.Code, e.Message)
	}
}

// waitReady polls /readyz until it answers 200 (ready) or anything else
// (not ready). The origin probes storage at most once a second, and a
// namenode takes a few heartbeats to be usable after a restart.
func waitReady(t *testing.T, base string, ready bool) {
	t.Helper()
	var last string
	if err := eventually.Wait(2*time.Minute, func() bool {
		r, err := trySend(t, http.MethodGet, base+"/readyz", nil, 0, nil)
		if err != nil {
			last = err.Error()
			return false
		}
		last = r.String()
		return (r.StatusCode == http.StatusOK) == ready
	}); err != nil {
		t.Fatalf("waiting for /readyz to turn %s: %v; last answer: %s", map[bool]string{true: "ready", false: "not ready"}[ready], err, last)
	}
}
