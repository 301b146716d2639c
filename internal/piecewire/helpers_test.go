package piecewire

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/testpki"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// blob is a test blob written to a file, with its metainfo.
type blob struct {
	data []byte
	meta *metainfo.Metainfo
	path string
}

func newBlob(t testing.TB, size int, pieceLength int64) *blob {
	t.Helper()
	data := make([]byte, size)
	var seed [32]byte
	seed[0], seed[1] = byte(size), byte(pieceLength>>10)
	_, _ = rand.NewChaCha8(seed).Read(data)
	d := digest.FromBytes(data)
	m, err := metainfo.Compute(bytes.NewReader(data), d, int64(size), pieceLength)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return &blob{data: data, meta: m, path: path}
}

func (b *blob) piece(i int) []byte {
	off := b.meta.PieceOffset(i)
	return b.data[off : off+b.meta.PieceSize(i)]
}

// fileSource serves one blob from its file, as the agent's piece store
// and the seeder's cache will: the file shared by every send. gate, if
// set, is received from before each piece is opened; opened counts opens
// per piece; reject, if set, decides declines.
type fileSource struct {
	b      *blob
	f      *os.File
	gate   chan struct{}
	reject func(i int) error
	// asReader serves through Piece.Reader instead of Piece.File.
	asReader bool

	mu     sync.Mutex
	opened map[int]int
	done   atomic.Int64 // Done calls
	// Piece.Sent calls and their bytes; told: Done calls whose sent was
	// what Sent had reported of the piece.
	rounds, sentBytes, told atomic.Int64
}

func newFileSource(t testing.TB, b *blob) *fileSource {
	f, err := os.Open(b.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &fileSource{b: b, f: f, opened: map[int]int{}}
}

func (s *fileSource) OpenPiece(ctx context.Context, d digest.Digest, i int) (*Piece, error) {
	s.mu.Lock()
	s.opened[i]++
	s.mu.Unlock()
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if d != s.b.meta.Digest || i >= s.b.meta.NumPieces() {
		return nil, ErrNotHeld
	}
	if s.reject != nil {
		if err := s.reject(i); err != nil {
			return nil, err
		}
	}
	var reported int64
	p := &Piece{Size: s.b.meta.PieceSize(i),
		Sent: func(n int64) {
			reported += n
			s.rounds.Add(1)
			s.sentBytes.Add(n)
		},
		Done: func(sent int64, _ error) {
			s.done.Add(1)
			if sent == reported {
				s.told.Add(1)
			}
		},
	}
	if s.asReader {
		p.Reader = bytes.NewReader(s.b.piece(i))
	} else {
		p.File, p.Offset = s.f, s.b.meta.PieceOffset(i)
	}
	return p, nil
}

// multiSource serves the pieces of several blobs.
type multiSource []*fileSource

func (m multiSource) OpenPiece(ctx context.Context, d digest.Digest, i int) (*Piece, error) {
	for _, s := range m {
		if s.b.meta.Digest == d {
			return s.OpenPiece(ctx, d, i)
		}
	}
	return nil, ErrNotHeld
}

func (s *fileSource) opens(i int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened[i]
}

func (s *fileSource) totalOpens() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.opened {
		n += v
	}
	return n
}

// keys is an origin key and a verifier holding its public half.
type keys struct {
	key *auth.Key
	v   *auth.Verifier
}

func newKeys(t testing.TB) keys {
	k, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return keys{key: k, v: auth.NewVerifier(k.Public())}
}

func (k keys) capability(t testing.TB, d digest.Digest) string {
	tok, err := k.key.IssueCapability(d, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testServer is a Server on a loopback listener whose connections' ends
// are reported on ended.
type testServer struct {
	*Server
	addr  string
	ended chan error
}

// startServer starts a server; handled, if given, sees every client frame
// the server acted on.
func startServer(t testing.TB, cfg ServerConfig, src Source, v Verifier, tlsConfig *tls.Config, handled ...func(Frame)) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsConfig != nil {
		l = tls.NewListener(l, tlsConfig)
	}
	cfg.Logger = quietLogger()
	ts := &testServer{Server: NewServer(cfg, src, v), addr: l.Addr().String(), ended: make(chan error, 64)}
	for _, h := range handled {
		ts.handled = h
	}
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go func() { ts.ended <- ts.ServeConn(nc) }()
		}
	}()
	t.Cleanup(func() { l.Close(); ts.Close() })
	return ts
}

// connEnd waits for the next connection of ts to end and returns why.
func (ts *testServer) connEnd(t testing.TB) error {
	t.Helper()
	select {
	case err := <-ts.ended:
		return err
	case <-time.After(time.Minute):
		t.Fatal("no server connection ended within a minute")
		return nil
	}
}

// tlsConfigs returns a TLS 1.3 server and client configuration with a
// throwaway CA.
func tlsConfigs(t testing.TB) (server, client *tls.Config) {
	ca := testpki.NewCA(t, "piecewire test CA")
	certPEM, keyPEM := ca.Issue(t, "127.0.0.1", 2)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13},
		&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
}

// waitDone waits until c has ended and returns its error.
func waitDone(t testing.TB, c *Conn) error {
	t.Helper()
	select {
	case <-c.Done():
		return c.Err()
	case <-time.After(time.Minute):
		t.Fatal("the client connection did not end within a minute")
		return nil
	}
}

// nextResult waits for the next result on c.
func nextResult(t testing.TB, c *Conn) (Result, bool) {
	t.Helper()
	select {
	case r, ok := <-c.Results():
		return r, ok
	case <-time.After(time.Minute):
		t.Fatal("no result within a minute")
		return Result{}, false
	}
}

// dial connects a client to ts for b, with a capability from k.
func (ts *testServer) dial(t testing.TB, tlsConfig *tls.Config, b *blob, k keys, cfg ClientConfig) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), ts.addr, tlsConfig, b.meta, k.capability(t, b.meta.Digest), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// requestAll requests pieces 0 to n-1 on c.
func requestAll(t testing.TB, c *Conn, n int) {
	t.Helper()
	for i := range n {
		if err := c.Request(i); err != nil {
			t.Fatalf("requesting piece %d: %v", i, err)
		}
	}
}
