package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestDirsForTheUser(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	none := env(nil)
	tests := []struct {
		name      string
		euid      int
		getenv    func(string) string
		home      string
		data, cac string
	}{
		{"root gets the system paths", 0, env(map[string]string{"XDG_DATA_HOME": "/x"}), "/root", "/var/lib/shoal", "/var/cache/shoal-agent"},
		{"a user gets the XDG defaults", 1000, none, "/home/ann", "/home/ann/.local/share/shoal", "/home/ann/.cache/shoal/agent"},
		{"XDG variables are followed", 1000, env(map[string]string{"XDG_DATA_HOME": "/d", "XDG_CACHE_HOME": "/c"}), "/home/ann", "/d/shoal", "/c/shoal/agent"},
		{"relative XDG variables are ignored", 1000, env(map[string]string{"XDG_DATA_HOME": "d", "XDG_CACHE_HOME": "c"}), "/home/ann", "/home/ann/.local/share/shoal", "/home/ann/.cache/shoal/agent"},
		{"no home and no XDG: the system paths", 1000, none, "", "/var/lib/shoal", "/var/cache/shoal-agent"},
		{"home / (a container's user) is no home", 65532, none, "/", "/var/lib/shoal", "/var/cache/shoal-agent"},
		{"a systemd unit's dynamic user with a CacheDirectory", 61234, env(map[string]string{"CACHE_DIRECTORY": "/var/cache/shoal-agent"}), "/", "/var/lib/shoal", "/var/cache/shoal-agent"},
		{"a systemd unit's user with a StateDirectory", 998, env(map[string]string{"STATE_DIRECTORY": "/var/lib/shoal"}), "/var/lib/shoal", "/var/lib/shoal", "/var/cache/shoal-agent"},
	}
	for _, tt := range tests {
		d := dirsFor(tt.euid, tt.getenv, tt.home)
		if got := d.Data("/var/lib/shoal", ""); got != tt.data {
			t.Errorf("%s: Data = %q, want %q", tt.name, got, tt.data)
		}
		if got := d.Cache("/var/cache/shoal-agent", "agent"); got != tt.cac {
			t.Errorf("%s: Cache = %q, want %q", tt.name, got, tt.cac)
		}
	}
}

func TestLockDirRefusesASecondClaimNamingTheHolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache") // created by LockDir
	release, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, LockFile))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file holds %q (%v), want this process's id %d", b, err, os.Getpid())
	}

	_, err = LockDir(dir)
	var inUse *DirInUseError
	if !errors.As(err, &inUse) || inUse.PID != os.Getpid() || inUse.Dir != dir {
		t.Fatalf("second LockDir = %v, want a DirInUseError naming %s and pid %d", err, dir, os.Getpid())
	}
	if want := "is in use by process " + strconv.Itoa(os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}

	if err := release(); err != nil {
		t.Fatal(err)
	}
	again, err := LockDir(dir)
	if err != nil {
		t.Fatalf("LockDir after release: %v", err)
	}
	if err := again(); err != nil {
		t.Fatal(err)
	}
}
