package origin

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// chunkBuffers bounds the bytes of one chunk that have been read from the
// client but not yet taken by the storage writer or the piece hasher, in
// copyBuffers (1 MiB each). The reference storage writers send what they
// are given in requests of their own size, one after the other, and take
// nothing while a request is out (S3's parts are 10 MiB, Azure's appends
// 4 MiB). Meanwhile the next 8 MiB are read and hashed, so that once the
// store has taken a part most of the next is ready (on S3 all but 2 MiB,
// little against what a part takes at the store; docs/storage.md,
// "Pushes").
const chunkBuffers = 8

// copyChunk copies src to the upload's part writer fw, to h (the digest of
// the whole upload, or a Chained piece hasher computing it) and to pieces
// (a PerPiece piece hasher; nil for none: chunkHashers), and returns how
// many bytes fw took. fw and pieces take the bytes on goroutines of their
// own, h on the one that reads src, so the store is sent bytes while the
// next ones are read and hashed: the store does not wait for the origin's
// hashing. fw and pieces share each buffer read from src, no copy, which
// goes back to copyBuffers once both are done with it; at most
// chunkBuffers are in flight.
//
// Reading stops at the first error of fw or src. fw's error wins, as a
// *storeFailure (which unwraps to it, so an outage stays one), even when
// src failed too: the chunk would not have been stored either way, and
// the client is told about storage. Else src's error is returned as it
// is. On any error the caller throws the chunk away, and the state of h
// and pieces does not matter. On success every byte read was written to
// all three.
func copyChunk(fw, h, pieces io.Writer, src io.Reader) (int64, error) {
	p := &chunkPipe{
		slots:   make(chan struct{}, chunkBuffers),
		toStore: make(chan *chunkBuf, chunkBuffers),
		stopped: make(chan struct{}),
	}
	consumers := int32(2)
	if pieces == nil {
		consumers = 1
	}
	var wg sync.WaitGroup
	var stored int64
	var storeErr error
	wg.Go(func() {
		for b := range p.toStore {
			p.queued.Add(-1)
			if storeErr == nil {
				n, err := writeRecovering(fw, b.bytes())
				stored += int64(n)
				if err == nil && n < len(b.bytes()) {
					err = io.ErrShortWrite
				}
				if err != nil {
					storeErr = err
					close(p.stopped)
				}
			}
			p.release(b)
		}
	})
	var toPieces chan *chunkBuf
	if pieces != nil {
		toPieces = make(chan *chunkBuf, chunkBuffers)
		wg.Go(func() {
			for b := range toPieces {
				p.queued.Add(-1)
				_, _ = pieces.Write(b.bytes()) // a Hasher never fails
				p.release(b)
			}
		})
	}

	var readErr error
	for readErr == nil {
		select {
		case p.slots <- struct{}{}:
		case <-p.stopped:
		}
		if p.isStopped() {
			break
		}
		b := &chunkBuf{buf: copyBuffers.Get().(*[]byte)}
		b.n, readErr = p.fill(src, *b.buf)
		if b.n == 0 {
			copyBuffers.Put(b.buf)
			<-p.slots
			continue
		}
		_, _ = h.Write(b.bytes())
		b.refs.Store(consumers)
		p.queued.Add(consumers)
		p.toStore <- b
		if toPieces != nil {
			toPieces <- b
		}
	}
	close(p.toStore)
	if toPieces != nil {
		close(toPieces)
	}
	wg.Wait()
	if storeErr != nil {
		return stored, &storeFailure{err: storeErr}
	}
	if readErr == io.EOF {
		readErr = nil
	}
	return stored, readErr
}

// storeFailure is copyChunk's error when the store writer failed.
type storeFailure struct{ err error }

func (e *storeFailure) Error() string { return e.err.Error() }
func (e *storeFailure) Unwrap() error { return e.err }

// writeRecovering writes p to w and turns a panic of w's into an error:
// on the request's goroutine net/http would have recovered it and ended
// only the request, not the origin.
func writeRecovering(w io.Writer, p []byte) (n int, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("storage writer panicked: %v", v)
		}
	}()
	return w.Write(p)
}

// chunkPipe is what copyChunk's goroutines share.
type chunkPipe struct {
	// slots holds a token per buffer in flight.
	slots   chan struct{}
	toStore chan *chunkBuf
	// stopped is closed when the store writer fails: reading stops.
	stopped chan struct{}
	// queued counts the buffers handed to the consumers and not yet
	// taken, once per consumer.
	queued atomic.Int32
}

func (p *chunkPipe) isStopped() bool {
	select {
	case <-p.stopped:
		return true
	default:
		return false
	}
}

// release is called by each consumer of b when done with it; the last one
// gives the buffer and its slot back.
func (p *chunkPipe) release(b *chunkBuf) {
	if b.refs.Add(-1) > 0 {
		return
	}
	copyBuffers.Put(b.buf)
	<-p.slots
}

// chunkBuf is one buffer of a chunk on its way to the store and the piece
// hasher.
type chunkBuf struct {
	buf  *[]byte
	n    int
	refs atomic.Int32 // consumers not done with it yet
}

func (b *chunkBuf) bytes() []byte { return (*b.buf)[:b.n] }

// fill reads from r until buf is full, r fails or ends, or the store
// writer fails: while buffers wait for the store writer or the piece
// hasher they are handed whole buffers, not each short read the network
// gives. Once they have taken every earlier buffer (taken, not finished
// with: a buffer's slot comes back only after its write, which a slow
// client's next bytes may have to wait for), what was read goes to them
// at once: holding a slow client's bytes until a buffer fills would only
// delay them, and keep them from storage while the client is still
// sending. It returns io.EOF only when r ended.
func (p *chunkPipe) fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) && !p.isStopped() {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
		if n > 0 && p.queued.Load() == 0 {
			return n, nil
		}
	}
	return n, nil
}
