package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-dev/shoal/internal/adminapi"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/gc"
	"github.com/shoal-dev/shoal/pkg/origin/seeder"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// adminAuthConfig has root (admin), bob (a user without admin), path
// rules, and machine rules for auth check: builds/** pushed from
// 10.0.0.0/24 or by the machine with certificate build-1.
func adminAuthConfig(t *testing.T) auth.Config {
	t.Helper()
	var lines []string
	for _, u := range []string{"root", "bob"} {
		h, err := bcrypt.GenerateFromPassword([]byte(u+"-password"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, u+":"+string(h))
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := auth.DefaultConfig()
	cfg.Htpasswd = path
	cfg.Rules = []auth.Rule{
		{Repositories: []string{"path1/**"}, Subjects: []string{"anonymous"}, Actions: []auth.Action{auth.Pull}},
		{Repositories: []string{"path2/**"}, Subjects: []string{"authenticated"}, Actions: []auth.Action{auth.Pull}},
		{Repositories: []string{"builds/**"}, Subjects: []string{"cidr:10.0.0.0/24"}, Actions: []auth.Action{auth.Push}},
		{Repositories: []string{"builds/**"}, Subjects: []string{"cert:build-1"}, Actions: []auth.Action{auth.Push}},
		{Repositories: []string{"*"}, Subjects: []string{"user:root"}, Actions: []auth.Action{auth.Admin}},
	}
	return cfg
}

func newTestAuthz(t *testing.T, cfg auth.Config) *auth.Authorizer {
	t.Helper()
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(cfg, auth.Options{Key: key, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// serveAdmin serves the admin API (a real garbage collector on in-memory
// storage behind it) on a loopback port, as startAdmin does, and returns
// its port.
func serveAdmin(t *testing.T, authz *auth.Authorizer, extraHosts ...string) string {
	t.Helper()
	runner, err := gc.NewRunner(inmemory.New(), gc.DefaultConfig(), gc.RunnerOptions{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := adminHandler(ln.Addr(), "127.0.0.1:0", extraHosts, adminRoutes{gc: gc.NewAdminHandler(runner), cluster: clusterHandler(seeding{}, seeder.DefaultConfig())}, authz, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// adminRequest sends method path to the admin API on port with the given
// Host, and header pairs; it returns the status and body.
func adminRequest(t *testing.T, port, method, path, host string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, "http://127.0.0.1:"+port+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestAdminAPIRefusesForeignHostsAndOrigins: a web page cannot drive the
// admin API, whether or not access control is on: by DNS rebinding its
// requests carry the attacker's Host, by a cross-site form its Origin.
func TestAdminAPIRefusesForeignHostsAndOrigins(t *testing.T) {
	for _, authOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("auth=%v", authOn), func(t *testing.T) {
			var authz *auth.Authorizer
			var creds []string
			if authOn {
				authz = newTestAuthz(t, adminAuthConfig(t))
				creds = []string{"Authorization", basicAuth("root", "root-password")}
			}
			port := serveAdmin(t, authz, "shoal-admin.internal", "ops.example:9999")
			cases := []struct {
				host   string
				origin string
				want   int
			}{
				{"127.0.0.1:" + port, "", 200},
				{"localhost:" + port, "", 200},
				{"LOCALHOST:" + port, "", 200},
				{"[::1]:" + port, "", 200},
				{"shoal-admin.internal:" + port, "", 200},
				{"ops.example:9999", "", 200},
				{"127.0.0.1:" + port, "http://127.0.0.1:" + port, 200},
				{"localhost:" + port, "http://localhost:" + port, 200},
				{"evil.example:" + port, "", 403},
				{"rebind.evil.example:" + port, "", 403},
				{"127.0.0.1:1", "", 403},
				{"shoal-admin.internal", "", 403}, // port 80: not this listener
				{"ops.example:" + port, "", 403},
				{"127.0.0.1:" + port, "http://evil.example", 403},
				{"127.0.0.1:" + port, "http://evil.example:" + port, 403},
				{"127.0.0.1:" + port, "null", 403},
				{"127.0.0.1:" + port, "http://127.0.0.1:1", 403},
			}
			for _, c := range cases {
				for _, method := range []string{"GET", "DELETE"} {
					hdr := creds
					if c.origin != "" {
						hdr = append(append([]string{}, creds...), "Origin", c.origin)
					}
					status, body, _ := adminRequest(t, port, method, adminGCPath, c.host, hdr...)
					if status == http.StatusAccepted { // DELETE: cancel accepted
						status = 200
					}
					if status != c.want {
						t.Errorf("%s with Host %q Origin %q: %d %s, want %d", method, c.host, c.origin, status, body, c.want)
					}
					if c.want == 403 && !strings.Contains(body, `"error"`) {
						t.Errorf("refusal body %s: want a JSON error saying why", body)
					}
				}
			}
			// A refused POST started nothing.
			status, _, _ := adminRequest(t, port, "POST", adminGCPath+"?dryRun=true", "evil.example:"+port, creds...)
			if status != 403 {
				t.Fatalf("POST from a foreign Host: %d, want 403", status)
			}
			_, body, _ := adminRequest(t, port, "GET", adminGCPath, "", creds...)
			var st gc.Status
			if err := json.Unmarshal([]byte(body), &st); err != nil {
				t.Fatal(err)
			}
			if st.Running || st.Last != nil {
				t.Errorf("a refused POST started a collection: %s", body)
			}
		})
	}
}

func basicAuth(user, password string) string {
	req, _ := http.NewRequest("GET", "http://x/", nil)
	req.SetBasicAuth(user, password)
	return req.Header.Get("Authorization")
}

func TestAdminAPINeedsTheAdminAction(t *testing.T) {
	port := serveAdmin(t, newTestAuthz(t, adminAuthConfig(t)))
	cases := []struct {
		who           string
		authorization string
		want          int
	}{
		{"anonymous", "", 401},
		{"root with a wrong password", basicAuth("root", "wrong"), 401},
		{"an unknown user", basicAuth("mallory", "x"), 401},
		{"a forged bearer token", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.", 401},
		{"bob, not an admin", basicAuth("bob", "bob-password"), 403},
		{"root", basicAuth("root", "root-password"), 200},
	}
	for _, c := range cases {
		for _, path := range []string{adminGCPath, adminAuthCheckPath + "?user=bob&repository=path2/app&action=pull", adminapi.ClusterPath} {
			var hdr []string
			if c.authorization != "" {
				hdr = []string{"Authorization", c.authorization}
			}
			status, body, h := adminRequest(t, port, "GET", path, "", hdr...)
			if status != c.want {
				t.Errorf("GET %s as %s: %d %s, want %d", path, c.who, status, body, c.want)
			}
			if c.want == 401 && h.Get("WWW-Authenticate") != `Basic realm="shoal admin"` {
				t.Errorf("401 to %s: WWW-Authenticate %q, want a Basic challenge", c.who, h.Get("WWW-Authenticate"))
			}
		}
	}
}

func TestAuthCheckEndpoint(t *testing.T) {
	port := serveAdmin(t, newTestAuthz(t, adminAuthConfig(t)))
	root := []string{"Authorization", basicAuth("root", "root-password")}
	cases := []struct {
		query   string
		allowed bool
		rule    int
	}{
		{"user=bob&repository=path2/app&action=pull", true, 1},
		{"user=&repository=path2/app&action=pull", false, -1},
		{"repository=path1/app&action=pull", true, 0},
		{"user=bob&repository=path2/app&action=push", false, -1},
		{"repository=builds/app&action=push&addr=10.0.0.7", true, 2},
		{"repository=builds/app&action=push&addr=10.0.1.7", false, -1},
		{"repository=builds/app&action=push&cert=build-2&cert=build-1", true, 3},
		{"user=root&repository=*&action=admin", true, 4},
		{"user=bob&repository=*&action=admin", false, -1},
	}
	for _, c := range cases {
		status, body, _ := adminRequest(t, port, "GET", adminAuthCheckPath+"?"+c.query, "", root...)
		if status != 200 {
			t.Errorf("check %s: %d %s", c.query, status, body)
			continue
		}
		var got checkResult
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("check %s: %s is not the JSON answer: %v", c.query, body, err)
		}
		if got.Allowed != c.allowed || got.Rule != c.rule || got.Reason == "" {
			t.Errorf("check %s = %+v, want allowed %v by rule %d, with a reason", c.query, got, c.allowed, c.rule)
		}
	}
	for _, q := range []string{
		"user=bob&action=pull",
		"user=bob&repository=r&action=fly",
		"user=bob&repository=r&action=pull&addr=10.0.0",
	} {
		if status, body, _ := adminRequest(t, port, "GET", adminAuthCheckPath+"?"+q, "", root...); status != 400 || !strings.Contains(body, `"error"`) {
			t.Errorf("check %s: %d %s, want 400 with an error", q, status, body)
		}
	}

	// Without access control there is nothing to check, and the answer says why.
	open := serveAdmin(t, nil)
	status, body, _ := adminRequest(t, open, "GET", adminAuthCheckPath+"?user=bob&repository=r&action=pull", "")
	if status != 400 || !strings.Contains(body, "access control is off") {
		t.Errorf("check on an open origin: %d %s, want 400 saying access control is off", status, body)
	}
}

func TestAdminHostsOfAnUnspecifiedListener(t *testing.T) {
	hosts, err := adminHostSet(&net.TCPAddr{IP: net.IPv4zero, Port: 5001}, ":5001", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"127.0.0.1:5001", "localhost:5001", "[::1]:5001"} {
		if !hosts[h] {
			t.Errorf("a listener on all addresses refuses %s; hosts %v", h, hosts)
		}
	}
	for _, h := range []string{"0.0.0.0:5001", "example.com:5001", "127.0.0.1:5000"} {
		if hosts[h] {
			t.Errorf("a listener on all addresses answers Host %s", h)
		}
	}
	// A listener on a LAN address answers to it, not to loopback names.
	hosts, err = adminHostSet(&net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 5001}, "10.1.2.3:5001", []string{"admin.internal"})
	if err != nil {
		t.Fatal(err)
	}
	if !hosts["10.1.2.3:5001"] || !hosts["admin.internal:5001"] || hosts["localhost:5001"] {
		t.Errorf("hosts of a LAN listener: %v", hosts)
	}
}
