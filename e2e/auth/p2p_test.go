package auth_test

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/pkg/auth"
	"github.com/shoal-dev/shoal/proto/peerpb"
)

// TestPeersServeAPrivateBlobOnlyAgainstACapabilityForIt: the origin's
// seeder and an agent holding a path2 layer are asked for its metainfo and
// pieces over their real peer ports by a client with no capability, with
// one for another blob, and with one signed by another key. Each is
// refused with PERMISSION_DENIED before anything about the blob is said;
// a capability the origin signed for the blob (controls: the test's own,
// and the one the origin hands alice with the blob) is served.
func TestPeersServeAPrivateBlobOnlyAgainstACapabilityForIt(t *testing.T) {
	e := setup(t)
	layer := e.private.layers[1]
	d := digest.Digest(layer.digest)
	// alice pulls the layer through the agent, so that the agent holds it.
	if a := (client{addr: e.agent.Addr}).do(t, http.MethodGet, "/v2/path2/app/blobs/"+layer.digest, basic("alice")); a.status != http.StatusOK || !bytes.Equal(a.body, layer.data) {
		t.Fatalf("control: alice's pull of the layer through the agent: %v", a)
	}

	o := client{addr: e.origin.Addr}
	handed := o.do(t, http.MethodHead, "/v2/path2/app/blobs/"+layer.digest, basic("alice")).header.Get(auth.CapabilityHeader)
	if handed == "" {
		t.Fatalf("the origin handed alice no %s with the blob she may pull", auth.CapabilityHeader)
	}
	for _, who := range []string{"", "bob"} {
		authz := ""
		if who != "" {
			authz = basic(who)
		}
		if c := o.do(t, http.MethodHead, "/v2/path2/app/blobs/"+layer.digest, authz).header.Get(auth.CapabilityHeader); c != "" {
			t.Errorf("the origin handed %q, who may not pull path2/app, a capability for its layer", who)
		}
	}
	own, err := e.key.IssueCapability(d, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	forOther, err := e.key.IssueCapability(digest.Digest(e.public.layers[0].digest), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	forged, err := stranger.IssueCapability(d, time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	for _, peer := range []struct{ name, addr string }{{"origin seeder", e.origin.SeederAddr}, {"agent", e.agent.PeerAddr}} {
		t.Run(peer.name, func(t *testing.T) {
			conn, err := grpc.NewClient(peer.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			pc := peerpb.NewPeerClient(conn)
			for _, c := range []struct{ name, capability string }{{"the origin's", handed}, {"the test's own, signed with the origin's key", own}} {
				m, err := getMetainfo(t, pc, d, c.capability)
				if err != nil || m.GetDigest() != layer.digest || m.GetSize() != int64(len(layer.data)) {
					t.Fatalf("control: GetMetainfo with %s capability: %v, %v", c.name, m, err)
				}
				if err := handshake(t, pc, d, c.capability); err != nil {
					t.Fatalf("control: Exchange with %s capability: %v", c.name, err)
				}
			}
			for _, c := range []struct{ name, capability string }{
				{"no capability", ""},
				{"a capability for another blob", forOther},
				{"a capability signed by another key", forged},
				{"garbage", "not.a.capability"},
			} {
				m, err := getMetainfo(t, pc, d, c.capability)
				if status.Code(err) != codes.PermissionDenied {
					t.Errorf("GetMetainfo with %s: %v, %v\nwant PERMISSION_DENIED", c.name, m, err)
				}
				if err := handshake(t, pc, d, c.capability); status.Code(err) != codes.PermissionDenied {
					t.Errorf("Exchange with %s: %v\nwant PERMISSION_DENIED before anything is said of the blob", c.name, err)
				}
			}
		})
	}
}

// withCapability adds the capability metadata to ctx (none when empty).
func withCapability(ctx context.Context, capability string) context.Context {
	if capability == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, auth.CapabilityMetadata, capability)
}

func getMetainfo(t *testing.T, pc peerpb.PeerClient, d digest.Digest, capability string) (*peerpb.Metainfo, error) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	return pc.GetMetainfo(withCapability(ctx, capability), &peerpb.GetMetainfoRequest{Digest: d.String()})
}

// handshake opens an Exchange, sends a handshake and asks for piece 0; it
// returns nil if the peer answered with its own handshake, else the
// stream's error. A refused stream must end before the peer's handshake
// (which would tell which pieces it holds) or any piece data.
func handshake(t *testing.T, pc peerpb.PeerClient, d digest.Digest, capability string) error {
	return handshakeAs(t, pc, d, capability, "e2e-auth-intruder")
}

// handshakeAs is handshake naming peerID in the handshake.
func handshakeAs(t *testing.T, pc peerpb.PeerClient, d digest.Digest, capability, peerID string) error {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := pc.Exchange(withCapability(ctx, capability))
	if err != nil {
		return err
	}
	if err := st.Send(&peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{Digest: d.String(), PeerId: peerID}}}); err != nil {
		_, err = st.Recv()
		return err
	}
	_ = st.Send(&peerpb.Message{Msg: &peerpb.Message_Request{Request: &peerpb.Request{Index: 0}}})
	m, err := st.Recv()
	if err != nil {
		return err
	}
	if m.GetHandshake() == nil {
		t.Errorf("the peer's first message is %v, not a handshake", m)
	}
	_ = st.CloseSend()
	return nil
}
