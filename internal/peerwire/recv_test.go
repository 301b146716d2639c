package peerwire

import (
	"errors"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/proto/peerpb"
)

type chanReceiver chan *peerpb.Message

func (c chanReceiver) Recv() (*peerpb.Message, error) { return <-c, nil }

func TestRecvWithinGivesUpOnASilentStream(t *testing.T) {
	silent := make(chanReceiver)
	defer close(silent)
	if m, err := RecvWithin(silent, time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("RecvWithin on a silent stream = %v, %v; want ErrTimeout", m, err)
	}
}

func TestRecvWithinReturnsTheMessage(t *testing.T) {
	c := make(chanReceiver, 1)
	want := &peerpb.Message{Msg: &peerpb.Message_Handshake{Handshake: &peerpb.Handshake{PeerId: "a"}}}
	c <- want
	m, err := RecvWithin(c, time.Hour)
	if err != nil || m != want {
		t.Fatalf("RecvWithin = %v, %v; want the message sent", m, err)
	}
}
