// Package peerwire holds what the servers of shoal.peer.v1 (the origin's
// seeder and the agent's peer service) share about reading a stream, and
// how the origin tells agents where its seeders are (SeedersHeader).
package peerwire

import (
	"errors"
	"time"

	"github.com/shoal-dev/shoal/proto/peerpb"
)

// ErrTimeout is RecvWithin's error when no message came in time.
var ErrTimeout = errors.New("no message in time")

// Receiver is the receiving side of an Exchange stream.
type Receiver interface {
	Recv() (*peerpb.Message, error)
}

// RecvWithin receives one message, giving up after d with ErrTimeout: a
// peer that opens a stream and says nothing costs no more than that. The
// Recv left waiting ends when the caller's handler returns and gRPC ends
// the stream.
func RecvWithin(st Receiver, d time.Duration) (*peerpb.Message, error) {
	type result struct {
		m   *peerpb.Message
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := st.Recv()
		ch <- result{m, err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-t.C:
		return nil, ErrTimeout
	}
}
