package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/adminapi"
	"github.com/shoal-dev/shoal/pkg/origin/seeder"
)

// An origin without a seeder says so on both cluster routes, instead of
// an empty cluster that looks healthy or a preheat that does nothing.
func TestClusterRoutesWithTheSeederOff(t *testing.T) {
	off := seeding{}
	cfg := seeder.DefaultConfig()

	rec := httptest.NewRecorder()
	clusterHandler(off, cfg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, adminapi.ClusterPath+"?digest=sha256:"+strings.Repeat("a", 64), nil))
	var st adminapi.ClusterStatus
	if err := json.Unmarshal(rec.Body.Bytes(), &st); rec.Code != http.StatusOK || err != nil {
		t.Fatalf("GET cluster: %d %s (%v)", rec.Code, rec.Body, err)
	}
	if st.Seeder || len(st.Members) != 0 || len(st.Owners) != 0 || st.Members == nil || st.Trackers == nil {
		t.Errorf("cluster status without a seeder: %+v; want seeder false, empty (not null) members and trackers, no owners", st)
	}

	rec = httptest.NewRecorder()
	clusterHandler(off, cfg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, adminapi.ClusterPath+"?digest=nope", nil))
	if rec.Code != http.StatusBadRequest {
		t.Errorf("GET cluster with a bad digest: %d, want 400", rec.Code)
	}

	rec = httptest.NewRecorder()
	preheatHandler(nil, off).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, adminapi.PreheatPath+"?repository=a&reference=v1", nil))
	if rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), "no seeder") {
		t.Errorf("POST preheat without a seeder: %d %s; want 409 saying the origin runs no seeder", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	preheatHandler(nil, off).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, adminapi.PreheatPath, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET preheat: %d, want 405", rec.Code)
	}
}
