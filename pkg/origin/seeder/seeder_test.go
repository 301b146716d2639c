package seeder

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/internal/peerwire"
	"github.com/shoal-dev/shoal/pkg/cluster"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// A blob pushed through the registry API is described by GetMetainfo with
// the right piece hashes (every piece fetched over Exchange verifies), the
// metainfo stored at the push and not computed again, and the egress
// counter counts exactly the piece bytes sent.
func TestPushedBlobMetainfoAndPieces(t *testing.T) {
	d := newCountingDriver()
	// Nine pieces of 1 MiB, the last short, each sent in several chunks.
	blob, _ := randomBlob(t, 8<<20+12345)
	dg := pushBlob(t, d, blob)
	s := startSeeder(t, d, nil)

	m := getMetainfo(t, s.client(), dg)
	want, err := metainfo.Compute(bytes.NewReader(blob), dg, int64(len(blob)), metainfo.PieceLengthFor(int64(len(blob))))
	if err != nil {
		t.Fatal(err)
	}
	if m.Digest != dg || m.Size != want.Size || m.PieceLength != want.PieceLength || m.NumPieces() != 9 {
		t.Fatalf("metainfo = {%s %d %d %d pieces}, want {%s %d %d 9 pieces}", m.Digest, m.Size, m.PieceLength, m.NumPieces(), dg, want.Size, want.PieceLength)
	}
	for i := range want.PieceHashes {
		if m.PieceHashes[i] != want.PieceHashes[i] {
			t.Fatalf("piece %d hash differs from SHA-256 of the piece", i)
		}
	}
	stored, err := metainfo.Load(context.Background(), d, dg)
	if err != nil {
		t.Fatalf("metainfo was not stored: %v", err)
	}
	if stored.NumPieces() != 9 {
		t.Fatalf("stored metainfo has %d pieces, want 9", stored.NumPieces())
	}

	got := fetchAll(t, s.client(), m)
	if !bytes.Equal(got, blob) {
		t.Fatal("pieces fetched over Exchange do not assemble into the blob")
	}
	if e := counter(t, s.m.egressBytes); e != float64(len(blob)) {
		t.Errorf("egress counter = %.0f, want exactly the blob size %d", e, len(blob))
	}
	if n := counter(t, s.m.metainfoComputed); n != 0 {
		t.Errorf("metainfo computed %.0f times, want 0 (stored when the blob was pushed)", n)
	}
	if n := counter(t, s.m.piecesServed.WithLabelValues("cache")); n != 9 {
		t.Errorf("pieces served from cache = %.0f, want 9", n)
	}
	if r := d.readsOf(dg); r != 1 {
		t.Errorf("storage reads of the blob = %d, want 1 (pieces from one read into the cache)", r)
	}

	// A second download is served from the cache: no new storage read.
	if got := fetchAll(t, s.client(), getMetainfo(t, s.client(), dg)); !bytes.Equal(got, blob) {
		t.Fatal("second download differs")
	}
	if r := d.readsOf(dg); r != 1 {
		t.Errorf("storage reads after a second download = %d, want 1", r)
	}
	if e := counter(t, s.m.egressBytes); e != 2*float64(len(blob)) {
		t.Errorf("egress counter = %.0f after two downloads, want %d", e, 2*len(blob))
	}
}

func TestConcurrentGetMetainfoReadsStorageOnce(t *testing.T) {
	d := newCountingDriver()
	blob, _ := randomBlob(t, 5<<20)
	dg := putBlob(t, d, blob)
	// Four downloads at once below: on a link not measured yet the node
	// sends four pieces at a time and answers BUSY beyond, which this
	// test's downloads do not retry; storage reads are what it checks.
	s := startSeeder(t, d, func(c *Config, _ *Options, _ string) { c.MaxUploadWait = 0 })

	const callers = 32
	var wg sync.WaitGroup
	ms := make([]*peerpb.Metainfo, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() {
			ms[i], errs[i] = s.client().GetMetainfo(context.Background(), &peerpb.GetMetainfoRequest{Digest: dg.String()})
		})
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if !bytes.Equal(ms[i].PieceHashes, ms[0].PieceHashes) {
			t.Fatalf("caller %d got different piece hashes", i)
		}
	}
	if r := d.readsOf(dg); r != 1 {
		t.Errorf("%d concurrent GetMetainfo read the blob from storage %d times, want 1", callers, r)
	}
	if n := counter(t, s.m.metainfoComputed); n != 1 {
		t.Errorf("metainfo computed %.0f times, want 1", n)
	}

	// Concurrent downloads right after share the cached copy too.
	m, err := metainfo.FromProto(ms[0])
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		wg.Go(func() {
			if got := fetchAll(t, s.client(), m); !bytes.Equal(got, blob) {
				t.Error("download differs from the blob")
			}
		})
	}
	wg.Wait()
	if r := d.readsOf(dg); r != 1 {
		t.Errorf("storage reads after 4 downloads = %d, want 1", r)
	}
	if e := counter(t, s.m.egressBytes); e != 4*float64(len(blob)) {
		t.Errorf("egress counter = %.0f, want %d", e, 4*len(blob))
	}
}

// Stored metainfo is used as is (whatever its piece length), not computed.
func TestStoredMetainfoIsServed(t *testing.T) {
	d := inmemory.New()
	blob, _ := randomBlob(t, 3<<20+7)
	dg := putBlob(t, d, blob)
	m, err := metainfo.Compute(bytes.NewReader(blob), dg, int64(len(blob)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := metainfo.Store(context.Background(), d, m); err != nil {
		t.Fatal(err)
	}
	s := startSeeder(t, d, nil)
	got := getMetainfo(t, s.client(), dg)
	if got.PieceLength != 1<<20 || got.NumPieces() != 4 {
		t.Fatalf("served metainfo has piece length %d and %d pieces, want the stored 1 MiB and 4", got.PieceLength, got.NumPieces())
	}
	if n := counter(t, s.m.metainfoComputed); n != 0 {
		t.Errorf("metainfo computed %.0f times though it was stored", n)
	}
	if !bytes.Equal(fetchAll(t, s.client(), got), blob) {
		t.Fatal("download differs from the blob")
	}
}

func TestEmptyBlob(t *testing.T) {
	d := inmemory.New()
	dg := putBlob(t, d, nil)
	s := startSeeder(t, d, nil)
	m := getMetainfo(t, s.client(), dg)
	if m.Size != 0 || m.NumPieces() != 0 {
		t.Fatalf("empty blob metainfo: size %d, %d pieces", m.Size, m.NumPieces())
	}
	if got := fetchAll(t, s.client(), m); len(got) != 0 {
		t.Fatalf("empty blob download returned %d bytes", len(got))
	}
}

func TestUnknownBlob(t *testing.T) {
	d := inmemory.New()
	s := startSeeder(t, d, nil)
	_, dg := randomBlob(t, 10)
	// Metainfo alone (a blob deleted by GC) does not make a blob known.
	if err := metainfo.Store(context.Background(), d, &metainfo.Metainfo{Digest: dg, Size: 10, PieceLength: 1 << 22, PieceHashes: make([][32]byte, 1)}); err != nil {
		t.Fatal(err)
	}
	_, err := s.client().GetMetainfo(context.Background(), &peerpb.GetMetainfoRequest{Digest: dg.String()})
	if status.Code(err) != codes.NotFound {
		t.Errorf("GetMetainfo(unknown blob) = %v, want NotFound", err)
	}
	_, err = s.client().GetMetainfo(context.Background(), &peerpb.GetMetainfoRequest{Digest: "sha256:nothex"})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetMetainfo(bad digest) = %v, want InvalidArgument", err)
	}

	stream, err := s.client().Exchange(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{Digest: dg.String(), PeerId: "a"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.NotFound {
		t.Errorf("Exchange(unknown blob) = %v, want NotFound", err)
	}

	stream, err = s.client().Exchange(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&peerpb.Message{Msg: &peerpb.Message_Request{Request: &peerpb.Request{Index: 0}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Exchange without handshake = %v, want InvalidArgument", err)
	}
	if n := counter(t, s.m.metainfoRequests.WithLabelValues("not_found")); n != 1 {
		t.Errorf("not_found metainfo requests = %.0f, want 1", n)
	}
}

func request(t *testing.T, stream peerpb.Peer_ExchangeClient, i uint32) {
	t.Helper()
	if err := stream.Send(&peerpb.Message{Msg: &peerpb.Message_Request{Request: &peerpb.Request{Index: i}}}); err != nil {
		t.Fatal(err)
	}
}

// receiveAnswer reads one answer to a stream's request of piece i of m:
// the whole piece (nil), or a reject.
func receiveAnswer(t *testing.T, st peerpb.Peer_ExchangeClient, m *metainfo.Metainfo, i uint32) *peerpb.Reject {
	t.Helper()
	var got int64
	for {
		msg, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r := msg.GetReject(); r != nil {
			if r.Index != i {
				t.Fatalf("reject of piece %d, want an answer about %d", r.Index, i)
			}
			return r
		}
		ch := msg.GetChunk()
		if ch == nil || ch.Index != i {
			t.Fatalf("got %v, want a chunk of piece %d", msg, i)
		}
		if got += int64(len(ch.Data)); got == m.PieceSize(int(i)) {
			return nil
		}
	}
}

// With one upload slot and a slow egress budget, a second stream's request
// is rejected as busy while the first piece is being sent; a Cancel stops
// that piece; an index past the end is rejected as not held; and the egress
// counter still equals the bytes that went out.
func TestBusyCancelAndEgress(t *testing.T) {
	d := inmemory.New()
	blob, _ := randomBlob(t, 8<<20)
	dg := putBlobPieces(t, d, blob)
	s := startSeeder(t, d, func(c *Config, _ *Options, _ string) {
		c.MaxUploads = 1
		c.EgressBytesPerSecond = 1 << 20 // 1 MiB burst, then one chunk a second
	})
	m := getMetainfo(t, s.client(), dg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	a, err := s.client().Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	handshake(t, a, dg)
	request(t, a, 0)
	msg, err := a.Recv()
	if err != nil || msg.GetChunk() == nil || msg.GetChunk().Index != 0 {
		t.Fatalf("first message on stream a = %v, %v; want a chunk of piece 0", msg, err)
	}
	received := int64(len(msg.GetChunk().Data))

	b, err := s.client().Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	handshake(t, b, dg)
	request(t, b, 1)
	msg, err = b.Recv()
	if err != nil || msg.GetReject() == nil || msg.GetReject().Reason != peerpb.Reject_REASON_BUSY || msg.GetReject().Index != 1 {
		t.Fatalf("stream b got %v, %v; want Reject{1, BUSY} while the only upload slot is taken", msg, err)
	}
	request(t, b, uint32(m.NumPieces()))
	msg, err = b.Recv()
	if err != nil || msg.GetReject().GetReason() != peerpb.Reject_REASON_NOT_HELD {
		t.Fatalf("request past the last piece: got %v, %v; want Reject NOT_HELD", msg, err)
	}
	if err := b.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Recv(); err != io.EOF {
		t.Fatalf("stream b after CloseSend: %v, want EOF", err)
	}

	if err := a.Send(&peerpb.Message{Msg: &peerpb.Message_Cancel{Cancel: &peerpb.Cancel{Index: 0}}}); err != nil {
		t.Fatal(err)
	}
	if err := a.CloseSend(); err != nil {
		t.Fatal(err)
	}
	chunks := 1
	for {
		msg, err := a.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if msg.GetChunk() == nil {
			t.Fatalf("after cancel got %v", msg)
		}
		chunks++
		received += int64(len(msg.GetChunk().Data))
	}
	// The chunk waiting on the egress budget when the Cancel arrived may
	// still go out; the rest of the 4-chunk piece must not.
	if chunks > 2 {
		t.Errorf("cancelled piece still sent %d chunks", chunks)
	}
	if e := counter(t, s.m.egressBytes); e != float64(received) {
		t.Errorf("egress counter = %.0f, want %d, the bytes received", e, received)
	}
	if n := counter(t, s.m.rejects.WithLabelValues("busy")); n != 1 {
		t.Errorf("busy rejects = %.0f, want 1", n)
	}
	if n := counter(t, s.m.piecesServed.WithLabelValues("cache")); n != 0 {
		t.Errorf("pieces served whole = %.0f, want 0 (the only one was cancelled)", n)
	}
}

func TestStreamLimit(t *testing.T) {
	d := inmemory.New()
	dg := putBlob(t, d, []byte("hello"))
	s := startSeeder(t, d, func(c *Config, _ *Options, _ string) { c.MaxStreams = 1 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := s.client().Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	handshake(t, a, dg)
	b, err := s.client().Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{Digest: dg.String(), PeerId: "b"}}})
	if _, err := b.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second stream over the limit: %v, want ResourceExhausted", err)
	}
}

// A node that does not own a blob asks its owner for the metainfo (so the
// owner computes it and caches the blob), names the owners in the response
// header, and serves pieces from storage itself.
func TestNonOwnerAsksOwner(t *testing.T) {
	d := newCountingDriver()
	var aAddr, bAddr string
	var mu sync.Mutex
	members := func() []cluster.Member {
		mu.Lock()
		defer mu.Unlock()
		return []cluster.Member{{Name: "a", Addr: aAddr}, {Name: "b", Addr: bAddr}}
	}
	blob, _ := blobOwnedBy(t, []cluster.Member{{Name: "a"}, {Name: "b"}}, "a", 5<<20+1)
	dg := putBlob(t, d, blob)
	a := startSeeder(t, d, func(c *Config, o *Options, addr string) {
		mu.Lock()
		aAddr = addr
		mu.Unlock()
		c.Replicas = 1
		o.Members = dynamicMembers{self: "a", list: members}
	})
	b := startSeeder(t, d, func(c *Config, o *Options, addr string) {
		mu.Lock()
		bAddr = addr
		mu.Unlock()
		c.Replicas = 1
		o.Members = dynamicMembers{self: "b", list: members}
	})

	var hdr metadata.MD
	p, err := b.client().GetMetainfo(context.Background(), &peerpb.GetMetainfoRequest{Digest: dg.String()}, grpc.Header(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get(peerwire.OwnersHeader); len(got) != 1 || got[0] != a.addr {
		t.Errorf("%s header = %v, want [%s]", peerwire.OwnersHeader, got, a.addr)
	}
	if n := counter(t, a.m.metainfoComputed); n != 1 {
		t.Errorf("owner computed metainfo %.0f times, want 1", n)
	}
	if n := counter(t, b.m.metainfoComputed); n != 0 {
		t.Errorf("non-owner computed metainfo %.0f times, want 0", n)
	}
	if n := counter(t, b.m.metainfoProxied.WithLabelValues("ok")); n != 1 {
		t.Errorf("non-owner asked the owner %.0f times, want 1", n)
	}
	m, err := metainfo.FromProto(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := fetchAll(t, b.client(), m); !bytes.Equal(got, blob) {
		t.Fatal("download from the non-owner differs")
	}
	if n := counter(t, b.m.piecesServed.WithLabelValues("storage")); n != float64(m.NumPieces()) {
		t.Errorf("non-owner served %.0f pieces from storage, want %d", n, m.NumPieces())
	}
	if e := counter(t, b.m.egressBytes); e != float64(len(blob)) {
		t.Errorf("non-owner egress = %.0f, want %d", e, len(blob))
	}

	// With the owner gone, the non-owner computes the metainfo itself.
	blob2, _ := blobOwnedBy(t, []cluster.Member{{Name: "a"}, {Name: "b"}}, "a", 1000)
	dg2 := putBlob(t, d, blob2)
	mu.Lock()
	aAddr = "127.0.0.1:1" // nothing listens there
	mu.Unlock()
	if m := getMetainfo(t, b.client(), dg2); m.Size != 1000 {
		t.Fatalf("metainfo with the owner down: size %d", m.Size)
	}
	if n := counter(t, b.m.metainfoComputed); n != 1 {
		t.Errorf("non-owner computed metainfo %.0f times with the owner down, want 1", n)
	}
}

type dynamicMembers struct {
	self string
	list func() []cluster.Member
}

func (d dynamicMembers) Self() cluster.Member {
	for _, m := range d.list() {
		if m.Name == d.self {
			return m
		}
	}
	return cluster.Member{Name: d.self}
}

func (d dynamicMembers) Owners(dg string, r int) []cluster.Member {
	return cluster.Owners(dg, d.list(), r)
}

// A blob whose bytes in storage do not match its digest is never seeded.
func TestCorruptBlobInStorageIsNotServed(t *testing.T) {
	d := inmemory.New()
	blob, dg := randomBlob(t, 1<<20)
	bad := bytes.Clone(blob)
	bad[100] ^= 1
	if err := d.PutContent(context.Background(), blobDataPath(dg), bad); err != nil {
		t.Fatal(err)
	}
	s := startSeeder(t, d, nil)
	_, err := s.client().GetMetainfo(context.Background(), &peerpb.GetMetainfoRequest{Digest: dg.String()})
	if status.Code(err) != codes.Internal {
		t.Fatalf("GetMetainfo of a corrupt blob = %v, want Internal", err)
	}
	// Computing the metainfo fails on the last byte, as the cache fill
	// does; the fill drops the copy right after.
	eventually.True(t, "the corrupt blob to leave the cache", func() bool { return !s.cache.has(dg) })
}

// Two nodes that briefly disagree on the owner (each thinks the other owns
// the blob) do not wait on each other: the node asked on another's behalf
// computes the metainfo itself.
func TestDisagreeingOwnersDoNotDeadlock(t *testing.T) {
	d := inmemory.New()
	blob, _ := randomBlob(t, 1<<20)
	dg := putBlob(t, d, blob)
	var mu sync.Mutex
	addrs := map[string]string{}
	// Each node's view has only the other node as a member with an address.
	viewOf := func(self string) func() []cluster.Member {
		return func() []cluster.Member {
			mu.Lock()
			defer mu.Unlock()
			other := map[string]string{"a": "b", "b": "a"}[self]
			return []cluster.Member{{Name: other, Addr: addrs[other]}}
		}
	}
	start := func(name string) *testSeeder {
		return startSeeder(t, d, func(c *Config, o *Options, addr string) {
			mu.Lock()
			addrs[name] = addr
			mu.Unlock()
			c.Replicas = 1
			o.Members = dynamicMembers{self: name, list: viewOf(name)}
		})
	}
	a, b := start("a"), start("b")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.client().GetMetainfo(ctx, &peerpb.GetMetainfoRequest{Digest: dg.String()}); err != nil {
		t.Fatalf("GetMetainfo with disagreeing owners: %v", err)
	}
	if n := counter(t, b.m.metainfoComputed); n != 1 {
		t.Errorf("node asked on another's behalf computed %.0f times, want 1", n)
	}
	if n := counter(t, a.m.metainfoComputed); n != 0 {
		t.Errorf("asking node computed %.0f times, want 0 (the other answered)", n)
	}
}
