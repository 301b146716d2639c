package auth

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-dev/shoal/internal/fakeclock"
)

// syncBuffer is a log destination tests read while the code writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// openTestHtpasswd opens path on clock, counting bcrypt comparisons and
// logging to the returned buffer.
func openTestHtpasswd(t *testing.T, path string, clock *fakeclock.Clock) (*htpasswd, *atomic.Int64, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	h, err := openHtpasswd(path, clock.Now, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("openHtpasswd: %v", err)
	}
	var compares atomic.Int64
	h.compare = func(hash, pw []byte) error {
		compares.Add(1)
		return bcrypt.CompareHashAndPassword(hash, pw)
	}
	return h, &compares, logs
}

// replaceFile writes a new version of path with an mtime of its own, as
// an editor or a config-management run would.
func replaceFile(t *testing.T, path string, content []byte, mtime time.Time) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestHtpasswdChecksPasswords(t *testing.T) {
	clock := newTestClock()
	h, _, _ := openTestHtpasswd(t, writeHtpasswd(t, t.TempDir(), map[string]string{"alice": "s3cret", "bob": "hunter2"}), clock)
	if err := h.check("alice", "s3cret"); err != nil {
		t.Errorf("alice with her password: %v", err)
	}
	for _, c := range []struct{ user, pass, why string }{
		{"alice", "hunter2", "another user's password"},
		{"alice", "", "an empty password"},
		{"alice", "s3cret ", "a trailing space"},
		{"carol", "s3cret", "an unknown user"},
		{"", "", "no user"},
	} {
		if err := h.check(c.user, c.pass); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("%s (%q, %q): %v, want ErrBadCredentials", c.why, c.user, c.pass, err)
		}
	}
}

func TestHtpasswdCachesSuccessesOnly(t *testing.T) {
	clock := newTestClock()
	h, compares, _ := openTestHtpasswd(t, writeHtpasswd(t, t.TempDir(), map[string]string{"alice": "s3cret"}), clock)
	for range 10 {
		if err := h.check("alice", "s3cret"); err != nil {
			t.Fatal(err)
		}
	}
	if n := compares.Load(); n != 1 {
		t.Errorf("10 checks of a good password cost %d bcrypts, want 1 (the rest from the cache)", n)
	}
	for range 3 {
		_ = h.check("alice", "wrong")
	}
	if n := compares.Load(); n != 4 {
		t.Errorf("3 wrong passwords cost %d bcrypts in all, want 1+3: failures must not be cached", n)
	}
	clock.Advance(passwordCacheTTL + time.Second)
	if err := h.check("alice", "s3cret"); err != nil {
		t.Fatal(err)
	}
	if n := compares.Load(); n != 5 {
		t.Errorf("after the cache TTL, %d bcrypts in all, want 5: the entry must expire", n)
	}
	if got, want := h.verified.Keys()[0], passwordKey("alice", "s3cret"); got != want {
		t.Error("the cache key is not the SHA-256 of user NUL password")
	}
	if passwordKey("ab", "c") == passwordKey("a", "bc") {
		t.Error(`("ab","c") and ("a","bc") share a cache key`)
	}
}

func TestHtpasswdReloadsWhenTheFileChanges(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	path := writeHtpasswd(t, dir, map[string]string{"alice": "old"})
	h, _, logs := openTestHtpasswd(t, path, clock)
	if err := h.check("alice", "old"); err != nil {
		t.Fatal(err) // and now cached
	}

	newer := writeHtpasswd(t, t.TempDir(), map[string]string{"alice": "new", "bob": "pw"})
	content, err := os.ReadFile(newer)
	if err != nil {
		t.Fatal(err)
	}
	replaceFile(t, path, content, time.Now().Add(time.Minute))

	// Within the check interval the old file still holds.
	clock.Advance(htpasswdCheckInterval / 2)
	if err := h.check("bob", "pw"); err == nil {
		t.Error("the file was looked at again before the check interval passed")
	}
	clock.Advance(htpasswdCheckInterval)
	if err := h.check("bob", "pw"); err != nil {
		t.Errorf("bob, added to the file: %v", err)
	}
	if err := h.check("alice", "new"); err != nil {
		t.Errorf("alice's new password: %v", err)
	}
	if err := h.check("alice", "old"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("alice's old password, cached before the reload: %v, want ErrBadCredentials", err)
	}
	if !strings.Contains(logs.String(), "htpasswd file reloaded") {
		t.Errorf("no reload in the log:\n%s", logs)
	}
}

func TestHtpasswdBrokenReloadKeepsTheLastGoodUsers(t *testing.T) {
	clock := newTestClock()
	path := writeHtpasswd(t, t.TempDir(), map[string]string{"alice": "pw"})
	h, _, logs := openTestHtpasswd(t, path, clock)
	replaceFile(t, path, []byte("alice:$apr1$abc$def\n"), time.Now().Add(time.Minute))
	clock.Advance(2 * htpasswdCheckInterval)
	if err := h.check("alice", "pw"); err != nil {
		t.Errorf("after a broken reload, alice's last good password: %v", err)
	}
	if !strings.Contains(logs.String(), "broken; keeping the users last read") || !strings.Contains(logs.String(), "line 1") {
		t.Errorf("the broken reload is not logged with its line:\n%s", logs)
	}
	// Logged once per change, not at every check.
	clock.Advance(2 * htpasswdCheckInterval)
	_ = h.check("alice", "pw")
	if n := strings.Count(logs.String(), "broken"); n != 1 {
		t.Errorf("the same broken file was logged %d times, want once", n)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * htpasswdCheckInterval)
	if err := h.check("alice", "pw"); err != nil {
		t.Errorf("after the file vanished, alice's last good password: %v", err)
	}
	if !strings.Contains(logs.String(), "unreadable") {
		t.Errorf("the vanished file is not logged:\n%s", logs)
	}
}

func TestHtpasswdRefusesOtherHashKinds(t *testing.T) {
	good, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		line, want string
		otherKind  bool // the error must say how to make a bcrypt entry
	}{
		{"bob:$apr1$Vx1Xa5LZ$bmqnH7wY0qkH3uOm4VhJw/", `line 3: user "bob": an MD5 (apr1) hash`, true},
		{"bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", `line 3: user "bob": a SHA-1 hash`, true},
		{"bob:$6$salt$abcdef", `line 3: user "bob": a SHA-crypt hash`, true},
		{"bob:plaintext", `line 3: user "bob": not a bcrypt hash`, true},
		{"bob:$2y$05$tooshort", `line 3: user "bob": malformed bcrypt hash`, false},
		{"bob", "line 3: want USER:HASH", false},
		{"alice:" + string(good), `line 3: user "alice" appears twice`, false},
	} {
		path := filepath.Join(t.TempDir(), "htpasswd")
		content := "alice:" + string(good) + "\n# a comment\n" + c.line + "\n"
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.Htpasswd = path
		_, err := New(cfg, Options{Key: mustKey(t)})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("htpasswd line %q: New = %v, want an error containing %q", c.line, err, c.want)
		} else if c.otherKind && !strings.Contains(err.Error(), "htpasswd -B") {
			t.Errorf("htpasswd line %q: %v does not say to use `htpasswd -B`", c.line, err)
		}
	}
}

func mustKey(t *testing.T) *Key {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestHtpasswdConcurrentChecksDuringReloads(t *testing.T) {
	clock := newTestClock()
	path := writeHtpasswd(t, t.TempDir(), map[string]string{"alice": "pw", "bob": "pw"})
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, _, _ := openTestHtpasswd(t, path, clock)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := []string{"alice", "bob"}[i%2]
			for range 50 {
				if err := h.check(user, "pw"); err != nil {
					t.Errorf("%s during reloads: %v", user, err)
					return
				}
			}
		}()
	}
	for i := range 20 {
		replaceFile(t, path, content, time.Now().Add(time.Duration(i+1)*time.Minute))
		clock.Advance(htpasswdCheckInterval)
	}
	wg.Wait()
}

func TestHtpasswdUnknownUsersCostABcryptToo(t *testing.T) {
	h, compares, _ := openTestHtpasswd(t, writeHtpasswd(t, t.TempDir(), map[string]string{"alice": "pw"}), newTestClock())
	if err := h.check("zed", "pw"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("unknown user: %v", err)
	}
	if n := compares.Load(); n != 1 {
		t.Errorf("an unknown user cost %d bcrypts, want 1 like a known one: timing would tell who exists", n)
	}
}
