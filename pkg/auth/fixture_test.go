package auth

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-dev/shoal/internal/fakeclock"
)

// newTestClock returns a clock tests move by hand, in 2030.
func newTestClock() *fakeclock.Clock {
	c := fakeclock.New()
	c.Set(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	return c
}

// newTestAuthorizer returns an Authorizer for cfg with a fresh key, on
// clock (the real one when nil).
func newTestAuthorizer(t *testing.T, cfg Config, clock *fakeclock.Clock) *Authorizer {
	t.Helper()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Key: key, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if clock != nil {
		opts.Now = clock.Now
	}
	a, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// writeHtpasswd writes users (name -> password) as bcrypt entries, at the
// lowest cost to keep tests fast, and returns the file's path.
func writeHtpasswd(t *testing.T, dir string, users map[string]string) string {
	t.Helper()
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, u := range names {
		h, err := bcrypt.GenerateFromPassword([]byte(users[u]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(u + ":" + string(h) + "\n")
	}
	path := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func itoa(i int) string { return strconv.Itoa(i) }
