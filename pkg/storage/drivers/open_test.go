package drivers

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)

	cases := []struct {
		url        string
		wantDriver string
		// onDisk is where a file written as /probe must land, relative to dir.
		onDisk  string
		wantErr string
	}{
		{url: "file://" + filepath.Join(dir, "a"), wantDriver: "filesystem", onDisk: "a/probe"},
		{url: "file://localhost" + filepath.Join(dir, "b"), wantDriver: "filesystem", onDisk: "b/probe"},
		{url: filepath.Join(dir, "c"), wantDriver: "filesystem", onDisk: "c/probe"},
		{url: "relative/d", wantDriver: "filesystem", onDisk: "relative/d/probe"},
		{url: "./e%20f", wantDriver: "filesystem", onDisk: "e%20f/probe"},
		{url: "inmemory://", wantDriver: "inmemory"},
		{url: "inmemory:///", wantDriver: "inmemory"},
		// Port 1 refuses at once: Open reaches the hdfs driver, which reports the outage.
		{url: "hdfs://127.0.0.1:1/shoal?user=shoal", wantErr: "HDFS (namenodes 127.0.0.1:1) unavailable"},
		{url: "s3://bucket/prefix?region=eu-west-1", wantDriver: "s3"},
		{url: "s3://bucket?endpoint=http://127.0.0.1:1&pathStyle=true", wantDriver: "s3"},
		{url: "s3://key:secret@bucket/prefix?region=eu-west-1", wantErr: "credentials never go in the URL"},
		{url: "s3://bucket/prefix?region=eu-west-1&accessKey=x", wantErr: `unknown parameter "accessKey"`},
		{url: "s3:///prefix?region=eu-west-1", wantErr: "no bucket"},
		{url: "azure://container/prefix?account=acct", wantDriver: "azure"},
		{url: "azure://container/prefix?account=acct&key=x", wantErr: `unknown parameter "key"`},
		{url: "gs://bucket/prefix?endpoint=http://127.0.0.1:1", wantDriver: "gcs"},
		{url: "gs://bucket/prefix?endpoint=ftp://x", wantErr: "not an http:// or https:// URL"},
		{url: "s3://bucket/prefix?region=eu-west-1&redirect=true", wantDriver: "s3"},
		{url: "s3://bucket/prefix?region=eu-west-1&redirect=yes", wantErr: `parameter redirect="yes"`},
		{url: "azure://container/prefix?account=acct&redirect=true", wantDriver: "azure"},
		{url: "azure://container/prefix?account=acct&redirect=1&endpoint=https://acct.example", wantDriver: "azure"},
		{url: "azure://container/prefix?account=acct&redirect=maybe", wantErr: `parameter redirect="maybe"`},
		{url: "gs://bucket/prefix?endpoint=http://127.0.0.1:1&redirect=false", wantDriver: "gcs"},
		{url: "gs://bucket/prefix?redirect=no", wantErr: `parameter redirect="no"`},
		{url: "swift://container/prefix", wantErr: `unsupported scheme "swift"; supported: file:///abs/path`},
		{url: "", wantErr: "empty URL"},
		{url: "file://host/x", wantErr: "has no host"},
		{url: "file://", wantErr: "no path"},
		{url: "inmemory://somewhere", wantErr: "takes no host or path"},
	}
	for _, tc := range cases {
		t.Run(tc.url, func(t *testing.T) {
			d, err := Open(context.Background(), tc.url)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Open(%q) error = %v, want one containing %q", tc.url, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%q): %v", tc.url, err)
			}
			if d.Name() != tc.wantDriver {
				t.Fatalf("Open(%q) gave the %s driver, want %s", tc.url, d.Name(), tc.wantDriver)
			}
			if tc.onDisk == "" {
				return
			}
			if err := d.PutContent(context.Background(), "/probe", []byte("x")); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, tc.onDisk)); err != nil {
				t.Errorf("a file written through Open(%q) is not at %s: %v", tc.url, tc.onDisk, err)
			}
		})
	}
}

func TestOpenInmemoryGivesSeparateStores(t *testing.T) {
	ctx := context.Background()
	a, err := Open(ctx, "inmemory://")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(ctx, "inmemory://")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.PutContent(ctx, "/x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(ctx, "/x"); err == nil {
		t.Error("a file written to one inmemory:// store is visible in another")
	}
}

// TestOpenRedirectNeedsASigningKey: on a plain-HTTP endpoint (an emulator)
// the Azure and GCS drivers sign redirect URLs with a key of their own, so
// redirect=true without one is refused when the driver opens, not at the
// first pull.
func TestOpenRedirectNeedsASigningKey(t *testing.T) {
	t.Setenv("AZURE_STORAGE_KEY", "")
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	for url, want := range map[string]string{
		"azure://container/prefix?account=acct&endpoint=http://127.0.0.1:1/acct&redirect=true": "set AZURE_STORAGE_KEY",
		"gs://bucket/prefix?endpoint=http://127.0.0.1:1&redirect=true":                         "set GOOGLE_APPLICATION_CREDENTIALS",
	} {
		if _, err := Open(context.Background(), url); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q) error = %v, want one saying %q", url, err, want)
		}
	}
}
