package auth_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"

	"github.com/shoal-dev/shoal/e2e/testenv"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// TestAForgedMetainfoFromAFakeSeederReachesNoClient: an agent whose only
// seeder is a fake one, which describes every blob as other bytes of the
// same size (its metainfo signed by a stranger's key, or not signed) and
// serves those bytes as pieces that match it. alice pulls a path2 layer
// through that agent: she gets the layer's true bytes or an error, never
// a 200 with the forger's bytes, nor any of them in a broken body; and the
// agent fetches no piece against metainfo it cannot verify. Even metainfo
// signed with the origin's own key (a stolen key) yields a broken
// response, not a complete 200: the assembled blob is checked against its
// digest before the last byte goes out.
func TestAForgedMetainfoFromAFakeSeederReachesNoClient(t *testing.T) {
	e := setup(t)
	layer := e.private.layers[0]
	stranger, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		sign func(*metainfo.Metainfo) error
		// valid: the signature verifies (a seeder holding the origin's
		// key), so the agent fetches the pieces and only the blob's
		// digest can catch the forgery. It shows that the signature is
		// what stops the other cases before any piece is fetched.
		valid bool
	}{
		{"signed by another key under the origin's key id", func(m *metainfo.Metainfo) error {
			err := stranger.SignMetainfo(m)
			m.KeyID = e.key.ID()
			return err
		}, false},
		{"signed by another key", stranger.SignMetainfo, false},
		{"unsigned", func(*metainfo.Metainfo) error { return nil }, false},
		{"signed with the origin's key", e.key.SignMetainfo, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := &forgedSeeder{sign: tc.sign, size: int64(len(layer.data)), blobs: map[string]*forgery{}}
			agent := testenv.Agent(t, testenv.AgentOptions{
				Name:    "forged",
				Origin:  e.origin.URL(),
				Seeders: []string{startForgedSeeder(t, fake)},
			})
			resp, err := http.DefaultClient.Do(mustRequest(t, agent.URL()+"/v2/path2/app/blobs/"+layer.digest, basic("alice")))
			if err != nil {
				t.Fatal(err)
			}
			body, readErr := io.ReadAll(resp.Body)
			resp.Body.Close()
			// The counts below say what the agent did not do: stopped (it
			// has exited once Stop returns), it can no longer fetch late, so
			// they are final. Stop's error is reported by the cleanup.
			_ = agent.Stop(testenv.DefaultStopTimeout)
			t.Logf("alice got %s, %d bytes, read error %v; the fake seeder was asked for metainfo %d times and sent %d pieces",
				resp.Status, len(body), readErr, fake.asked.Load(), fake.served.Load())
			if fake.asked.Load() == 0 {
				t.Fatal("the agent never asked the fake seeder for the metainfo: the test proved nothing")
			}
			switch served := fake.served.Load(); {
			case tc.valid && served == 0:
				t.Errorf("the agent fetched no piece against metainfo signed with the origin's key: the signature check cannot be what stops the other cases")
			case !tc.valid && served > 0:
				t.Errorf("the agent fetched %d pieces against metainfo whose signature does not verify", served)
			}
			// Only pieces verified against the metainfo are streamed, so
			// with metainfo that verifies, the forger's bytes do go out,
			// and the response must break before its end.
			evil := fake.forged(layer.digest)
			if !tc.valid && evil != nil && bytes.Contains(body, evil.data[:64]) {
				t.Errorf("the forger's bytes reached alice (%s, read error %v)", resp.Status, readErr)
			}
			if resp.StatusCode == http.StatusOK && readErr == nil && !bytes.Equal(body, layer.data) {
				t.Errorf("alice got a complete-looking 200 with %d bytes that are not the layer's", len(body))
			}
		})
	}
}

func mustRequest(t *testing.T, url, authz string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", authz)
	return req
}

// forgedSeeder speaks shoal.peer.v1 like a seeder, but for every blob it
// is asked about it makes up bytes of the blob's true size (so that only
// the signature can give it away), and serves metainfo and pieces that
// agree with each other and not with the digest.
type forgedSeeder struct {
	peerpb.UnimplementedPeerServer
	sign func(*metainfo.Metainfo) error
	size int64 // of every blob

	mu     sync.Mutex
	blobs  map[string]*forgery
	asked  atomic.Int64 // GetMetainfo calls
	served atomic.Int64 // pieces sent
}

// forgery is the made-up content of one digest.
type forgery struct {
	meta *metainfo.Metainfo
	data []byte
}

func (f *forgedSeeder) forged(d string) *forgery {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blobs[d]
}

func (f *forgedSeeder) forge(d string) (*forgery, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fg, ok := f.blobs[d]; ok {
		return fg, nil
	}
	data := make([]byte, f.size)
	_, _ = rand.Read(data)
	const pieceLength = 64 << 10
	m := &metainfo.Metainfo{Digest: digest.Digest(d), Size: f.size, PieceLength: pieceLength}
	for off := 0; off < len(data); off += pieceLength {
		m.PieceHashes = append(m.PieceHashes, sha256.Sum256(data[off:min(off+pieceLength, len(data))]))
	}
	if err := f.sign(m); err != nil {
		return nil, err
	}
	fg := &forgery{meta: m, data: data}
	f.blobs[d] = fg
	return fg, nil
}

func (f *forgedSeeder) GetMetainfo(_ context.Context, req *peerpb.GetMetainfoRequest) (*peerpb.Metainfo, error) {
	f.asked.Add(1)
	fg, err := f.forge(req.GetDigest())
	if err != nil {
		return nil, err
	}
	return fg.meta.Proto(), nil
}

func (f *forgedSeeder) Exchange(stream grpc.BidiStreamingServer[peerpb.Message, peerpb.Message]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hs := first.GetHandshake()
	if hs == nil {
		return errors.New("forged seeder: want a handshake first")
	}
	fg, err := f.forge(hs.GetDigest())
	if err != nil {
		return err
	}
	if err := stream.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{
		Digest: hs.GetDigest(), PeerId: "forged-seeder", Complete: true,
	}}}); err != nil {
		return err
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		req := m.GetRequest()
		if req == nil || int(req.GetIndex()) >= fg.meta.NumPieces() {
			continue
		}
		off := fg.meta.PieceOffset(int(req.GetIndex()))
		piece := fg.data[off : off+fg.meta.PieceSize(int(req.GetIndex()))]
		if err := stream.Send(&peerpb.Message{Msg: &peerpb.Message_Chunk{Chunk: &peerpb.PieceChunk{
			Index: req.GetIndex(), Data: piece,
		}}}); err != nil {
			return err
		}
		f.served.Add(1)
	}
}

// startForgedSeeder serves f on 127.0.0.1 until the test ends and returns
// its address.
func startForgedSeeder(t *testing.T, f *forgedSeeder) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	peerpb.RegisterPeerServer(s, f)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().String()
}
