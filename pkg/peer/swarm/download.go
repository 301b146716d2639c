package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/peer/scheduler"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// tickInterval is how often the loop checks timeouts, dials and announces
// when no event arrives.
const tickInterval = 200 * time.Millisecond

// Events posted to a download's loop.
type (
	evJoined     struct{ c *conn }
	evDialFailed struct {
		addr string
		err  error
	}
	evHave struct {
		c     *conn
		piece int
	}
	evLeft  struct{ c *conn }
	evPiece struct {
		c           *conn
		piece, size int
		// err is nil when the piece verified and was stored; it wraps
		// metainfo.ErrCorruptPiece when the peer is to blame.
		err error
	}
	evRejected struct {
		c       *conn
		piece   int
		notHeld bool
		// atPeers: an origin gave the piece to another agent and will not
		// serve it here for retryAfter (superseeding).
		atPeers    bool
		retryAfter time.Duration
	}
	evReader struct {
		id  int
		off int64
	}
	// evProgress: c is delivering bytes of a piece requested from it.
	evProgress  struct{ c *conn }
	evAnnounced struct {
		resp *trackerpb.AnnounceResponse
		err  error
	}
)

// download fetches one blob. Its loop goroutine alone touches the fields
// below events; others talk to it through post.
type download struct {
	s   *Swarm
	bs  *blobState
	d   digest.Digest
	log *slog.Logger

	events chan any
	// ready is closed once meta is known and the blob is in the piece
	// store (or the download failed before: err is then set).
	ready chan struct{}
	// done is closed when the download ends; err says why if it failed.
	done chan struct{}
	err  error
	meta *metainfo.Metainfo
	// verified is closed once the assembled blob is known to match its
	// digest (digest.go): readers hold the blob's last byte back until
	// then. hashed receives the digest check's result; hashDone is set
	// once it passed (or with the check off).
	verified       chan struct{}
	verifiedClosed bool
	hashed         chan error
	hashDone       bool
	stopHash       context.CancelFunc

	// owners are the blob's owners named by the seeder that gave the
	// metainfo: origins holding it on local disk.
	owners       []string
	sched        *scheduler.Scheduler
	release      func()
	peers        map[scheduler.PeerID]*conn
	cands        map[string]*candidate
	dialing      int
	lastProgress time.Time
	// lastBytes is when a stream last reported bytes of an unfinished
	// piece (evProgress): a download on a slow link is not stalled while
	// they come, even if no piece completes for StallTimeout.
	lastBytes time.Time
	// readers are the streaming clients' positions. They steer the
	// scheduler (streaming) only while no other agent is joined: agents
	// pulling together all read from offset 0, so favouring the pieces at
	// the readers would send every one of them to the origin for the same
	// pieces, while rarest first spreads the origin's pieces over the
	// swarm.
	readers   map[int]int64
	streaming bool
	// origin holds back the requests to origins of an agent that is not
	// one of the fetchers (see fetcher).
	origin *scheduler.OriginDeferral
	// stats are logged when the download completes.
	stats struct {
		fromPeers, fromOrigins                    int
		originRequests, deferred, deferredDropped int
		atPeers                                   int // origin answers REASON_AT_PEERS
		firstAgent                                time.Duration
	}
	agents       int
	announcing   bool
	startedSent  bool
	started      time.Time
	firstAnswer  bool
	nextAnnounce time.Time
}

func newDownload(s *Swarm, bs *blobState) *download {
	return &download{
		s: s, bs: bs, d: bs.d,
		log:      s.log.With("digest", bs.d),
		events:   make(chan any, 256),
		ready:    make(chan struct{}),
		done:     make(chan struct{}),
		verified: make(chan struct{}),
		hashed:   make(chan error, 1),
		peers:    make(map[scheduler.PeerID]*conn),
		cands:    make(map[string]*candidate),
		readers:  make(map[int]int64),
		origin:   scheduler.NewOriginDeferral(s.cfg.OriginDeferral, s.cfg.PieceTimeout),
	}
}

// post delivers ev to the loop, unless the download ended or stop closes
// first. It reports whether ev was delivered.
func (dl *download) post(ev any, stop <-chan struct{}) bool {
	select {
	case dl.events <- ev:
		return true
	case <-dl.done:
		return false
	case <-stop:
		return false
	}
}

// progress reports that c is delivering bytes; dropped when the loop is
// busy (the stream is not held up for it, and the next chunk reports
// again).
func (dl *download) progress(c *conn) {
	select {
	case dl.events <- evProgress{c: c}:
	default:
	}
}

// readerAt reports a streaming client's position; dropped when the loop is
// busy, since the next read reports again.
func (dl *download) readerAt(id int, off int64) {
	select {
	case dl.events <- evReader{id: id, off: off}:
	default:
	}
}

// run is the download's goroutine.
func (dl *download) run() {
	s := dl.s
	s.metrics.downloadsActive.Inc()
	defer s.metrics.downloadsActive.Dec()
	if err := dl.prepare(); err != nil {
		dl.finish(err)
		return
	}
	close(dl.ready)
	dl.startDigestCheck()
	now := time.Now()
	dl.lastProgress = now
	dl.started = now
	dl.streaming = true
	for _, addr := range append(slices.Clone(s.Seeders()), dl.owners...) {
		dl.cands[addr] = &candidate{addr: addr, origin: true}
	}
	if dl.sched.Done() {
		if err := dl.awaitDigest(); err != nil {
			dl.finish(err)
			return
		}
		dl.complete()
		return
	}
	t := time.NewTicker(tickInterval)
	defer t.Stop()
	dl.maintain(now)
	for {
		select {
		case ev := <-dl.events:
			now = time.Now()
			if err := dl.handle(now, ev); err != nil {
				dl.finish(err)
				return
			}
		case now = <-t.C:
			if err := dl.sched.Handle(now, scheduler.Tick{}); err != nil {
				dl.finish(err)
				return
			}
			if now.Sub(dl.lastProgress) > s.cfg.StallTimeout && now.Sub(dl.lastBytes) > s.cfg.StallTimeout {
				dl.finish(fmt.Errorf("no piece, and no byte of one, arrived for %s (%d peers connected, %d addresses known)",
					s.cfg.StallTimeout, len(dl.peers), len(dl.cands)))
				return
			}
			dl.maintain(now)
			dl.sendDeferred(now)
		case err := <-dl.hashed:
			if err := dl.digestChecked(err); err != nil {
				dl.finish(err)
				return
			}
		case <-s.ctx.Done():
			dl.finish(errors.New("agent shutting down"))
			return
		}
		dl.steer(now)
		// Every piece held is not enough: the blob is complete once its
		// digest matched too.
		if dl.act(now) && dl.hashDone {
			dl.complete()
			return
		}
	}
}

// prepare gets the metainfo (from the piece store if a previous run left
// pieces, else from a seeder), creates the blob in the store and the
// scheduler.
func (dl *download) prepare() error {
	s := dl.s
	if s.capability(dl.d) == "" {
		return fmt.Errorf("no capability for %s: the origin handed none out with the blob's authorization, and seeders and peers serve a blob only against one", dl.d)
	}
	meta, err := s.store.Metainfo(dl.d)
	if err != nil {
		meta, dl.owners, err = s.fetchMetainfo(s.ctx, dl.d)
		if err != nil {
			return err
		}
		if err := s.store.Create(meta); err != nil {
			return fmt.Errorf("making room for %s in the cache: %w", dl.d, err)
		}
	}
	release, err := s.store.Acquire(dl.d)
	if err != nil {
		return fmt.Errorf("holding %s in the cache: %w", dl.d, err)
	}
	have, err := s.store.Have(dl.d)
	if err != nil {
		release()
		return fmt.Errorf("reading the pieces of %s held: %w", dl.d, err)
	}
	sched, err := scheduler.New(meta, have, s.sched)
	if err != nil {
		release()
		return fmt.Errorf("scheduling %s: %w", dl.d, err)
	}
	dl.meta, dl.sched, dl.release = meta, sched, release
	return nil
}

// handle applies one event. An error fails the download.
func (dl *download) handle(now time.Time, ev any) error {
	switch ev := ev.(type) {
	case evJoined:
		dl.join(now, ev.c)
		dl.maintain(now) // origins may wait for this dial
	case evDialFailed:
		if c, ok := dl.cands[ev.addr]; ok {
			dl.dialing -= boolInt(!c.origin)
			dl.retry(now, c)
		}
		dl.log.Debug("dialing peer failed", "addr", ev.addr, "err", ev.err)
		dl.maintain(now)
	case evHave:
		if !ev.c.origin && !dl.sched.Have().Has(ev.piece) {
			// An agent now holds a piece this one lacks: the swarm can
			// still serve it without the origin.
			dl.origin.SwarmProgress(now)
		}
		if dl.peers[scheduler.PeerID(ev.c.id)] == ev.c {
			_ = dl.sched.Handle(now, scheduler.PeerHave{Peer: scheduler.PeerID(ev.c.id), Piece: ev.piece})
		}
	case evLeft:
		dl.leave(now, ev.c)
	case evProgress:
		dl.lastBytes = now
		if dl.peers[scheduler.PeerID(ev.c.id)] == ev.c {
			_ = dl.sched.Handle(now, scheduler.PeerProgress{Peer: scheduler.PeerID(ev.c.id)})
		}
	case evRejected:
		if dl.peers[scheduler.PeerID(ev.c.id)] == ev.c {
			if ev.atPeers {
				dl.stats.atPeers++
			}
			dl.origin.Answered(now, scheduler.Request{Peer: scheduler.PeerID(ev.c.id), Piece: ev.piece}, false)
			_ = dl.sched.Handle(now, scheduler.RequestRejected{Peer: scheduler.PeerID(ev.c.id), Piece: ev.piece,
				NotHeld: ev.notHeld, AtPeers: ev.atPeers, RetryAfter: ev.retryAfter})
		}
	case evPiece:
		return dl.piece(now, ev)
	case evReader:
		if ev.off < 0 {
			delete(dl.readers, ev.id)
		} else {
			dl.readers[ev.id] = ev.off
		}
		if dl.streaming {
			_ = dl.sched.Handle(now, scheduler.ReaderAt{Reader: ev.id, Offset: ev.off})
		}
	case evAnnounced:
		dl.announced(now, ev)
	default:
		return fmt.Errorf("download loop: unknown event %T", ev)
	}
	return nil
}

func (dl *download) join(now time.Time, c *conn) {
	s := dl.s
	if c.outgoing {
		if cand, ok := dl.cands[c.addr]; ok && cand.state == candDialing {
			dl.dialing -= boolInt(!cand.origin)
			cand.state = candConnected
			cand.id = c.id
		}
	}
	var refuse error
	switch {
	case c.id == s.cfg.PeerID:
		refuse = errors.New("connected to itself")
	case s.blacklisted(c.id):
		refuse = scheduler.ErrBlacklisted
	}
	if refuse == nil {
		bf, open := c.attach(dl)
		if !open {
			// The stream ended after its join was queued: it was never
			// known here, so it is dropped as if it had left at once.
			dl.log.Debug("peer left before it joined", "peer", c.id, "direction", c.direction())
			if cand, ok := dl.cands[c.addr]; ok && c.outgoing && cand.state == candConnected {
				dl.retry(now, cand)
			}
			return
		}
		refuse = dl.sched.Handle(now, scheduler.PeerJoined{Peer: scheduler.PeerID(c.id), Bitfield: bf, Origin: c.origin, Incarnation: c.incarnation})
		if refuse != nil {
			c.detach()
		}
	}
	if refuse != nil {
		dl.log.Debug("peer not used for this download", "peer", c.id, "direction", c.direction(), "why", refuse)
		if c.outgoing {
			// Incoming streams stay open: the peer may still download
			// from this agent.
			// Dropped as unresponsive, it is dialed again after a piece
			// timeout: the process there may be a restarted one.
			unresponsive := errors.Is(refuse, scheduler.ErrBlacklisted) && !dl.banned(c.id)
			if cand, ok := dl.cands[c.addr]; ok && !errors.Is(refuse, scheduler.ErrTooManyPeers) && !unresponsive {
				delete(dl.cands, cand.addr)
			} else if ok {
				cand.state = candIdle
				cand.retryAt = now.Add(5 * time.Second)
				if unresponsive {
					cand.retryAt = now.Add(s.cfg.PieceTimeout)
					cand.failures = max(cand.failures, 1) // not a fetcher (see fetcher)
				}
			}
			if errors.Is(refuse, scheduler.ErrBlacklisted) {
				c.close(refuse)
			} else {
				c.end() // not needed: nothing of it is wrong
			}
		}
		return
	}
	dl.peers[scheduler.PeerID(c.id)] = c
	// Only now: a refused peer keeps no piece connection. Not before the
	// first requests either (they wait for it a little, see
	// pieceDialGrace).
	c.connectPieces()
	if !c.origin {
		if dl.stats.firstAgent == 0 {
			dl.stats.firstAgent = now.Sub(dl.started)
		}
		dl.agents++
		dl.steer(now)
	}
	dl.log.Debug("peer joined", "peer", c.id, "origin", c.origin, "direction", c.direction())
}

// leave forgets a peer whose stream ended.
func (dl *download) leave(now time.Time, c *conn) {
	if dl.peers[scheduler.PeerID(c.id)] != c {
		return
	}
	dl.forget(now, c)
	_ = dl.sched.Handle(now, scheduler.PeerLeft{Peer: scheduler.PeerID(c.id)})
	if cand, ok := dl.cands[c.addr]; ok && c.outgoing && cand.state == candConnected {
		dl.retry(now, cand)
	}
}

// forget removes c from the joined peers.
func (dl *download) forget(now time.Time, c *conn) {
	delete(dl.peers, scheduler.PeerID(c.id))
	if c.origin {
		dl.origin.PeerLeft(scheduler.PeerID(c.id))
	}
	if !c.origin {
		dl.agents--
		dl.steer(now)
	}
}

// crowded reports whether other agents are joined or being dialed.
func (dl *download) crowded() bool { return dl.agents > 0 || dl.dialing > 0 }

// steer turns reader steering on while no agent is joined or being dialed
// and off otherwise (see download.readers).
func (dl *download) steer(now time.Time) {
	on := !dl.crowded()
	if on == dl.streaming {
		return
	}
	dl.streaming = on
	for id, off := range dl.readers {
		if !on {
			off = -1
		}
		_ = dl.sched.Handle(now, scheduler.ReaderAt{Reader: id, Offset: off})
	}
}

func (dl *download) piece(now time.Time, ev evPiece) error {
	s := dl.s
	c := ev.c
	if dl.peers[scheduler.PeerID(c.id)] != c {
		return nil
	}
	if c.origin {
		dl.origin.Answered(now, scheduler.Request{Peer: scheduler.PeerID(c.id), Piece: ev.piece}, ev.err == nil)
	}
	switch {
	case ev.err == nil:
		fresh := !dl.sched.Have().Has(ev.piece)
		if err := dl.sched.Handle(now, scheduler.PieceReceived{Peer: scheduler.PeerID(c.id), Piece: ev.piece, OK: true}); err != nil {
			return nil
		}
		s.metrics.piecesVerified.WithLabelValues(c.source()).Inc()
		s.metrics.downloaded.WithLabelValues(c.source()).Add(float64(ev.size))
		if fresh {
			if c.origin {
				dl.stats.fromOrigins++
			} else {
				dl.stats.fromPeers++
			}
			dl.lastProgress = now
			dl.broadcastHave(c, ev.piece)
		} else {
			s.metrics.duplicate.Add(float64(ev.size))
		}
	case errors.Is(ev.err, metainfo.ErrCorruptPiece):
		s.metrics.piecesRejected.WithLabelValues(c.source()).Inc()
		dl.log.Warn("peer sent a corrupt piece: blacklisting it", "peer", c.id, "piece", ev.piece, "err", ev.err)
		s.addBlacklist(c.id)
		_ = dl.sched.Handle(now, scheduler.PieceReceived{Peer: scheduler.PeerID(c.id), Piece: ev.piece, OK: false})
	default:
		return fmt.Errorf("storing piece %d: %w", ev.piece, ev.err)
	}
	return nil
}

// broadcastHave tells every stream of the blob, the upload-only ones too,
// that piece i is here.
func (dl *download) broadcastHave(from *conn, i int) {
	s := dl.s
	s.mu.Lock()
	conns := make([]*conn, 0, len(dl.bs.conns))
	for c := range dl.bs.conns {
		if c != from {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.have(i)
	}
}

// act carries out what the scheduler decides; it reports whether every
// piece is held.
func (dl *download) act(now time.Time) bool {
	s := dl.s
	a := dl.sched.Next(now)
	for _, b := range a.Blacklisted {
		s.metrics.blacklisted.WithLabelValues(b.Reason.String()).Inc()
		c, ok := dl.peers[b.Peer]
		if !ok {
			continue
		}
		dl.forget(now, c)
		delete(dl.cands, c.addr)
		dl.log.Warn("peer blacklisted", "peer", b.Peer, "reason", b.Reason.String())
		c.detach()
		c.close(fmt.Errorf("blacklisted: %s", b.Reason))
	}
	for _, x := range a.Cancels {
		c, ok := dl.peers[x.Peer]
		if !ok {
			continue
		}
		if c.origin && dl.origin.Cancel(scheduler.Request(x)) {
			dl.stats.deferredDropped++ // never sent: nothing to withdraw
			continue
		}
		c.cancelRequest(x.Piece)
	}
	for _, r := range a.Requests {
		c, ok := dl.peers[r.Peer]
		if !ok {
			continue
		}
		if c.origin {
			if !dl.origin.Ask(now, r, dl.crowded(), dl.fetcher) {
				dl.stats.deferred++
				continue
			}
			dl.stats.originRequests++
		}
		c.request(r.Piece)
	}
	dl.sendDeferred(now)
	return a.Done
}

// fetcher reports whether this agent is one of the OriginFetchers agents
// that ask the origin at once (scheduler.Fetcher), among the agents it
// knows: joined, or named by the tracker and not failing.
func (dl *download) fetcher() bool {
	var agents []scheduler.PeerID
	for id, c := range dl.peers {
		if !c.origin {
			agents = append(agents, id)
		}
	}
	for _, cand := range dl.cands {
		if !cand.origin && cand.id != "" && cand.failures == 0 {
			agents = append(agents, scheduler.PeerID(cand.id))
		}
	}
	return scheduler.Fetcher(scheduler.PeerID(dl.s.cfg.PeerID), dl.d.String(), agents, dl.s.cfg.OriginFetchers)
}

// sendDeferred sends the held origin requests whose time has come, and
// hands back as busy the ones held too long (scheduler.OriginDeferral).
func (dl *download) sendDeferred(now time.Time) {
	send, busy := dl.origin.Due(now, dl.lastProgress, dl.crowded())
	for _, r := range send {
		c, ok := dl.peers[r.Peer]
		if !ok {
			continue
		}
		dl.stats.originRequests++
		c.request(r.Piece)
	}
	for _, r := range busy {
		dl.stats.deferredDropped++
		_ = dl.sched.Handle(now, scheduler.RequestRejected{Peer: r.Peer, Piece: r.Piece})
	}
}

// complete ends a download whose blob is verified: every piece, and the
// digest unless VerifyBlobDigest is off.
func (dl *download) complete() {
	dl.markVerified()
	if err := dl.s.store.Complete(dl.d); err != nil {
		dl.finish(fmt.Errorf("completing %s: %w", dl.d, err))
		return
	}
	dl.finish(nil)
}

// finish ends the download: the blob is seeded on success; streams to
// origins and to complete peers are closed, the others stay open for the
// peers still downloading from this agent.
func (dl *download) finish(err error) {
	s := dl.s
	dl.err = err
	if dl.stopHash != nil {
		dl.stopHash()
	}
	select {
	case <-dl.ready:
	default:
		close(dl.ready)
	}
	result := "completed"
	if err != nil {
		result = "failed"
		dl.log.Warn("download failed", "err", err)
	} else {
		st := dl.stats
		dl.log.Info("download complete", "size", dl.meta.Size, "took", time.Since(dl.started).Round(time.Millisecond).String(),
			"peers", len(dl.peers), "piecesFromPeers", st.fromPeers, "piecesFromOrigins", st.fromOrigins,
			"originRequests", st.originRequests, "originDeferred", st.deferred, "deferredDropped", st.deferredDropped,
			"originAtPeers", st.atPeers,
			"firstAgentAfter", st.firstAgent.Round(time.Millisecond).String())
	}
	s.metrics.downloads.WithLabelValues(result).Inc()
	s.mu.Lock()
	if dl.bs.dl == dl {
		dl.bs.dl = nil
	}
	if err == nil && !s.closed {
		dl.bs.seeding = true
		dl.bs.announced = false
		dl.bs.nextAnnounce = time.Time{}
	}
	s.mu.Unlock()
	close(dl.done)
	for _, c := range dl.peers {
		c.detach()
		switch {
		case err != nil:
			c.close(fmt.Errorf("download failed: %w", err))
		case c.origin || c.remoteComplete():
			c.end()
		}
	}
	if dl.release != nil {
		dl.release()
	}
	if err == nil && s.tracker != nil {
		s.announceSeeded(time.Now())
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// startDownload returns the running download of bs.d, starting one.
// Called with s.mu held.
func (s *Swarm) startDownloadLocked(bs *blobState) *download {
	if bs.dl != nil {
		return bs.dl
	}
	dl := newDownload(s, bs)
	bs.dl = dl
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		dl.run()
	}()
	return dl
}

// waitReady waits for dl's metainfo.
func (dl *download) waitReady(ctx context.Context) error {
	select {
	case <-dl.ready:
		if dl.meta == nil {
			return dl.err
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
