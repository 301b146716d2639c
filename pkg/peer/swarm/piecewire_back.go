package swarm

import (
	"context"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// dialPiecesBack opens the piece connection of an incoming stream: the
// agent that opened it named its own piece port in the stream's metadata,
// and the pieces this agent asks it for then come over that port, as an
// outgoing stream's do. Without it the piece data path would carry pieces
// only from the agent that accepted a stream to the one that opened it,
// and about half a swarm's piece bytes would stay on the streams. The
// port is dialed at the stream's remote address. It returns nil when the
// peer named no port or the dial fails (within DialTimeout): the stream
// then carries the pieces. meta is the blob's metainfo as the stream's
// handler found it in the piece store, not the download's: a download
// still preparing (its metainfo just stored) has none yet, and its loop
// sets it without a lock.
func (s *Swarm) dialPiecesBack(ctx context.Context, meta *metainfo.Metainfo, peerID string, md metadata.MD) *piecewire.Conn {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	return s.dialPieces(ctx, meta, p.Addr.String(), peerID, md)
}

// setPieceConn gives c the piece connection pw (nil: none), before c runs.
// A conn closed meanwhile (close closes pw under mu after closing
// c.closed) does not get it: pw is closed here instead.
func (c *conn) setPieceConn(pw *piecewire.Conn) {
	if pw == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		_ = pw.Close()
	default:
		c.pw = pw
	}
}
