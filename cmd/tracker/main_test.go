package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-dev/shoal/pkg/tracker"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

func TestConfigFileOverlaysDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tracker.yaml")
	yaml := "listen: 0.0.0.0:9001\ntracker:\n  announceInterval: 10s\n  peerTTL: 40s\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	if err := cfg.load(path); err != nil {
		t.Fatalf("load: %v", err)
	}
	if cfg.Listen != "0.0.0.0:9001" || cfg.Tracker.AnnounceInterval != 10*time.Second || cfg.Tracker.PeerTTL != 40*time.Second {
		t.Fatalf("file settings not applied: %+v", cfg)
	}
	if cfg.MetricsListen != DefaultConfig().MetricsListen || cfg.Tracker.DefaultPeers != tracker.DefaultConfig().DefaultPeers {
		t.Fatalf("settings absent from the file lost their defaults: %+v", cfg)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
}

func TestConfigRejects(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"misspelt field", "listne: :1\n", "field listne not found"},
		{"ttl below interval", "tracker:\n  announceInterval: 60s\n  peerTTL: 30s\n", "peerTTL"},
		{"key without cert", "tls:\n  key: k.pem\n", "both cert and key"},
		{"CA without cert", "tls:\n  ca: ca.pem\n", "tls.ca (mTLS) needs"},
		{"the old clientCA key", "tls:\n  clientCA: ca.pem\n", "field clientCA not found"},
		{"serverName", "tls:\n  cert: c.pem\n  key: k.pem\n  serverName: x\n", "does not apply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tracker.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := DefaultConfig()
			err := cfg.load(path)
			if err == nil {
				err = cfg.validate()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestServeAnswersAndShutsDown(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(g, h string) { addrs <- [2]string{g, h} })
	}()
	var grpcAddr, httpAddr string
	select {
	case a := <-addrs:
		grpcAddr, httpAddr = a[0], a[1]
	case err := <-done:
		t.Fatalf("serve ended before listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not start listening within 10s")
	}

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	digest := "sha256:" + strings.Repeat("ab", 32)
	if _, err := trackerpb.NewTrackerClient(conn).Announce(ctx, &trackerpb.AnnounceRequest{Digest: digest, PeerId: "a", Addr: "127.0.0.1:7002"}); err != nil {
		t.Fatalf("Announce: %v", err)
	}

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(p); code != http.StatusOK {
			t.Errorf("GET %s = %d, want 200", p, code)
		}
	}
	code, body := get("/metrics")
	for _, want := range []string{"shoal_tracker_peers 1", `shoal_tracker_announces_total{event="none",result="ok"} 1`, "shoal_tracker_announce_duration_seconds_bucket"} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET /metrics (status %d) lacks %q", code, want)
		}
	}

	code, body = get("/debug/peers?digest=" + digest)
	if code != http.StatusOK || !strings.Contains(body, `"id":"a","addr":"127.0.0.1:7002"`) {
		t.Errorf("GET /debug/peers = %d %s, want the announced peer", code, body)
	}
	if code, _ := get("/debug/peers?digest=nope"); code != http.StatusBadRequest {
		t.Errorf("GET /debug/peers with a bad digest = %d, want 400", code)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve after shutdown: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not return within 15s of shutdown")
	}
}

// TestDeployedConfigIsTheDefault keeps deploy/tracker.yaml, which documents
// every key with its default, true to the code.
func TestDeployedConfigIsTheDefault(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.load("../../deploy/tracker.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if cfg != DefaultConfig() {
		t.Errorf("deploy/tracker.yaml differs from DefaultConfig:\n file: %+v\n code: %+v", cfg, DefaultConfig())
	}
}
