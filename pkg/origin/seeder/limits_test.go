package seeder

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/internal/eventually"
	"github.com/shoal-dev/shoal/pkg/storage/inmemory"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// openSilentStreams opens n connections to addr, each with one Exchange
// stream that never sends a message, and waits until the seeder holds all
// of them.
func openSilentStreams(t *testing.T, s *testSeeder, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for i := range n {
		conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := peerpb.NewPeerClient(conn).Exchange(ctx); err != nil {
			t.Fatalf("opening silent stream %d: %v", i, err)
		}
	}
	var open int
	if err := eventually.Wait(eventually.Timeout, func() bool {
		s.connStreams.mu.Lock()
		defer s.connStreams.mu.Unlock()
		open = len(s.connStreams.open)
		return open >= n
	}); err != nil {
		t.Fatalf("waiting for the seeder to hold %d silent streams: %v; it holds %d", n, err, open)
	}
}

// Hundreds of connections that open an Exchange and never send a
// handshake hold none of the maxStreams slots: an agent's pull through
// the seeder completes while they stay open.
func TestSilentStreamsDoNotStallPulls(t *testing.T) {
	d := inmemory.New()
	blob, _ := randomBlob(t, 3<<20)
	dg := putBlob(t, d, blob)
	s := startSeeder(t, d, func(c *Config, _ *Options, _ string) {
		c.MaxStreams = 16
		// The silent streams stay for the whole test: the slots, not the
		// deadline, are what is tested here.
		c.HandshakeTimeout = time.Hour
	})
	openSilentStreams(t, s, 300)

	m := getMetainfo(t, s.client(), dg)
	if got := fetchAll(t, s.client(), m); !bytes.Equal(got, blob) {
		t.Fatalf("pulled %d bytes that differ from the %d-byte blob", len(got), len(blob))
	}
	if n := counter(t, s.m.refused.WithLabelValues("max_streams")); n != 0 {
		t.Errorf("%.0f streams refused at maxStreams, want 0: silent streams must not count against it", n)
	}
}

// A stream that sends no handshake within handshakeTimeout is ended with
// DEADLINE_EXCEEDED, and counted.
func TestStreamWithoutHandshakeIsEnded(t *testing.T) {
	d := inmemory.New()
	putBlob(t, d, []byte("hello"))
	s := startSeeder(t, d, func(c *Config, _ *Options, _ string) { c.HandshakeTimeout = 50 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := s.rawClient().Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("silent stream ended with %v, want DeadlineExceeded from the seeder", err)
	}
	if n := counter(t, s.m.refused.WithLabelValues("handshake_timeout")); n != 1 {
		t.Errorf("refused{handshake_timeout} = %.0f, want 1", n)
	}
	var open int
	if err := eventually.Wait(eventually.Timeout, func() bool {
		s.connStreams.mu.Lock()
		defer s.connStreams.mu.Unlock()
		open = len(s.connStreams.open)
		return open == 0
	}); err != nil {
		t.Fatalf("waiting for the ended stream to stop counting against its connection: %v; %d connections still counted", err, open)
	}
}

// One connection gets at most maxStreamsPerConn streams; another
// connection is not affected by it.
func TestStreamsPerConnectionCap(t *testing.T) {
	d := inmemory.New()
	dg := putBlob(t, d, []byte("hello"))
	s := startSeeder(t, d, func(c *Config, _ *Options, _ string) { c.MaxStreamsPerConn = 2 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		st, err := s.client().Exchange(ctx)
		if err != nil {
			t.Fatal(err)
		}
		handshake(t, st, dg)
	}
	third, err := s.client().Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = third.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{Digest: dg.String(), PeerId: "c"}}})
	if _, err := third.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third stream on one connection: %v, want ResourceExhausted", err)
	}
	if n := counter(t, s.m.refused.WithLabelValues("per_connection")); n != 1 {
		t.Errorf("refused{per_connection} = %.0f, want 1", n)
	}

	other, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStreamInterceptor(capabilityStreams(clusterKey())))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	st, err := peerpb.NewPeerClient(other).Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if hs := handshake(t, st, dg); !hs.GetComplete() {
		t.Fatalf("a stream on another connection got handshake %v, want the seeder's complete one", hs)
	}
}

// GetMetainfo calls that would read a blob from storage are limited per
// client; calls for blobs already warm, or joining a call that is reading
// one, are not; a refused call reads nothing and says when to retry.
func TestColdMetainfoIsRateLimitedPerClient(t *testing.T) {
	d := newCountingDriver()
	var blobs []digest.Digest
	for i := range 3 {
		b, _ := randomBlob(t, 1000+i)
		blobs = append(blobs, putBlob(t, d, b))
	}
	s := startSeeder(t, d, func(c *Config, _ *Options, _ string) {
		c.ColdMetainfoRate = 0.0001 // no token comes back during the test
		c.ColdMetainfoBurst = 2
	})
	// Asked for at once, a new blob costs its client one token, not one
	// per call: the calls after the first join its work.
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := s.client().GetMetainfo(ctx, &peerpb.GetMetainfoRequest{Digest: blobs[0].String()})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("one of 10 calls at once for a new blob, with a burst of 2: %v, want all answered", err)
		}
	}
	getMetainfo(t, s.client(), blobs[1])

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := s.client().GetMetainfo(ctx, &peerpb.GetMetainfoRequest{Digest: blobs[2].String()})
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("third cold GetMetainfo with a burst of 2: %v, want ResourceExhausted", err)
	}
	var retry *errdetails.RetryInfo
	for _, det := range st.Details() {
		if r, ok := det.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Errorf("refusal details %v, want a RetryInfo with a positive delay", st.Details())
	}
	// A cache fill would read in the background; its entry is made while
	// the call is answered, so none now means none was started.
	if s.cache.has(blobs[2]) {
		t.Errorf("the refused call started reading the blob into the cache")
	}
	if n := d.readsOf(blobs[2]); n != 0 {
		t.Errorf("the refused call read the blob %d times, want 0", n)
	}
	if n := counter(t, s.m.refused.WithLabelValues("metainfo_rate")); n != 1 {
		t.Errorf("refused{metainfo_rate} = %.0f, want 1", n)
	}

	// Warm blobs cost nothing: asked again and again, they are answered.
	for range 5 {
		getMetainfo(t, s.client(), blobs[0])
	}
}

func TestClientLimitsAreSeparateAndRefill(t *testing.T) {
	l, err := newClientLimits(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	for i := range 2 {
		if ok, _ := l.allow("10.0.0.1", now); !ok {
			t.Fatalf("call %d within the burst of 2 refused", i+1)
		}
	}
	ok, wait := l.allow("10.0.0.1", now)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("third call at once: allowed=%v wait=%s, want refused with a wait of at most 1s at 1/s", ok, wait)
	}
	if ok, _ := l.allow("10.0.0.2", now); !ok {
		t.Fatal("another client was refused for the first client's calls")
	}
	if ok, _ := l.allow("10.0.0.1", now.Add(wait)); !ok {
		t.Fatalf("after the %s the refusal named, the client was still refused", wait)
	}
}
