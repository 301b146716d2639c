// Package piecewire is the data path of Shoal's peer protocol: piece bytes
// between agents, and from origin seeders to agents, on a plain TCP (or
// TLS 1.3) connection of length-prefixed frames instead of gRPC messages.
// Control (metainfo, bitfields, Have) stays on shoal.peer.v1; this package
// moves the bytes, which is where an agent spends its CPU.
//
// A connection carries one blob. The client opens it with a preface
// ("SHPW", version), then sends Request and Cancel frames; every Request
// carries the blob's digest and the capability the origin issued for it,
// and the server checks the capability before it answers anything. The
// server answers every Request exactly once, in the order it chose: with a
// Piece frame (index, length) followed by the piece's raw bytes, or a
// Reject frame. A fatal problem is answered with an Error frame and the
// connection is closed.
//
//	frame  = type u8 | payload length u32 | payload        (big-endian)
//	Request  (client) = index u32 | digest len u8 | digest | capability len u16 | capability
//	Cancel   (client) = index u32
//	Piece    (server) = index u32 | length u32, then length raw bytes (not counted in the frame)
//	Reject   (server) = index u32 | reason u8 | retry after ms u32
//	Error    (server) = code u8 | message
//
// The raw bytes of a piece are written with sendfile(2) from the piece's
// file on a plaintext connection, and with ordinary writes under TLS. The
// client hashes each piece as it arrives and accepts it only if its hash
// (SHA-256, chained or of the piece alone: metainfo.PieceDigester) matches
// the metainfo; the piece is never read twice.
package piecewire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Preface opens every connection, sent by the client: the protocol's name
// and its version, so a server never mistakes another protocol (or a
// future version) for requests.
var Preface = [5]byte{'S', 'H', 'P', 'W', Version}

// Version is the protocol version carried by Preface.
const Version = 1

// FrameType says what a frame carries.
type FrameType uint8

// The frame types. Clients send Request and Cancel, servers send Piece,
// Reject and Error; a frame of the other side's types is a protocol
// violation.
const (
	FrameRequest FrameType = 0x01
	FrameCancel  FrameType = 0x02
	FramePiece   FrameType = 0x81
	FrameReject  FrameType = 0x82
	FrameError   FrameType = 0x83
)

func (t FrameType) String() string {
	switch t {
	case FrameRequest:
		return "request"
	case FrameCancel:
		return "cancel"
	case FramePiece:
		return "piece"
	case FrameReject:
		return "reject"
	case FrameError:
		return "error"
	}
	return fmt.Sprintf("frame type 0x%02x", uint8(t))
}

// Reason is why a server declined a Request.
type Reason uint8

// The reasons of a Reject frame.
const (
	// ReasonNotHeld: the server does not hold the piece (evicted, or never).
	ReasonNotHeld Reason = 1
	// ReasonBusy: the server is at its upload limit; retry later or elsewhere.
	ReasonBusy Reason = 2
	// ReasonAtPeers: an origin seeder gave the piece to another agent
	// moments ago; take it from the swarm, ask here again after RetryAfter.
	ReasonAtPeers Reason = 3
	// ReasonCancelled: the request was cancelled before its piece started.
	ReasonCancelled Reason = 4
)

func (r Reason) String() string {
	switch r {
	case ReasonNotHeld:
		return "not held"
	case ReasonBusy:
		return "busy"
	case ReasonAtPeers:
		return "at peers"
	case ReasonCancelled:
		return "cancelled"
	}
	return fmt.Sprintf("reason %d", uint8(r))
}

// Code classifies an Error frame.
type Code uint8

// The codes of an Error frame.
const (
	// CodeDenied: the request's capability did not verify.
	CodeDenied Code = 1
	// CodeInvalid: the client broke the protocol.
	CodeInvalid Code = 2
	// CodeUnavailable: the server is shutting down or at its connection limit.
	CodeUnavailable Code = 3
)

func (c Code) String() string {
	switch c {
	case CodeDenied:
		return "permission denied"
	case CodeInvalid:
		return "invalid"
	case CodeUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("code %d", uint8(c))
}

// Limits on what a frame may hold. A frame announcing more is refused
// before its payload is read, so a peer cannot make the other side buffer
// more than these.
const (
	headerSize = 5
	// MaxDigest bounds a Request's digest ("sha512:" and 128 hex digits is
	// 135 bytes).
	MaxDigest = 255
	// MaxCapability bounds a Request's capability (a compact JWS of ~250
	// bytes; pkg/auth refuses more than 4096).
	MaxCapability = 4096
	// MaxMessage bounds an Error frame's message.
	MaxMessage   = 1024
	maxRequest   = 4 + 1 + MaxDigest + 2 + MaxCapability
	cancelSize   = 4
	pieceSize    = 4 + 4
	rejectSize   = 4 + 1 + 4
	maxErrorSize = 1 + MaxMessage
)

var (
	// ErrProtocol is wrapped by every error about what a peer sent: an
	// unknown frame, one longer or shorter than its type allows, a piece
	// never requested, a corrupt piece. Drop such a peer.
	ErrProtocol = errors.New("piecewire: protocol violation")
	// ErrTruncated is wrapped (with ErrProtocol and io.ErrUnexpectedEOF)
	// when the connection ends inside a frame or a piece.
	ErrTruncated = errors.New("truncated frame")
)

// Frame is one decoded frame. Which fields are set depends on Type.
type Frame struct {
	Type FrameType
	// Index is the piece of a Request, Cancel, Piece or Reject.
	Index uint32
	// Digest and Capability are a Request's blob and its capability.
	Digest     string
	Capability string
	// Length is the number of raw bytes following a Piece frame.
	Length uint32
	// Reason and RetryAfterMs are a Reject's.
	Reason       Reason
	RetryAfterMs uint32
	// Code and Message are an Error's.
	Code    Code
	Message string
}

// maxPayload returns the largest payload a frame of type t may announce,
// and whether it must be exactly that long.
func maxPayload(t FrameType) (n int, exact bool, ok bool) {
	switch t {
	case FrameRequest:
		return maxRequest, false, true
	case FrameCancel:
		return cancelSize, true, true
	case FramePiece:
		return pieceSize, true, true
	case FrameReject:
		return rejectSize, true, true
	case FrameError:
		return maxErrorSize, false, true
	}
	return 0, false, false
}

// AppendFrame appends f's encoding to dst. It fails for a frame the
// decoder would refuse (a field over its limit, an unknown type).
func AppendFrame(dst []byte, f Frame) ([]byte, error) {
	var p []byte
	switch f.Type {
	case FrameRequest:
		if len(f.Digest) > MaxDigest || len(f.Capability) > MaxCapability {
			return dst, fmt.Errorf("encoding a request: digest of %d bytes (at most %d) or capability of %d (at most %d)",
				len(f.Digest), MaxDigest, len(f.Capability), MaxCapability)
		}
		p = binary.BigEndian.AppendUint32(make([]byte, 0, 7+len(f.Digest)+len(f.Capability)), f.Index)
		p = append(p, byte(len(f.Digest)))
		p = append(p, f.Digest...)
		p = binary.BigEndian.AppendUint16(p, uint16(len(f.Capability)))
		p = append(p, f.Capability...)
	case FrameCancel:
		p = binary.BigEndian.AppendUint32(nil, f.Index)
	case FramePiece:
		p = binary.BigEndian.AppendUint32(nil, f.Index)
		p = binary.BigEndian.AppendUint32(p, f.Length)
	case FrameReject:
		p = binary.BigEndian.AppendUint32(nil, f.Index)
		p = append(p, byte(f.Reason))
		p = binary.BigEndian.AppendUint32(p, f.RetryAfterMs)
	case FrameError:
		msg := f.Message
		if len(msg) > MaxMessage {
			msg = msg[:MaxMessage]
			for !utf8.ValidString(msg) {
				msg = msg[:len(msg)-1]
			}
		}
		p = append([]byte{byte(f.Code)}, msg...)
	default:
		return dst, fmt.Errorf("encoding a frame: unknown %s", f.Type)
	}
	dst = append(dst, byte(f.Type))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(p)))
	return append(dst, p...), nil
}

// ReadFrame reads one frame from r. The header is checked before the
// payload is read: an unknown type, or a length its type does not allow,
// is refused without reading further. A connection ending inside the frame
// wraps ErrTruncated. A Piece frame's raw bytes are left in r.
func ReadFrame(r io.Reader) (Frame, error) {
	var hdr [headerSize]byte
	if got, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, fmt.Errorf("%w: %w: the connection ended after %d of %d header bytes: %w", ErrProtocol, ErrTruncated, got, headerSize, err)
		}
		return Frame{}, err // io.EOF between frames: a clean end
	}
	t := FrameType(hdr[0])
	n := binary.BigEndian.Uint32(hdr[1:])
	limit, exact, ok := maxPayload(t)
	switch {
	case !ok:
		return Frame{}, fmt.Errorf("%w: unknown %s", ErrProtocol, t)
	case exact && n != uint32(limit):
		return Frame{}, fmt.Errorf("%w: %s frame announces %d payload bytes, it has %d", ErrProtocol, t, n, limit)
	case n > uint32(limit):
		return Frame{}, fmt.Errorf("%w: %s frame announces %d payload bytes, at most %d allowed", ErrProtocol, t, n, limit)
	}
	var small [maxErrorSize]byte
	var p []byte
	if int(n) <= len(small) {
		p = small[:n]
	} else {
		p = make([]byte, n)
	}
	if got, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, fmt.Errorf("%w: %w: %s frame ended after %d of %d payload bytes: %w", ErrProtocol, ErrTruncated, t, got, n, err)
	}
	return decodePayload(t, p)
}

func decodePayload(t FrameType, p []byte) (Frame, error) {
	f := Frame{Type: t}
	switch t {
	case FrameRequest:
		if len(p) < 4+1 {
			return Frame{}, fmt.Errorf("%w: request of %d bytes, too short for an index and a digest length", ErrProtocol, len(p))
		}
		f.Index = binary.BigEndian.Uint32(p)
		dl := int(p[4])
		rest := p[5:]
		if len(rest) < dl+2 {
			return Frame{}, fmt.Errorf("%w: request announces a %d-byte digest, %d bytes left", ErrProtocol, dl, len(rest))
		}
		f.Digest = string(rest[:dl])
		rest = rest[dl:]
		cl := int(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
		if cl > MaxCapability || len(rest) != cl {
			return Frame{}, fmt.Errorf("%w: request announces a %d-byte capability, %d bytes left", ErrProtocol, cl, len(rest))
		}
		f.Capability = string(rest)
	case FrameCancel:
		f.Index = binary.BigEndian.Uint32(p)
	case FramePiece:
		f.Index = binary.BigEndian.Uint32(p)
		f.Length = binary.BigEndian.Uint32(p[4:])
	case FrameReject:
		f.Index = binary.BigEndian.Uint32(p)
		f.Reason = Reason(p[4])
		f.RetryAfterMs = binary.BigEndian.Uint32(p[5:])
		if f.Reason < ReasonNotHeld || f.Reason > ReasonCancelled {
			return Frame{}, fmt.Errorf("%w: reject of piece %d with unknown %s", ErrProtocol, f.Index, f.Reason)
		}
	case FrameError:
		if len(p) < 1 {
			return Frame{}, fmt.Errorf("%w: error frame without a code", ErrProtocol)
		}
		f.Code = Code(p[0])
		f.Message = string(p[1:])
	}
	return f, nil
}
