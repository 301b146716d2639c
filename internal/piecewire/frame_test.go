package piecewire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestFramesRoundTrip(t *testing.T) {
	for _, f := range []Frame{
		{Type: FrameRequest, Index: 7, Digest: "sha256:" + strings.Repeat("a", 64), Capability: "x.y.z"},
		{Type: FrameRequest, Index: 1<<32 - 1, Digest: strings.Repeat("d", MaxDigest), Capability: strings.Repeat("c", MaxCapability)},
		{Type: FrameCancel, Index: 3},
		{Type: FramePiece, Index: 9, Length: 4 << 20},
		{Type: FrameReject, Index: 2, Reason: ReasonAtPeers, RetryAfterMs: 1500},
		{Type: FrameError, Code: CodeDenied, Message: "no capability"},
	} {
		b, err := AppendFrame(nil, f)
		if err != nil {
			t.Fatalf("encoding %+v: %v", f, err)
		}
		r := bytes.NewReader(b)
		got, err := ReadFrame(r)
		if err != nil || got != f || r.Len() != 0 {
			t.Fatalf("decoded %+v, %v, %d bytes left; want %+v, all read", got, err, r.Len(), f)
		}
	}
}

func TestEncodingRefusesOversizedFields(t *testing.T) {
	if _, err := AppendFrame(nil, Frame{Type: FrameRequest, Capability: strings.Repeat("c", MaxCapability+1)}); err == nil {
		t.Fatal("a capability over MaxCapability encoded")
	}
	b, err := AppendFrame(nil, Frame{Type: FrameError, Message: strings.Repeat("é", MaxMessage)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ReadFrame(bytes.NewReader(b))
	if err != nil || len(f.Message) > MaxMessage || !strings.HasPrefix(strings.Repeat("é", MaxMessage), f.Message) {
		t.Fatalf("a long message decoded as %d bytes, %v; want it cut at a character boundary within %d", len(f.Message), err, MaxMessage)
	}
}

func TestReadFrameAtTheEndOfAConnection(t *testing.T) {
	if _, err := ReadFrame(bytes.NewReader(nil)); err != io.EOF {
		t.Fatalf("no bytes: %v; want io.EOF (a clean end between frames)", err)
	}
	b, _ := AppendFrame(nil, Frame{Type: FrameCancel, Index: 1})
	for n := 1; n < len(b); n++ {
		_, err := ReadFrame(bytes.NewReader(b[:n]))
		if !errors.Is(err, ErrTruncated) || !errors.Is(err, ErrProtocol) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("%d of %d bytes: %v; want a truncated frame", n, len(b), err)
		}
	}
}

// FuzzFrame decodes arbitrary bytes as a frame: no input panics or makes
// the decoder read past what the header allows, and whatever decodes
// encodes back to the bytes it was read from.
func FuzzFrame(f *testing.F) {
	for _, fr := range []Frame{
		{Type: FrameRequest, Index: 7, Digest: "sha256:" + strings.Repeat("a", 64), Capability: "x.y.z"},
		{Type: FrameCancel, Index: 3},
		{Type: FramePiece, Index: 9, Length: 4 << 20},
		{Type: FrameReject, Index: 2, Reason: ReasonAtPeers, RetryAfterMs: 1500},
		{Type: FrameError, Code: CodeDenied, Message: "no capability"},
	} {
		b, _ := AppendFrame(nil, fr)
		f.Add(b)
	}
	f.Add([]byte{0x01, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x81, 0, 0, 0, 8, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		fr, err := ReadFrame(r)
		used := len(in) - r.Len()
		if used > headerSize+maxRequest {
			t.Fatalf("read %d bytes for one frame; at most %d", used, headerSize+maxRequest)
		}
		if err != nil {
			if fr != (Frame{}) {
				t.Fatalf("a frame %+v returned with error %v", fr, err)
			}
			return
		}
		if len(fr.Digest) > MaxDigest || len(fr.Capability) > MaxCapability || len(fr.Message) > MaxMessage {
			t.Fatalf("decoded fields over their limits: %+v", fr)
		}
		b, err := AppendFrame(nil, fr)
		if err != nil {
			t.Fatalf("a decoded frame %+v does not encode: %v", fr, err)
		}
		if !bytes.Equal(b, in[:used]) {
			t.Fatalf("%+v encodes to %x; it was read from %x", fr, b, in[:used])
		}
	})
}
