package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/crypto/bcrypt"
)

// The htpasswd file is looked at (a stat) at most this often: often enough
// that a new user can log in a moment after being added, rarely enough that
// the stat costs nothing against the requests it serves.
const htpasswdCheckInterval = time.Second

// A successful bcrypt check is remembered this long, for this many
// (user, password) pairs. Docker clients send Basic credentials to the
// token endpoint for every token and curl sends them with every request;
// a bcrypt costs tens of milliseconds of CPU, so without the cache a busy
// client would keep a core busy. Five minutes is the life of a token: a
// password removed from the file stops working at the next reload anyway,
// since a reload empties the cache.
const (
	passwordCacheTTL  = 5 * time.Minute
	passwordCacheSize = 4096
)

// htpasswd is the users of an htpasswd file, re-read when the file changes.
type htpasswd struct {
	path string
	now  func() time.Time
	log  *slog.Logger

	mu        sync.Mutex
	users     map[string][]byte // user -> bcrypt hash
	decoy     []byte            // checked for unknown users (decoyHash)
	stamp     fileStamp         // of the file last read, good or not
	lastCheck time.Time
	gen       uint64 // counts reloads; a check that saw another generation does not cache

	// verified maps a hash of (user, password) to when that pair's
	// successful check expires. Only successes are kept: a wrong password
	// always costs a bcrypt, which is what slows guessing down.
	verified *lru.Cache[[sha256.Size]byte, time.Time]
	// compare is bcrypt.CompareHashAndPassword; tests count its calls.
	compare func(hash, password []byte) error
}

// fileStamp is what tells a changed file from the one last read.
type fileStamp struct {
	mtime time.Time
	size  int64
}

func openHtpasswd(path string, now func() time.Time, log *slog.Logger) (*htpasswd, error) {
	cache, err := lru.New[[sha256.Size]byte, time.Time](passwordCacheSize)
	if err != nil {
		return nil, err
	}
	h := &htpasswd{path: path, now: now, log: log, verified: cache, compare: bcrypt.CompareHashAndPassword}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("htpasswd: %w", err)
	}
	users, err := readHtpasswd(path)
	if err != nil {
		return nil, err
	}
	h.users, h.decoy = users, decoyHash(users)
	h.stamp, h.lastCheck = fileStamp{st.ModTime(), st.Size()}, now()
	return h, nil
}

// readHtpasswd parses an htpasswd file. Any entry that is not bcrypt
// refuses the whole file: accepting the rest would lock that user out with
// nothing but a "wrong password" to go on.
func readHtpasswd(path string) (map[string][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("htpasswd: %w", err)
	}
	users := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" || hash == "" {
			return nil, fmt.Errorf("htpasswd %s line %d: want USER:HASH", path, n)
		}
		if err := checkBcrypt(hash); err != nil {
			return nil, fmt.Errorf("htpasswd %s line %d: user %q: %w", path, n, user, err)
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("htpasswd %s line %d: user %q appears twice", path, n, user)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("htpasswd %s: %w", path, err)
	}
	return users, nil
}

// checkBcrypt says what kind of hash a non-bcrypt entry has, so that the
// error tells the operator which command makes a good one.
func checkBcrypt(hash string) error {
	const fix = "only bcrypt entries are accepted (`htpasswd -B`)"
	switch {
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return fmt.Errorf("malformed bcrypt hash: %w", err)
		}
		return nil
	case strings.HasPrefix(hash, "$apr1$"):
		return fmt.Errorf("an MD5 (apr1) hash; %s", fix)
	case strings.HasPrefix(hash, "{SHA}"):
		return fmt.Errorf("a SHA-1 hash; %s", fix)
	case strings.HasPrefix(hash, "$5$"), strings.HasPrefix(hash, "$6$"):
		return fmt.Errorf("a SHA-crypt hash; %s", fix)
	default:
		return fmt.Errorf("not a bcrypt hash (crypt or plain text?); %s", fix)
	}
}

// check checks user's password. Unknown users and wrong passwords are
// both ErrBadCredentials, and cost the same bcrypt, so that the answer's
// timing does not tell which users exist.
func (h *htpasswd) check(user, pass string) error {
	key := passwordKey(user, pass)
	now := h.now()
	h.mu.Lock()
	h.reloadIfChanged(now)
	hash, known := h.users[user]
	decoy, gen := h.decoy, h.gen
	if exp, ok := h.verified.Get(key); ok && known && now.Before(exp) {
		h.mu.Unlock()
		return nil
	}
	h.mu.Unlock()

	if !known {
		_ = h.compare(decoy, []byte(pass))
		return fmt.Errorf("unknown user %q: %w", user, ErrBadCredentials)
	}
	if err := h.compare(hash, []byte(pass)); err != nil {
		return fmt.Errorf("wrong password for user %q: %w", user, ErrBadCredentials)
	}
	h.mu.Lock()
	if h.gen == gen {
		h.verified.Add(key, now.Add(passwordCacheTTL))
	}
	h.mu.Unlock()
	return nil
}

// fingerprint identifies user's current password entry without revealing
// it. Refresh tokens carry it, so that changing a password (or removing the
// user) revokes the refresh tokens issued before.
func (h *htpasswd) fingerprint(user string) (string, bool) {
	h.mu.Lock()
	h.reloadIfChanged(h.now())
	hash, ok := h.users[user]
	h.mu.Unlock()
	if !ok {
		return "", false
	}
	sum := sha256.Sum256(hash)
	return base64.RawURLEncoding.EncodeToString(sum[:12]), true
}

// sameFingerprint compares fingerprints in constant time.
func sameFingerprint(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// passwordKey is the cache key of a (user, password) pair: a hash, so that
// the cache holds no password, with a NUL between the two so that
// ("ab", "c") and ("a", "bc") differ.
func passwordKey(user, pass string) [sha256.Size]byte {
	return sha256.Sum256([]byte(user + "\x00" + pass))
}

// reloadIfChanged re-reads the file when its stamp changed, at most once
// per htpasswdCheckInterval. A file that fails to read or parse leaves the
// users as they were and is logged once per change: a half-edited file
// must not lock everyone out. Called with h.mu held.
func (h *htpasswd) reloadIfChanged(now time.Time) {
	if now.Sub(h.lastCheck) < htpasswdCheckInterval {
		return
	}
	h.lastCheck = now
	st, err := os.Stat(h.path)
	if err != nil {
		if h.stamp != (fileStamp{}) {
			h.log.Error("htpasswd file unreadable; keeping the users last read", "path", h.path, "err", err)
			h.stamp = fileStamp{}
		}
		return
	}
	stamp := fileStamp{st.ModTime(), st.Size()}
	if stamp == h.stamp {
		return
	}
	h.stamp = stamp
	users, err := readHtpasswd(h.path)
	if err != nil {
		h.log.Error("htpasswd file changed but is broken; keeping the users last read", "path", h.path, "err", err)
		return
	}
	h.users, h.decoy = users, decoyHash(users)
	h.gen++
	h.verified.Purge()
	h.log.Info("htpasswd file reloaded", "path", h.path, "users", len(users))
}

// decoyHash is the hash unknown users' passwords are checked against, so
// that they cost as much as known users' (` + "`htpasswd -B`" + ` uses cost 5,
// bcrypt.DefaultCost is 10: a fixed cost would tell the two apart). It is
// the costliest real entry; its result is thrown away, so that it may match
// does not matter. Without users nobody exists to be told apart.
func decoyHash(users map[string][]byte) []byte {
	var decoy []byte
	best := -1
	for _, h := range users {
		if c, err := bcrypt.Cost(h); err == nil && c > best {
			decoy, best = h, c
		}
	}
	return decoy
}
