// Package ociapitest holds what the tests of every server behind
// ociapi.CanonicalPath share: the request targets it must refuse, and a
// way to send a target over the wire exactly as written.
package ociapitest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// NonCanonicalTargets returns request targets that a path cleaner, a
// proxy or a storage path could resolve to another repository than the
// one they name, or to an endpoint beside the registry API: dot segments,
// percent-encoded '/', '.' or '\', doubled slashes, backslashes and an
// encoded NUL. Each travels over HTTP/1.1 as written, and a server behind
// ociapi.CanonicalPath answers each with 400 NAME_INVALID, never with a
// redirect to the cleaned path. Cleaned, most of them name private/app,
// so a test that stores an image there sees whether any reached it.
// The slice is the caller's own.
func NonCanonicalTargets() []string {
	return []string{
		"/v2/public/../private/app/manifests/v1",
		"/v2/../v2/private/app/tags/list",
		"/v2/./private/app/manifests/v1",
		"/v2/private/app/manifests/..",
		"/v2/public/%2e%2e/private/app/manifests/v1",
		"/v2/public/%2E%2E/private/app/tags/list",
		"/v2/public/.%2e/private/app/blobs/sha256:abc",
		"/v2/private/%2e/app/manifests/v1",
		"/v2/private%2fapp/manifests/v1",
		"/v2/private%2Fapp/blobs/uploads/",
		"/v2//private/app/manifests/v1",
		"/v2/private//app/manifests/v1",
		"/v2/private/app/manifests//v1",
		`/v2/private\app/manifests/v1`,
		"/v2/private%5capp/manifests/v1",
		"/v2/private/app%0a/manifests/v1",
		"/v2/private/app/manifests/v1%00",
		"/v2/public/blobs/uploads/../../../private/app/blobs/uploads/",
		"//v2/private/app/tags/list",
		"/v2/_catalog/..",
		"/./v2/",
		"/metrics/../v2/_catalog",
		"/healthz/..",
	}
}

// RawRequest sends method and target to addr exactly as given (no client
// cleans or re-escapes the target) and returns the answer with its body
// read whole.
func RawRequest(t testing.TB, addr, method, target string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", method, target, addr); err != nil {
		t.Fatalf("%s %s: sending the request: %v", method, target, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, target, err)
	}
	return resp, body
}
