package agent

import (
	"net"
	"strings"
	"testing"
)

// TestListenReportsABusyPortAndFreesTheOther: a taken mirror port is an
// error naming what failed (not a panic), and the peer port already bound
// is released.
func TestListenReportsABusyPortAndFreesTheOther(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peerAddr := free.Addr().String()
	free.Close()

	cfg := testConfig(t, "http://127.0.0.1:1", []string{"127.0.0.1:1"}, nil)
	cfg.PeerListen = peerAddr
	cfg.Listen = busy.Addr().String()
	a, err := Listen(cfg, nil)
	if err == nil {
		t.Fatal("Listen on a taken mirror port succeeded")
	}
	if a != nil || !strings.Contains(err.Error(), "listening for the mirror") {
		t.Fatalf("Listen = %v, %v; want nil and an error about the mirror listener", a, err)
	}
	again, err := net.Listen("tcp", peerAddr)
	if err != nil {
		t.Fatalf("the peer port %s was not released after the failed Listen: %v", peerAddr, err)
	}
	again.Close()
}
