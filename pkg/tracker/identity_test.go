package tracker

import (
	"context"
	"crypto/tls"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/internal/rendezvous"
	"github.com/shoal-dev/shoal/internal/testpki"
	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/proto/trackerpb"
)

// mtlsTracker is a tracker that requires cluster certificates, and a way
// to call it as the holder of any certificate of its CA.
type mtlsTracker struct {
	*testTracker
	ca *testpki.CA
}

func startMTLSTracker(t *testing.T, cfg Config) *mtlsTracker {
	t.Helper()
	ca := testpki.NewCA(t, "shoal test cluster CA")
	certPEM, keyPEM := ca.IssuePeer(t, auth.RoleTracker, "tracker-1")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert,
	})
	tr := startTrackerWith(t, cfg, Options{RequireIdentity: true}, grpc.Creds(creds))
	return &mtlsTracker{testTracker: tr, ca: ca}
}

// as returns a client presenting the certificate and key in PEM.
func (m *mtlsTracker) as(t *testing.T, certPEM, keyPEM []byte) trackerpb.TrackerClient {
	t.Helper()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(m.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: m.ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost",
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return trackerpb.NewTrackerClient(conn)
}

// peer returns a client holding a cluster certificate for role and id.
func (m *mtlsTracker) peer(t *testing.T, role auth.Role, id string) trackerpb.TrackerClient {
	t.Helper()
	c, k := m.ca.IssuePeer(t, role, id)
	return m.as(t, c, k)
}

func announceCode(t *testing.T, c trackerpb.TrackerClient, req *trackerpb.AnnounceRequest) (*trackerpb.AnnounceResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Announce(ctx, req)
}

func wantRefused(t *testing.T, err error, code codes.Code, what string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: error %v, want %s", what, err, code)
	}
}

// entryOf returns the live entry of id for blob A, if any.
func (m *mtlsTracker) entryOf(id string) (Peer, bool) {
	for _, p := range m.srv.Table().Peers(blobA, m.clock.Now()) {
		if p.ID == id {
			return p, true
		}
	}
	return Peer{}, false
}

func TestMTLSForgedIsOriginRefused(t *testing.T) {
	m := startMTLSTracker(t, DefaultConfig())
	agent := m.peer(t, auth.RoleAgent, "agent-1")
	_, err := announceCode(t, agent, &trackerpb.AnnounceRequest{
		Digest: blobA, PeerId: "agent-1", Addr: "127.0.0.1:7002", Complete: true, IsOrigin: true, Event: trackerpb.Event_EVENT_COMPLETED})
	wantRefused(t, err, codes.PermissionDenied, "an agent certificate announcing is_origin")
	if !strings.Contains(err.Error(), "origin certificate") {
		t.Errorf("refusal %q does not say an origin certificate is needed", err)
	}
	if m.srv.Table().Len() != 0 {
		t.Fatalf("the forged origin announce left %d entries", m.srv.Table().Len())
	}
	if got := testutil.ToFloat64(m.srv.metrics.announces.WithLabelValues("completed", "denied")); got != 1 {
		t.Errorf(`shoal_tracker_announces_total{event="completed",result="denied"} = %v, want 1`, got)
	}

	// The same announce from an origin certificate is taken, and the origin
	// is handed out as one.
	origin := m.peer(t, auth.RoleOrigin, "origin-1")
	if _, err := announceCode(t, origin, &trackerpb.AnnounceRequest{
		Digest: blobA, PeerId: "origin-1", Addr: "127.0.0.1:7002", Complete: true, IsOrigin: true}); err != nil {
		t.Fatalf("origin certificate announcing is_origin: %v", err)
	}
	resp, err := announceCode(t, agent, &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "agent-1", Addr: "127.0.0.1:7003"})
	if err != nil {
		t.Fatalf("agent announce: %v", err)
	}
	if len(resp.GetPeers()) != 1 || resp.GetPeers()[0].GetPeerId() != "origin-1" || !resp.GetPeers()[0].GetIsOrigin() {
		t.Fatalf("agent got %v, want origin-1 as an origin", resp.GetPeers())
	}
}

func TestMTLSPeerCannotClaimAnothersID(t *testing.T) {
	m := startMTLSTracker(t, DefaultConfig())
	victim := m.peer(t, auth.RoleAgent, "agent-1")
	if _, err := announceCode(t, victim, &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "agent-1", Addr: "127.0.0.1:7002", Bitfield: []byte{0xff}}); err != nil {
		t.Fatalf("victim's own announce: %v", err)
	}
	mallory := m.peer(t, auth.RoleAgent, "agent-2")

	_, err := announceCode(t, mallory, &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "agent-1", Addr: "127.0.0.1:7666"})
	wantRefused(t, err, codes.PermissionDenied, "agent-2 announcing as agent-1")
	if !strings.Contains(err.Error(), `announce as "agent-2"`) {
		t.Errorf("refusal %q does not name the id the certificate allows", err)
	}
	_, err = announceCode(t, mallory, &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "origin-1", Addr: "127.0.0.1:7666", IsOrigin: true})
	wantRefused(t, err, codes.PermissionDenied, "agent-2 announcing as the origin")

	// Nor can it remove the victim's entry.
	_, err = announceCode(t, mallory, &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "agent-1", Addr: "127.0.0.1:7002", Event: trackerpb.Event_EVENT_STOPPED})
	wantRefused(t, err, codes.PermissionDenied, "agent-2 stopping agent-1's entry")
	// Its own STOPPED removes only its own (absent) entry.
	if _, err := announceCode(t, mallory, &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "agent-2", Addr: "127.0.0.1:7666", Event: trackerpb.Event_EVENT_STOPPED}); err != nil {
		t.Fatalf("agent-2's own STOPPED: %v", err)
	}
	p, ok := m.entryOf("agent-1")
	if !ok || p.Addr != "127.0.0.1:7002" || p.Pieces != 8 || m.srv.Table().Len() != 1 {
		t.Fatalf("agent-1's entry after agent-2's attempts: %+v (present %t), table holds %d; want it untouched and alone", p, ok, m.srv.Table().Len())
	}

	// The owner removes its own.
	if _, err := announceCode(t, victim, &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "agent-1", Addr: "127.0.0.1:7002", Event: trackerpb.Event_EVENT_STOPPED}); err != nil {
		t.Fatalf("agent-1's own STOPPED: %v", err)
	}
	if _, ok := m.entryOf("agent-1"); ok {
		t.Fatal("agent-1's STOPPED did not remove its entry")
	}
}

func TestMTLSAnnouncedAddressMustBelongToThePeer(t *testing.T) {
	m := startMTLSTracker(t, DefaultConfig())
	c, k := m.ca.IssueIdentity(t, auth.Identity{
		Role: auth.RoleAgent, ID: "agent-1",
		IPs:      []netip.Addr{netip.MustParseAddr("10.1.2.3")},
		DNSNames: []string{"agent-1.example.com"},
	})
	agent := m.as(t, c, k)
	tests := []struct {
		addr, want string // want: the entry's address, "" for a refusal
	}{
		{"127.0.0.1:7002", "127.0.0.1:7002"},                     // the source address
		{":7002", "127.0.0.1:7002"},                              // filled in with it
		{"10.1.2.3:7002", "10.1.2.3:7002"},                       // an IP SAN
		{"AGENT-1.example.com:7002", "AGENT-1.example.com:7002"}, // a DNS SAN
		{"10.9.9.9:7002", ""},
		{"[::1]:7002", ""},
		{"agent-2.example.com:7002", ""},
	}
	for _, tt := range tests {
		_, err := announceCode(t, agent, &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "agent-1", Addr: tt.addr})
		if tt.want == "" {
			wantRefused(t, err, codes.PermissionDenied, "announcing addr "+tt.addr)
			continue
		}
		if err != nil {
			t.Fatalf("announcing addr %s: %v", tt.addr, err)
		}
		if p, _ := m.entryOf("agent-1"); p.Addr != tt.want {
			t.Fatalf("after announcing addr %s the entry's address is %q, want %q", tt.addr, p.Addr, tt.want)
		}
	}
}

// Certificates of the cluster CA outside the profile, and tracker
// certificates, do not announce.
func TestMTLSOnlyPeerCertificatesAnnounce(t *testing.T) {
	m := startMTLSTracker(t, DefaultConfig())
	c, k := m.ca.Issue(t, "agent-1", 9)
	_, err := announceCode(t, m.as(t, c, k), &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "agent-1", Addr: "127.0.0.1:7002"})
	wantRefused(t, err, codes.Unauthenticated, "a cluster certificate without a shoal:// identity")
	if !strings.Contains(err.Error(), "docs/certificates.md") {
		t.Errorf("refusal %q does not point at the certificate docs", err)
	}
	_, err = announceCode(t, m.peer(t, auth.RoleTracker, "tracker-2"), &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "tracker-2", Addr: "127.0.0.1:7002"})
	wantRefused(t, err, codes.PermissionDenied, "a tracker certificate")
	if m.srv.Table().Len() != 0 {
		t.Fatalf("refused announces left %d entries", m.srv.Table().Len())
	}
}

// A full table refuses announces for new blobs with RESOURCE_EXHAUSTED and
// counts what it sheds; the client then uses its next tracker, without
// putting the full one in cooldown.
func TestCapsShedAndCount(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxBlobs, cfg.MaxPeersPerBlob = 1, 1
	full := startTrackerWith(t, cfg, Options{})
	c := newTestClient(t, full.addr)
	ctx := context.Background()
	if _, err := c.Announce(ctx, &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "a", Addr: "127.0.0.1:7002"}); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Announce(ctx, &trackerpb.AnnounceRequest{Digest: blobA, PeerId: "b", Addr: "127.0.0.1:7003"})
	if err != nil || len(resp.GetPeers()) != 1 || resp.GetPeers()[0].GetPeerId() != "a" {
		t.Fatalf("newcomer to a full blob: %v, %v; want an answer listing a", resp.GetPeers(), err)
	}
	_, err = c.Announce(ctx, &trackerpb.AnnounceRequest{Digest: blobB, PeerId: "a", Addr: "127.0.0.1:7002"})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("announce of a new blob to a full table: %v, want RESOURCE_EXHAUSTED", err)
	}
	if n, blobs := full.srv.Table().Len(), full.srv.Table().Blobs(); n != 1 || blobs != 1 {
		t.Fatalf("table holds %d entries over %d blobs, want 1 over 1", n, blobs)
	}
	for reason, want := range map[string]float64{"blob_full": 1, "blobs": 1, "entries": 0} {
		if got := testutil.ToFloat64(full.srv.metrics.shed[shedReasonByLabel(t, reason)]); got != want {
			t.Errorf(`shoal_tracker_shed_total{reason=%q} = %v, want %v`, reason, got, want)
		}
	}
	if got := testutil.ToFloat64(full.srv.metrics.announces.WithLabelValues("none", "exhausted")); got != 1 {
		t.Errorf(`shoal_tracker_announces_total{result="exhausted"} = %v, want 1`, got)
	}

	spare := startTracker(t)
	c2 := newTestClient(t, full.addr, spare.addr)
	// Ask for blob B twice whatever the rank order: the full tracker is
	// skipped, and stays first in line for blobs it ranks first.
	for range 2 {
		if _, err := c2.Announce(ctx, &trackerpb.AnnounceRequest{Digest: blobB, PeerId: "a", Addr: "127.0.0.1:7002"}); err != nil {
			t.Fatalf("announce with a full tracker and a spare: %v", err)
		}
	}
	if spare.srv.Table().Len() != 1 {
		t.Fatalf("the spare tracker holds %d entries, want blob B's", spare.srv.Table().Len())
	}
	if got, want := c2.Order(blobB), rendezvous.Rank(blobB, []string{full.addr, spare.addr}); got[0] != want[0] {
		t.Fatalf("Order = %v after a full tracker's refusals, want the rank order %v (no cooldown)", got, want)
	}
}

func shedReasonByLabel(t *testing.T, label string) ShedReason {
	for r := NotShed + 1; r < numShedReasons; r++ {
		if r.String() == label {
			return r
		}
	}
	t.Fatalf("no shed reason %q", label)
	return NotShed
}
