package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// adminStub answers /admin/v1/auth/check as the origin does, from a table
// of decisions by query, and requires root's Basic credentials when
// password is set. It records the last query.
type adminStub struct {
	password  string
	decisions map[string]decision
	lastQuery string
}

func (s *adminStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.password != "" {
		if u, p, ok := r.BasicAuth(); !ok || u != "root" || p != s.password {
			w.Header().Set("WWW-Authenticate", `Basic realm="shoal admin"`)
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "the admin API needs credentials allowed the admin action"})
			return
		}
	}
	if r.URL.Path != authCheckPath {
		http.NotFound(w, r)
		return
	}
	s.lastQuery = r.URL.RawQuery
	d, ok := s.decisions[r.URL.Query().Get("repository")]
	if !ok {
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "unknown repository in the stub"})
		return
	}
	_ = json.NewEncoder(w).Encode(d)
}

func TestAuthCheckPrintsTheDecisionAndRule(t *testing.T) {
	stub := &adminStub{decisions: map[string]decision{
		"path2/app":  {Allowed: true, Rule: 1, Reason: "rule 1 allows pull on path2/app to authenticated"},
		"builds/app": {Allowed: false, Rule: -1, Reason: "no rule matches: denied"},
	}}
	ts := httptest.NewServer(stub)
	defer ts.Close()
	t.Setenv("SHOAL_ADMIN_USER", "")

	var out bytes.Buffer
	err := run(t.Context(), []string{"--admin", ts.URL, "auth", "check", "--user", "bob", "--repository", "path2/app", "--action", "pull"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), `allowed: user "bob" may pull "path2/app" (rule 1: rule 1 allows pull on path2/app to authenticated)`+"\n"; got != want {
		t.Errorf("output\n got  %q\n want %q", got, want)
	}
	if stub.lastQuery != "action=pull&repository=path2%2Fapp&user=bob" {
		t.Errorf("query sent: %s", stub.lastQuery)
	}

	out.Reset()
	err = run(t.Context(), []string{"--admin", ts.URL, "auth", "check", "--repository", "builds/app", "--action", "push",
		"--addr", "10.0.0.7", "--cert", "build-2", "--cert", "laptop"}, &out)
	if !errors.Is(err, errDenied) {
		t.Errorf("a denial returned %v, want errDenied (exit status 1)", err)
	}
	if got, want := out.String(), `denied: anonymous from 10.0.0.7 with certificate build-2, laptop may not push "builds/app" (no rule: no rule matches: denied)`+"\n"; got != want {
		t.Errorf("output\n got  %q\n want %q", got, want)
	}
	if !strings.Contains(stub.lastQuery, "addr=10.0.0.7") || !strings.Contains(stub.lastQuery, "cert=build-2&cert=laptop") {
		t.Errorf("query sent: %s, want addr and both certs", stub.lastQuery)
	}

	out.Reset()
	err = run(t.Context(), []string{"--admin", ts.URL, "auth", "check", "--json", "--user", "bob", "--repository", "path2/app", "--action", "pull"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	var d decision
	if err := json.Unmarshal(out.Bytes(), &d); err != nil || !d.Allowed || d.Rule != 1 {
		t.Errorf("--json printed %q (%v), want the origin's JSON", out.String(), err)
	}

	if err := run(t.Context(), []string{"--admin", ts.URL, "auth", "check", "--user", "bob"}, &out); err == nil {
		t.Error("auth check without --repository and --action ran")
	}
}

func TestAdminCredentialsComeFromTheEnvironment(t *testing.T) {
	stub := &adminStub{password: "s3cret", decisions: map[string]decision{"path1/app": {Allowed: true, Rule: 0, Reason: "public"}}}
	ts := httptest.NewServer(stub)
	defer ts.Close()
	args := []string{"--admin", ts.URL, "auth", "check", "--repository", "path1/app", "--action", "pull"}
	var out bytes.Buffer

	t.Setenv("SHOAL_ADMIN_USER", "")
	t.Setenv("SHOAL_ADMIN_PASSWORD", "")
	err := run(t.Context(), args, &out)
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "SHOAL_ADMIN_PASSWORD") {
		t.Errorf("without credentials: %v, want the 401 and how to give credentials", err)
	}
	err = run(t.Context(), append([]string{"--admin-user", "root"}, args...), &out)
	if err == nil || !strings.Contains(err.Error(), "SHOAL_ADMIN_PASSWORD") {
		t.Errorf("--admin-user without a password: %v, want an error naming SHOAL_ADMIN_PASSWORD", err)
	}
	t.Setenv("SHOAL_ADMIN_PASSWORD", "s3cret")
	if err := run(t.Context(), append([]string{"--admin-user", "root"}, args...), &out); err != nil {
		t.Errorf("--admin-user root with $SHOAL_ADMIN_PASSWORD: %v", err)
	}
	t.Setenv("SHOAL_ADMIN_USER", "root")
	if err := run(t.Context(), args, &out); err != nil {
		t.Errorf("$SHOAL_ADMIN_USER root with $SHOAL_ADMIN_PASSWORD: %v", err)
	}
}
