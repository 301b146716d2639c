package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// dialTimeout bounds connecting and the handshakes.
const dialTimeout = 10 * time.Second

// piecewireFetcher fetches over internal/piecewire: the client hashes each
// piece as it arrives.
type piecewireFetcher struct {
	c     *piecewire.Conn
	meta  *metainfo.Metainfo
	bufs  pieceBuffers
	suite string
}

func dialPiecewire(addr string, tlsConf *tls.Config, meta *metainfo.Metainfo, capability string, pipeline int) (*piecewireFetcher, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	f := &piecewireFetcher{meta: meta, bufs: make(pieceBuffers, pipeline+2)}
	if tlsConf != nil {
		tc := tls.Client(nc, tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, err
		}
		st := tc.ConnectionState()
		f.suite = fmt.Sprintf("%s %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
		nc = tc
	}
	c, err := piecewire.NewConn(nc, meta, capability, piecewire.ClientConfig{MaxOutstanding: pipeline, Buffer: f.bufs.get})
	if err != nil {
		return nil, err
	}
	f.c = c
	return f, nil
}

func (f *piecewireFetcher) fetchAll(pipeline int) error {
	n := f.meta.NumPieces()
	next := 0
	for ; next < n && next < pipeline; next++ {
		if err := f.c.Request(next); err != nil {
			return err
		}
	}
	for got := 0; got < n; got++ {
		r, ok := <-f.c.Results()
		if !ok {
			return fmt.Errorf("the connection ended after %d of %d pieces: %w", got, n, f.c.Err())
		}
		if r.Data == nil {
			return fmt.Errorf("%s", r)
		}
		f.bufs.put(r.Data)
		if next < n {
			if err := f.c.Request(next); err != nil {
				return err
			}
			next++
		}
	}
	return nil
}

func (f *piecewireFetcher) notes() string { return f.suite }
func (f *piecewireFetcher) close()        { _ = f.c.Close() }

// grpcFetcher fetches over an Exchange stream the way pkg/peer/swarm does:
// chunks appended to a piece buffer, the whole piece verified when
// complete.
type grpcFetcher struct {
	cc     *grpc.ClientConn
	st     grpc.BidiStreamingClient[peerpb.Message, peerpb.Message]
	cancel context.CancelFunc
	meta   *metainfo.Metainfo
	bufs   pieceBuffers
	suite  string
}

func dialGRPC(addr string, tlsConf *tls.Config, meta *metainfo.Metainfo, capability string) (*grpcFetcher, error) {
	creds := insecure.NewCredentials()
	f := &grpcFetcher{meta: meta, bufs: make(pieceBuffers, 8)}
	if tlsConf != nil {
		creds = credentials.NewTLS(tlsConf)
		f.suite = "TLS 1.3 (gRPC)"
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := peerpb.NewPeerClient(cc).Exchange(auth.WithCapability(ctx, capability))
	if err == nil {
		err = st.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{Digest: meta.Digest.String(), PeerId: "receiver"}}})
	}
	if err == nil {
		var m *peerpb.Message
		if m, err = st.Recv(); err == nil && m.GetHandshake() == nil {
			err = fmt.Errorf("no handshake reply")
		}
	}
	if err != nil {
		cancel()
		_ = cc.Close()
		return nil, fmt.Errorf("opening an Exchange stream: %w", err)
	}
	f.cc, f.st, f.cancel = cc, st, cancel
	return f, nil
}

func (f *grpcFetcher) request(i int) error {
	return f.st.Send(&peerpb.Message{Msg: &peerpb.Message_Request{Request: &peerpb.Request{Index: uint32(i)}}})
}

func (f *grpcFetcher) fetchAll(pipeline int) error {
	n := f.meta.NumPieces()
	next := 0
	for ; next < n && next < pipeline; next++ {
		if err := f.request(next); err != nil {
			return err
		}
	}
	assembling := map[int][]byte{}
	for got := 0; got < n; {
		m, err := f.st.Recv()
		if err != nil {
			return fmt.Errorf("after %d of %d pieces: %w", got, n, err)
		}
		ch := m.GetChunk()
		if ch == nil {
			return fmt.Errorf("unexpected message %v", m)
		}
		i := int(ch.GetIndex())
		buf, ok := assembling[i]
		if !ok {
			buf = f.bufs.get(f.meta.PieceSize(i))[:0]
		}
		if ch.GetOffset() != int64(len(buf)) {
			return fmt.Errorf("piece %d: chunk at %d, have %d bytes", i, ch.GetOffset(), len(buf))
		}
		buf = append(buf, ch.GetData()...)
		if int64(len(buf)) < f.meta.PieceSize(i) {
			assembling[i] = buf
			continue
		}
		delete(assembling, i)
		if err := f.meta.Verify(i, buf); err != nil {
			return err
		}
		f.bufs.put(buf)
		got++
		if next < n {
			if err := f.request(next); err != nil {
				return err
			}
			next++
		}
	}
	return nil
}

func (f *grpcFetcher) notes() string { return f.suite }

func (f *grpcFetcher) close() {
	if f.cancel != nil {
		f.cancel()
		_ = f.cc.Close()
		f.cancel = nil
	}
}
