package origin

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/ociapi"
)

// uploadCapRecheck is how often, at most, the sessions of a client at its
// cap are looked up in storage to forget those finished or canceled
// through other nodes; it is also the Retry-After of a refusal, since no
// slot can free up sooner on this node's count.
const uploadCapRecheck = 10 * time.Second

// uploadSessionIdle is how long a session no request has touched on this
// node keeps counting against its client. Without it, the sessions a
// client abandons (a push interrupted, a client killed) would count until
// GC purges them (gc.uploadMaxAge, a week) and lock an honest build
// machine out of pushing; with it, a client still cannot hold more than
// its cap of sessions that are in use.
const uploadSessionIdle = time.Hour

// uploadSweepInterval is how often, at most, idle sessions of every client
// are forgotten, so that clients that never come back do not stay in
// memory.
const uploadSweepInterval = time.Minute

// openUploads counts the upload sessions each client started on this node
// and has not finished, to cap them (MaxUploadSessionsPerClient). Every
// session is a directory in storage until it is finished, canceled or
// purged by GC, so a client starting sessions without end would fill the
// namespace (a namenode's memory on HDFS) for everyone.
//
// A session started here may be finished through another node, which this
// node does not see; it is forgotten when this node finishes, cancels or
// misses it, when it has been idle here for uploadSessionIdle, or when the
// client is at its cap and storage no longer has it.
type openUploads struct {
	mu       sync.Mutex
	byClient map[string]*clientUploads
	owner    map[string]string // upload id -> client key
	sweptAt  time.Time         // last time idle sessions were forgotten
}

type clientUploads struct {
	ids       map[string]*openSession // by upload id
	pending   int                     // sessions admitted and being started
	checkedAt time.Time               // last lookup in storage at the cap
}

type openSession struct {
	repo    string
	touched time.Time // the last request on it through this node
}

func (c *clientUploads) open() int { return len(c.ids) + c.pending }

// uploadClient is who a request counts against: the user at an address,
// or the address alone for an anonymous request. By address as well as
// user, so that a build account shared by many machines is capped per
// machine; IPv6 addresses by their /64, which one host usually holds whole.
func uploadClient(r *http.Request) string {
	var addr netip.Addr
	user := ""
	if sub, ok := subjectOf(r); ok {
		addr, user = sub.Addr, sub.User
	}
	if !addr.IsValid() {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			addr = ap.Addr()
		}
	}
	addr = addr.Unmap()
	key := addr.String()
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		key = p.String()
	}
	if user != "" {
		key = user + "@" + key
	}
	return key
}

// admitUpload reserves a session slot for the client of r, or refuses with
// 429 TOOMANYREQUESTS when it holds MaxUploadSessionsPerClient open
// sessions even after forgetting those storage no longer has. The caller
// must call done once: with the session started (repo and id), or with an
// empty id to give the slot back.
func (s *Server) admitUpload(ctx context.Context, w http.ResponseWriter, r *http.Request) (done func(repo, id string), err error) {
	limit := s.cfg.MaxUploadSessionsPerClient
	if limit <= 0 {
		return func(string, string) {}, nil
	}
	client := uploadClient(r)
	u := &s.openUploads
	u.mu.Lock()
	defer u.mu.Unlock()
	now := s.now()
	u.sweep(now)
	c := u.client(client)
	if c.open() >= limit {
		if now.Sub(c.checkedAt) < uploadCapRecheck && !now.Before(c.checkedAt) {
			u.drop(client)
			return nil, s.refuseUpload(w, client, limit)
		}
		c.checkedAt = now
		// At most MaxUploadSessionsPerClient storage calls, once per
		// uploadCapRecheck per client, without the lock.
		ids := make(map[string]string, len(c.ids))
		for id, o := range c.ids {
			ids[id] = o.repo
		}
		c.pending++ // keeps c in the map meanwhile
		u.mu.Unlock()
		var gone []string
		for id, repo := range ids {
			if _, err := s.driver.Stat(ctx, uploadStatePath(repo, id)); isNotFound(err) {
				gone = append(gone, id)
			}
		}
		u.mu.Lock()
		c.pending--
		for _, id := range gone {
			u.forget(id)
		}
		if c.open() >= limit {
			u.drop(client)
			return nil, s.refuseUpload(w, client, limit)
		}
	}
	c.pending++
	var once sync.Once
	return func(repo, id string) {
		once.Do(func() {
			u.mu.Lock()
			defer u.mu.Unlock()
			c.pending--
			if id != "" {
				c.ids[id] = &openSession{repo: repo, touched: s.now()}
				u.owner[id] = client
			}
			u.drop(client)
		})
	}, nil
}

func (s *Server) refuseUpload(w http.ResponseWriter, client string, limit int) error {
	s.metrics.limitRefusals.WithLabelValues(limitUploadSessions).Inc()
	s.log.Info("upload session refused: client at its cap", "client", client, "maxUploadSessionsPerClient", limit)
	w.Header().Set("Retry-After", strconv.Itoa(int(uploadCapRecheck/time.Second)))
	return &ociapi.Error{Status: http.StatusTooManyRequests, Code: ociapi.CodeTooManyRequests,
		Message: fmt.Sprintf("you have %d upload sessions open on this registry node (maxUploadSessionsPerClient); finish or cancel (DELETE) some before starting more", limit),
		Detail:  map[string]any{"limit": limit}}
}

// client returns the entry of client, made when missing. u.mu is held.
func (u *openUploads) client(client string) *clientUploads {
	if u.byClient == nil {
		u.byClient = make(map[string]*clientUploads)
		u.owner = make(map[string]string)
	}
	c := u.byClient[client]
	if c == nil {
		c = &clientUploads{ids: make(map[string]*openSession)}
		u.byClient[client] = c
	}
	return c
}

// drop removes the entry of client when it counts nothing. u.mu is held.
func (u *openUploads) drop(client string) {
	if c := u.byClient[client]; c != nil && c.open() == 0 {
		delete(u.byClient, client)
	}
}

// forget stops counting session id. u.mu is held.
func (u *openUploads) forget(id string) {
	client, ok := u.owner[id]
	if !ok {
		return
	}
	delete(u.owner, id)
	if c := u.byClient[client]; c != nil {
		delete(c.ids, id)
		u.drop(client)
	}
}

// sweep forgets the sessions idle for uploadSessionIdle, at most once per
// uploadSweepInterval. u.mu is held.
func (u *openUploads) sweep(now time.Time) {
	if now.Sub(u.sweptAt) < uploadSweepInterval && !now.Before(u.sweptAt) {
		return
	}
	u.sweptAt = now
	for _, c := range u.byClient {
		for id, o := range c.ids {
			if now.Sub(o.touched) >= uploadSessionIdle {
				u.forget(id)
			}
		}
	}
}

// touchUpload notes a request on session id, which keeps it counting.
func (s *Server) touchUpload(id string) {
	u := &s.openUploads
	u.mu.Lock()
	defer u.mu.Unlock()
	if c := u.byClient[u.owner[id]]; c != nil {
		if o := c.ids[id]; o != nil {
			o.touched = s.now()
		}
	}
}

// forgetUpload stops counting session id: it was finished, canceled, or is
// not in storage any more.
func (s *Server) forgetUpload(id string) {
	s.openUploads.mu.Lock()
	defer s.openUploads.mu.Unlock()
	s.openUploads.forget(id)
}

// count returns how many sessions are counted, for the gauge.
func (u *openUploads) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.owner)
}
