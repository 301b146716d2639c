package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shoal-dev/shoal/internal/piecewire"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// The agent's gRPC flow-control windows (pkg/peer/agent), so that the grpc
// modes are today's path as deployed.
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
)

// runSender serves the blob in dir with mode's data path on a loopback
// port, prints "ADDR <addr>", and when its standard input closes prints
// "STATS <how the bytes were written>" and returns.
func runSender(mode, dir string, pieceLength, grpcChunk int64) error {
	f, err := os.Open(filepath.Join(dir, blobFile))
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	key, err := auth.LoadKeyFile(filepath.Join(dir, authFile))
	if err != nil {
		return err
	}
	keys := auth.NewVerifier(key.Public())
	layout := blobLayout{f: f, size: st.Size(), pieceLength: pieceLength}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	var tlsConf *tls.Config
	if mode == "tls" || mode == "grpc-tls" {
		if tlsConf, err = serverTLS(dir); err != nil {
			return err
		}
	}
	var stats func() string
	switch mode {
	case "plain", "tls":
		if tlsConf != nil {
			l = tls.NewListener(l, tlsConf)
		}
		srv := piecewire.NewServer(piecewire.ServerConfig{Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}, layout, keys)
		go func() { _ = srv.Serve(l) }()
		defer srv.Close()
		stats = func() string {
			s := srv.Stats()
			return fmt.Sprintf("(sender: %d MiB with sendfile, %d MiB written)", s.SendfileBytes>>20, s.CopiedBytes>>20)
		}
	default:
		opts := []grpc.ServerOption{grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow)}
		if tlsConf != nil {
			opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConf)))
		}
		g := grpc.NewServer(opts...)
		peerpb.RegisterPeerServer(g, &grpcSender{layout: layout, keys: keys, chunk: grpcChunk})
		go func() { _ = g.Serve(l) }()
		defer g.Stop()
		stats = func() string { return "" }
	}
	fmt.Printf("ADDR %s\n", l.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	fmt.Printf("STATS %s\n", stats())
	return nil
}

// blobLayout serves the pieces of one blob file, as the agent's piece
// store will: the file shared by every send, each at its own offset.
type blobLayout struct {
	f                 *os.File
	size, pieceLength int64
}

func (b blobLayout) piece(i int) (off, n int64, ok bool) {
	off = int64(i) * b.pieceLength
	if i < 0 || off >= b.size {
		return 0, 0, false
	}
	return off, min(b.pieceLength, b.size-off), true
}

func (b blobLayout) OpenPiece(_ context.Context, _ digest.Digest, i int) (*piecewire.Piece, error) {
	off, n, ok := b.piece(i)
	if !ok {
		return nil, piecewire.ErrNotHeld
	}
	return &piecewire.Piece{Size: n, File: b.f, Offset: off}, nil
}

// grpcSender is today's piece upload: an Exchange stream answering
// Requests with PieceChunk messages read from the file a chunk at a time
// into one reused buffer (pkg/peer/swarm's sendLoop), after checking the
// stream's capability.
type grpcSender struct {
	peerpb.UnimplementedPeerServer
	layout blobLayout
	keys   *auth.Verifier
	chunk  int64
}

func (g *grpcSender) Exchange(st grpc.BidiStreamingServer[peerpb.Message, peerpb.Message]) error {
	first, err := st.Recv()
	if err != nil {
		return err
	}
	hs := first.GetHandshake()
	if hs == nil {
		return errors.New("the first message must be a handshake")
	}
	d, err := digest.Parse(hs.GetDigest())
	if err != nil {
		return err
	}
	if err := g.keys.VerifyCapability(auth.CallCapability(st.Context()), d); err != nil {
		return auth.CapabilityDenied("bench sender", err)
	}
	if err := st.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{Digest: d.String(), PeerId: "sender", Complete: true}}}); err != nil {
		return err
	}
	reqs := make(chan int, 1024)
	go func() {
		defer close(reqs)
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			if r := m.GetRequest(); r != nil {
				reqs <- int(r.GetIndex())
			}
		}
	}()
	buf := make([]byte, g.chunk)
	for i := range reqs {
		off, n, ok := g.layout.piece(i)
		if !ok {
			if err := st.Send(&peerpb.Message{Msg: &peerpb.Message_Reject{Reject: &peerpb.Reject{Index: uint32(i), Reason: peerpb.Reject_REASON_NOT_HELD}}}); err != nil {
				return err
			}
			continue
		}
		for o := int64(0); o < n; {
			c := min(g.chunk, n-o)
			if _, err := g.layout.f.ReadAt(buf[:c], off+o); err != nil {
				return err
			}
			if err := st.Send(&peerpb.Message{Msg: &peerpb.Message_Chunk{Chunk: &peerpb.PieceChunk{Index: uint32(i), Offset: o, Data: buf[:c]}}}); err != nil {
				return err
			}
			o += c
		}
	}
	return nil
}
