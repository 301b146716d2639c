package auth_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// client sends requests with the request-target exactly as written, over a
// fresh TCP connection each: Go's own client would clean dot segments and
// re-encode the path, and the point is to see what a server does with a
// path nobody cleaned.
type client struct {
	addr string // host:port of the server
	from string // local address to connect from; empty: the kernel's choice (127.0.0.1)
}

// answer is a response, read whole.
type answer struct {
	addr           string // the server asked
	method, target string
	authz          string // the Authorization sent
	status         int
	header         http.Header
	body           []byte
}

func (a answer) String() string {
	return fmt.Sprintf("%s %s: %d %s", a.method, a.target, a.status, bytes.TrimSpace(a.body[:min(len(a.body), 300)]))
}

// manifestAccept is what dockerd sends when it resolves a reference.
const manifestAccept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, " +
	"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

// do sends method target with the Authorization value authz (none when
// empty) and any extra "Key: value" header lines.
func (c client) do(t *testing.T, method, target, authz string, extra ...string) answer {
	t.Helper()
	a, err := c.send(t.Context(), method, target, authz, extra...)
	if err != nil {
		t.Fatalf("%s %s to %s: %v", method, target, c.addr, err)
	}
	return a
}

func (c client) send(ctx context.Context, method, target, authz string, extra ...string) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	d := net.Dialer{}
	if c.from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(c.from)}
	}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return answer{}, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nAccept: %s\r\nUser-Agent: shoal-e2e-auth\r\n", method, target, c.addr, manifestAccept)
	if authz != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", authz)
	}
	if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		b.WriteString("Content-Length: 0\r\n")
	}
	for _, h := range extra {
		fmt.Fprintf(&b, "%s\r\n", h)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return answer{}, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		return answer{}, fmt.Errorf("reading the response: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, fmt.Errorf("reading the response body: %w", err)
	}
	return answer{addr: c.addr, method: method, target: target, authz: authz, status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// basic is the Basic Authorization value of user with their password.
func basic(user string) string { return basicWith(user, passwords[user]) }

func basicWith(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

func bearer(token string) string { return "Bearer " + token }

// ociCode is the first error code of an OCI error body; empty when the
// body is not one (a HEAD answer has no body).
func (a answer) ociCode() string {
	var body struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(a.body, &body) != nil || len(body.Errors) == 0 {
		return ""
	}
	return body.Errors[0].Code
}

// challenge is what a 401 must carry: a Bearer challenge naming the token
// endpoint of the server asked (the origin's own; an agent names its own,
// which proxies to the origin's) and the origin's service, the scope when
// one is given, and error="insufficient_scope" when a token was presented
// that lacks the scope.
type challenge struct {
	scope        string
	insufficient bool
}

// assertUnauthorized checks a 401 UNAUTHORIZED with the challenge, whose
// realm is the token endpoint at realmAddr.
func assertUnauthorized(t *testing.T, a answer, realmAddr string, want challenge) {
	t.Helper()
	if a.status != http.StatusUnauthorized {
		t.Errorf("%v\nwant 401 Unauthorized", a)
		return
	}
	if code := a.ociCode(); a.method != http.MethodHead && code != "UNAUTHORIZED" {
		t.Errorf("%v\nwant OCI code UNAUTHORIZED, got %q", a, code)
	}
	ch := a.header.Get("WWW-Authenticate")
	params := map[string]string{}
	rest, ok := strings.CutPrefix(ch, "Bearer ")
	if ok {
		params = parseChallenge(rest)
	}
	wantParams := map[string]string{
		"realm":   "http://" + realmAddr + "/auth/token",
		"service": "shoal",
	}
	if want.scope != "" {
		wantParams["scope"] = want.scope
	}
	if want.insufficient {
		wantParams["error"] = "insufficient_scope"
	}
	for k, v := range wantParams {
		if params[k] != v {
			t.Errorf("%v\nWWW-Authenticate %q: %s=%q, want %q", a, ch, k, params[k], v)
		}
	}
	if _, ok := params["error"]; ok && !want.insufficient {
		t.Errorf("%v\nWWW-Authenticate %q names an error where none was expected", a, ch)
	}
}

// assertForbidden checks a 403 DENIED: a user who proved who they are and
// may not do this (better credentials would not help, so no challenge is
// needed).
func assertForbidden(t *testing.T, a answer) {
	t.Helper()
	if a.status != http.StatusForbidden {
		t.Errorf("%v\nwant 403 Forbidden", a)
		return
	}
	if code := a.ociCode(); a.method != http.MethodHead && code != "DENIED" {
		t.Errorf("%v\nwant OCI code DENIED, got %q", a, code)
	}
}

// parseChallenge reads the auth-params of a challenge: k="v",k="v".
func parseChallenge(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		s = strings.TrimLeft(s, " ,")
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := strings.Index(rest[1:], `"`)
			if end < 0 {
				break
			}
			v, s = rest[1:1+end], rest[2+end:]
		} else {
			v, s, _ = strings.Cut(rest, ",")
		}
		out[strings.TrimSpace(k)] = v
	}
	return out
}

// assertRefused checks that a request was not served: a 4xx or 5xx.
func assertRefused(t *testing.T, a answer) {
	t.Helper()
	if a.status < 400 {
		t.Errorf("%v\nwant a refusal (4xx or 5xx)", a)
	}
}

// assertNoLeak checks that an answer (a refusal, or an upload session
// started instead of a mount) tells nothing of the images: no byte of a
// manifest, config or layer in the body, no digest the request did not
// name itself (a tag resolved, a manifest's layers) in the body or any
// header, and no Docker-Content-Digest at all.
func assertNoLeak(t *testing.T, a answer, images ...*image) {
	t.Helper()
	if d := a.header.Get("Docker-Content-Digest"); d != "" {
		t.Errorf("%v\nthe refusal carries Docker-Content-Digest %s", a, d)
	}
	var headers strings.Builder
	for k, vs := range a.header {
		fmt.Fprintf(&headers, "%s: %s\n", k, strings.Join(vs, ", "))
	}
	for _, im := range images {
		for _, s := range im.secrets() {
			if len(a.body) > 0 && bytes.Contains(a.body, s) {
				t.Errorf("%v\nthe refusal's body holds %d bytes of %s's content", a, len(s), im.repo)
			}
		}
		digests := []string{im.digest, im.config.digest}
		for _, l := range im.layers {
			digests = append(digests, l.digest)
		}
		for _, d := range digests {
			if strings.Contains(a.target, d) || strings.Contains(a.target, strings.TrimPrefix(d, "sha256:")) {
				continue
			}
			if bytes.Contains(a.body, []byte(d)) || strings.Contains(headers.String(), d) {
				t.Errorf("%v\nthe refusal names %s, a digest of %s the request did not name", a, d, im.repo)
			}
		}
	}
}

// assertSameAnswer checks that two refusals, one about content that exists
// and one about content that does not, cannot be told apart: same status,
// OCI code, challenge, header names and body, once the names that differ
// in the requests (replace: the missing one's to the existing one's) are
// made equal.
func assertSameAnswer(t *testing.T, existing, missing answer, replace ...string) {
	t.Helper()
	norm := strings.NewReplacer(replace...)
	shape := func(a answer) string {
		var keys []string
		for k := range a.header {
			if k != "Date" && k != "Content-Length" {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		return fmt.Sprintf("%d %s\nWWW-Authenticate: %s\nheaders: %v\n%s",
			a.status, a.ociCode(), a.header.Get("WWW-Authenticate"), keys, a.body)
	}
	if got, want := norm.Replace(shape(missing)), shape(existing); got != want {
		t.Errorf("the refusal tells existing content from missing content:\nexisting %s %s:\n%s\nmissing %s %s:\n%s",
			existing.method, existing.target, want, missing.method, missing.target, got)
	}
}

// assertAnswersAsOrigin checks that the agent refused a request as the
// origin (o) refuses the same one: same status, OCI code and challenge,
// but for its realm, which is the agent's own token endpoint.
func assertAnswersAsOrigin(t *testing.T, o client, who string, a answer) {
	t.Helper()
	want := o.do(t, a.method, a.target, a.authz)
	wantChallenge := strings.Replace(want.header.Get("WWW-Authenticate"),
		`realm="http://`+o.addr+`/auth/token"`, `realm="http://`+a.addr+`/auth/token"`, 1)
	if a.status != want.status || a.ociCode() != want.ociCode() || a.header.Get("WWW-Authenticate") != wantChallenge {
		t.Errorf("%s: the agent's refusal differs from the origin's:\nagent:  %v\n  WWW-Authenticate: %s\norigin: %v\n  WWW-Authenticate: %s (the agent's realm expected instead)",
			who, a, a.header.Get("WWW-Authenticate"), want, want.header.Get("WWW-Authenticate"))
	}
}
