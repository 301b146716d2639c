package swarm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/internal/peerwire"
	"github.com/shoal-dev/shoal/internal/rendezvous"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/peer/piecestore"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// Register adds the peer service (shoal.peer.v1.Peer) to a gRPC server.
func (s *Swarm) Register(g grpc.ServiceRegistrar) {
	peerpb.RegisterPeerServer(g, &peerService{s: s})
}

type peerService struct {
	peerpb.UnimplementedPeerServer
	s *Swarm
}

// GetMetainfo serves the metainfo of a blob held, complete or not, to a
// peer presenting a capability for it. Agents take metainfo from origin
// seeders only (it is unsigned here); this is for tools and tests.
func (p *peerService) GetMetainfo(ctx context.Context, req *peerpb.GetMetainfoRequest) (*peerpb.Metainfo, error) {
	d, err := digest.Parse(req.GetDigest())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "digest %q: %v", req.GetDigest(), err)
	}
	if err := p.s.checkCapability(ctx, d, "get_metainfo"); err != nil {
		return nil, err
	}
	m, err := p.s.store.Metainfo(d)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "blob %s not held", d)
	}
	return m.Proto(), nil
}

// Exchange serves a stream opened by another agent presenting a
// capability for the blob (PERMISSION_DENIED and no handshake otherwise):
// pieces held are uploaded, and while this agent downloads the same blob
// the peer joins the download too.
func (p *peerService) Exchange(st grpc.BidiStreamingServer[peerpb.Message, peerpb.Message]) error {
	s := p.s
	first, err := peerwire.RecvWithin(st, s.cfg.DialTimeout)
	if errors.Is(err, peerwire.ErrTimeout) {
		return status.Errorf(codes.DeadlineExceeded, "no handshake within %s", s.cfg.DialTimeout)
	}
	if err != nil {
		return err
	}
	hs := first.GetHandshake()
	if hs == nil {
		return status.Error(codes.InvalidArgument, "the first message must be a handshake")
	}
	d, err := digest.Parse(hs.GetDigest())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "handshake digest %q: %v", hs.GetDigest(), err)
	}
	if hs.GetPeerId() == "" || len(hs.GetPeerId()) > 128 {
		return status.Error(codes.InvalidArgument, "handshake peer_id must be 1 to 128 bytes")
	}
	peerID, _, err := s.peerIdentity(st.Context(), hs.GetPeerId(), false)
	if err != nil {
		return err
	}
	if err := s.checkCapability(st.Context(), d, "exchange"); err != nil {
		return err
	}
	meta, err := s.store.Metainfo(d)
	if err != nil {
		return status.Errorf(codes.NotFound, "blob %s not held", d)
	}
	remote, err := remoteBitfield(hs, meta)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "handshake: %v", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return status.Error(codes.Unavailable, "agent shutting down")
	}
	if bs, ok := s.blobs[d]; ok && bs.incoming >= s.cfg.MaxUploadsPerBlob {
		s.mu.Unlock()
		return status.Errorf(codes.ResourceExhausted, "%d peers already connected for %s", bs.incoming, d)
	}
	s.mu.Unlock()
	sent, err := s.store.Have(d)
	if err != nil {
		return status.Errorf(codes.NotFound, "blob %s not held", d)
	}
	// The incarnation goes out with the handshake reply (the first
	// message carries the response header).
	if err := st.SetHeader(s.pieceHeaders(metadata.Pairs(peerwire.IncarnationHeader, s.incarnation))); err != nil {
		return err
	}
	if err := st.Send(handshakeMessage(d, s.cfg.PeerID, sent)); err != nil {
		return err
	}
	c := newConn(s, meta, st, peerID, remote)
	md, _ := metadata.FromIncomingContext(st.Context())
	c.incarnation = incarnationOf(md)
	dl, err := s.register(c, d, sent)
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	if dl != nil {
		// Dialed once the download accepts the peer (connectPieces),
		// with the metainfo found in the store above: a download still
		// preparing has none of its own yet.
		c.pieceAddr = s.pieceAddrBack(st.Context(), md)
		dl.post(evJoined{c: c}, c.closed)
	}
	c.run()
	return nil
}

// register adds c to its blob's streams and queues Haves for the pieces
// that arrived since sent (the bitfield in this side's handshake), so the
// peer misses none. It returns the blob's running download, if any.
//
// Streams of the same peer id from another incarnation are closed first:
// that process is gone (restarted), and a stream to it that has not
// broken yet (a host that rebooted without closing its connections) would
// only hold requests until they time out, an upload slot, and the peer's
// place in the download, which would refuse the new process as a
// duplicate. Closing posts their PeerLeft to the download before the
// caller posts c's join.
func (s *Swarm) register(c *conn, d digest.Digest, sent *metainfo.Bitfield) (*download, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errors.New("agent shutting down")
	}
	bs := s.blobLocked(d)
	var stale []*conn
	if c.incarnation != "" {
		for o := range bs.conns {
			if o.id == c.id && o.incarnation != c.incarnation {
				stale = append(stale, o)
			}
		}
	}
	c.bs = bs
	c.log = c.log.With("digest", d)
	bs.conns[c] = struct{}{}
	if !c.outgoing {
		bs.incoming++
	}
	s.mu.Unlock()
	for _, o := range stale {
		o.close(fmt.Errorf("peer restarted (incarnation %q, now %q)", o.incarnation, c.incarnation))
	}
	s.mu.Lock()
	dl := bs.dl
	s.mu.Unlock()
	s.metrics.connections.WithLabelValues(c.direction()).Inc()
	if now, err := s.store.Have(d); err == nil {
		for i := range now.Len() {
			if now.Has(i) && !sent.Has(i) {
				c.have(i)
			}
		}
	}
	return dl, nil
}

func handshakeMessage(d digest.Digest, id string, have *metainfo.Bitfield) *peerpb.Message {
	hs := &peerpb.Handshake{Digest: d.String(), PeerId: id}
	if have.Complete() {
		hs.Complete = true
	} else {
		hs.Bitfield = have.Bytes()
	}
	return &peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: hs}}
}

func remoteBitfield(hs *peerpb.Handshake, meta *metainfo.Metainfo) (*metainfo.Bitfield, error) {
	n := meta.NumPieces()
	if hs.GetComplete() {
		bf := metainfo.NewBitfield(n)
		bf.SetAll()
		return bf, nil
	}
	if len(hs.GetBitfield()) == 0 {
		return metainfo.NewBitfield(n), nil
	}
	return metainfo.ParseBitfield(hs.GetBitfield(), n)
}

// incarnationOf returns the peer's incarnation from its stream metadata,
// empty if it sent none or an unusable one.
func incarnationOf(md metadata.MD) string {
	v := md.Get(peerwire.IncarnationHeader)
	if len(v) == 0 || len(v[0]) > maxIncarnation {
		return ""
	}
	return v[0]
}

// dial opens a stream to addr for dl's blob and runs it; the result goes to
// dl's loop.
func (s *Swarm) dial(dl *download, addr string, origin bool) {
	c, err := s.openStream(dl, addr, origin)
	s.metrics.dials.WithLabelValues(boolLabel(err == nil, "ok", "failed")).Inc()
	if err != nil {
		dl.post(evDialFailed{addr: addr, err: err}, nil)
		return
	}
	go c.run()
	if !dl.post(evJoined{c: c}, c.closed) {
		c.close(errors.New("download ended"))
	}
}

func boolLabel(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}

// openStream connects to addr and exchanges handshakes, all within
// DialTimeout.
func (s *Swarm) openStream(dl *download, addr string, origin bool) (*conn, error) {
	cc, release, err := s.pool.get(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(s.ctx)
	fail := func(err error) (*conn, error) {
		cancel()
		release()
		s.pool.drop(addr)
		return nil, err
	}
	timer := time.AfterFunc(s.cfg.DialTimeout, cancel)
	// This agent's piece port goes with the stream, so that the peer
	// fetches pieces from it on the piece data path too (connectPieces).
	kv := []string{peerwire.IncarnationHeader, s.incarnation}
	if s.piecePort != "" {
		kv = append(kv, peerwire.PieceHeader, s.piecePort)
	}
	st, err := peerpb.NewPeerClient(cc).Exchange(metadata.AppendToOutgoingContext(s.withCapability(ctx, dl.d), kv...))
	if err != nil {
		return fail(fmt.Errorf("opening a stream to %s: %w", addr, err))
	}
	sent, err := s.store.Have(dl.d)
	if err != nil {
		return fail(fmt.Errorf("reading pieces held: %w", err))
	}
	if err := st.Send(handshakeMessage(dl.d, s.cfg.PeerID, sent)); err != nil {
		return fail(fmt.Errorf("sending handshake to %s: %w", addr, err))
	}
	reply, err := st.Recv()
	if !timer.Stop() {
		return fail(fmt.Errorf("no handshake from %s within %s", addr, s.cfg.DialTimeout))
	}
	if err != nil {
		return fail(fmt.Errorf("handshake with %s: %w", addr, err))
	}
	hs := reply.GetHandshake()
	if hs == nil || hs.GetDigest() != dl.d.String() || hs.GetPeerId() == "" {
		return fail(fmt.Errorf("handshake with %s: %w: bad handshake reply", addr, errProtocol))
	}
	remote, err := remoteBitfield(hs, dl.meta)
	if err != nil {
		return fail(fmt.Errorf("handshake with %s: %w: %w", addr, errProtocol, err))
	}
	peerID, origin, err := s.peerIdentity(st.Context(), hs.GetPeerId(), origin)
	if err != nil {
		return fail(fmt.Errorf("handshake with %s: %w", addr, err))
	}
	c := newConn(s, dl.meta, st, peerID, remote)
	c.addr, c.origin, c.outgoing = addr, origin, true
	if hdr, err := st.Header(); err == nil {
		c.incarnation = incarnationOf(hdr)
		// Agents and origin seeders alike name their piece port in the
		// header when they serve the piece data path; it is dialed once
		// the download accepts the peer (connectPieces).
		if host, _, err := net.SplitHostPort(addr); err == nil {
			c.pieceAddr = s.pieceAddr(host, hdr)
		}
	}
	c.cancel = cancel
	c.release = release
	if _, err := s.register(c, dl.d, sent); err != nil {
		return fail(err)
	}
	return c, nil
}

// maxMetainfoAsks bounds the GetMetainfo calls in flight for one blob: a
// seeder asked about a blob it has never seen reads the whole blob from
// storage to compute the metainfo, so hedging to every seeder of a large
// cluster would read a new large layer once per node.
const maxMetainfoAsks = 2

// fetchMetainfo asks the seeders, in rendezvous order for d so that
// agents agree on which seeder computes a new blob's metainfo, and checks
// that the answer describes d. It also returns the owners the seeder named.
// A seeder that fails is followed by the next at once; one that has not
// answered after MetainfoHedgeDelay is joined by the next (a hedged
// request; at most maxMetainfoAsks in flight), so a hung seeder costs
// that delay rather than MetainfoTimeout. The first good answer wins and
// the others are cancelled. One round: fetchMetainfo retries the rounds
// a seeder asked to retry.
func (s *Swarm) askSeeders(ctx context.Context, d digest.Digest) (*metainfo.Metainfo, []string, error) {
	seeders := s.Seeders()
	if len(seeders) == 0 {
		return nil, nil, errors.New("no origin seeders known to take metainfo from")
	}
	ranked := rendezvous.Rank(d.String(), seeders)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		m      *metainfo.Metainfo
		owners []string
		err    error
	}
	answers := make(chan answer, len(ranked)) // never blocks a late sender
	next, pending := 0, 0
	var hedge <-chan time.Time
	askNext := func() {
		if next == len(ranked) || ctx.Err() != nil {
			return
		}
		addr := ranked[next]
		next++
		pending++
		go func() {
			m, owners, err := s.metainfoFrom(ctx, addr, d)
			answers <- answer{m, owners, err}
		}()
		if s.cfg.MetainfoHedgeDelay > 0 && next < len(ranked) {
			hedge = time.After(s.cfg.MetainfoHedgeDelay)
		}
	}
	askNext()
	var errs []error
	for pending > 0 {
		select {
		case a := <-answers:
			pending--
			if a.err == nil {
				return a.m, a.owners, nil
			}
			errs = append(errs, a.err)
			askNext()
		case <-hedge:
			hedge = nil
			if pending < maxMetainfoAsks {
				askNext()
			}
		}
	}
	return nil, nil, fmt.Errorf("getting metainfo of %s: %w", d, errors.Join(errs...))
}

func (s *Swarm) metainfoFrom(ctx context.Context, addr string, d digest.Digest) (*metainfo.Metainfo, []string, error) {
	cc, release, err := s.pool.get(addr)
	if err != nil {
		return nil, nil, err
	}
	defer release()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.MetainfoTimeout)
	defer cancel()
	var hdr metadata.MD
	p, err := peerpb.NewPeerClient(cc).GetMetainfo(s.withCapability(ctx, d), &peerpb.GetMetainfoRequest{Digest: d.String()}, grpc.Header(&hdr))
	if err != nil {
		return nil, nil, fmt.Errorf("seeder %s: %w", addr, err)
	}
	m, err := metainfo.FromProto(p)
	if err != nil {
		return nil, nil, fmt.Errorf("seeder %s: %w", addr, err)
	}
	if m.Digest != d {
		return nil, nil, fmt.Errorf("seeder %s: metainfo of %s returned for %s", addr, m.Digest, d)
	}
	if err := s.verifyMetainfo(m); err != nil {
		return nil, nil, fmt.Errorf("seeder %s: %w", addr, err)
	}
	var owners []string
	for _, v := range hdr.Get(peerwire.OwnersHeader) {
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				owners = append(owners, a)
			}
		}
	}
	return m, owners, nil
}

// isNotFound reports a piece store miss.
func isNotFound(err error) bool { return errors.Is(err, piecestore.ErrNotFound) }
