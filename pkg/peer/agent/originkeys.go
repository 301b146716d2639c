package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// keysFetchTimeout bounds one GET of the origin's keys.
const keysFetchTimeout = 10 * time.Second

// keysMinInterval spaces fetches of the origin's keys: a peer presenting
// capabilities with made-up key ids makes the agent ask the origin at most
// this often.
const keysMinInterval = time.Second

// keysMaxRetry caps the backoff of the start-up fetch while the origin
// does not answer.
const keysMaxRetry = 30 * time.Second

// originKeys are the origin's public keys, which verify the capabilities
// peers present and the metainfo seeders serve (swarm.Keys). They come
// from configured PEM files (fixed), or from the origin's auth.KeysPath:
// fetched at start and retried in the background until the origin
// answers, and fetched again whenever a capability or metainfo names a key
// id not held, so a key rotation at the origin reaches the agents by
// itself.
type originKeys struct {
	v      *auth.Verifier
	url    string // empty: fixed keys from files
	client *http.Client
	log    *slog.Logger
	now    func() time.Time

	mu        sync.Mutex // one fetch at a time
	lastFetch time.Time
	lastOK    bool
}

// newOriginKeys loads the key files, or prepares to fetch the keys from
// the origin at originURL when there are none.
func newOriginKeys(files []string, originURL string, client *http.Client, log *slog.Logger) (*originKeys, error) {
	k := &originKeys{v: auth.NewVerifier(), client: client, log: log, now: time.Now}
	if len(files) == 0 {
		k.url = strings.TrimSuffix(originURL, "/") + auth.KeysPath
		return k, nil
	}
	var keys []auth.PublicKey
	for _, f := range files {
		ks, err := auth.LoadPublicKeyFile(f)
		if err != nil {
			return nil, fmt.Errorf("swarm.originKeys: %w", err)
		}
		keys = append(keys, ks...)
	}
	k.v.SetKeys(keys)
	return k, nil
}

// VerifyCapability implements swarm.Keys.
func (k *originKeys) VerifyCapability(tok string, d digest.Digest) error {
	err := k.v.VerifyCapability(tok, d)
	if errors.Is(err, auth.ErrUnknownKey) && k.refresh() {
		err = k.v.VerifyCapability(tok, d)
	}
	return err
}

// VerifyMetainfo implements swarm.Keys.
func (k *originKeys) VerifyMetainfo(m *metainfo.Metainfo) error {
	err := k.v.VerifyMetainfo(m)
	if errors.Is(err, auth.ErrUnknownKey) && k.refresh() {
		err = k.v.VerifyMetainfo(m)
	}
	return err
}

// run fetches the keys until the origin answers once; the keys are fetched
// again on demand after that (refresh).
func (k *originKeys) run(ctx context.Context) {
	if k.url == "" {
		return
	}
	wait := time.Second
	for {
		if k.refresh() {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, keysMaxRetry)
	}
}

// refresh fetches the origin's keys, unless fixed or fetched less than
// keysMinInterval ago; callers that come while a fetch runs wait for it.
// It reports whether the keys held may have changed.
func (k *originKeys) refresh() bool {
	if k.url == "" {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if !k.lastFetch.IsZero() && now.Sub(k.lastFetch) < keysMinInterval {
		// Another caller fetched just now: its keys are the newest.
		return k.lastOK
	}
	k.lastFetch = now
	keys, err := k.fetch()
	k.lastOK = err == nil
	if err != nil {
		k.log.Warn("fetching the origin's public keys failed: capabilities and metainfo signed by a key not held are refused until it answers", "url", k.url, "err", err)
		return false
	}
	k.v.SetKeys(keys)
	k.log.Debug("origin public keys fetched", "url", k.url, "keys", len(keys))
	return true
}

func (k *originKeys) fetch() ([]auth.PublicKey, error) {
	ctx, cancel := context.WithTimeout(context.Background(), keysFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s (an origin too old to sign capabilities, or not an origin?)", k.url, resp.Status)
	}
	return auth.ParseKeySet(body)
}
