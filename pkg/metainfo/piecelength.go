package metainfo

// The piece length policy. Pieces are the unit of verification, request and
// scheduling: small pieces spread a blob across more peers sooner (a piece
// is passed on only once it is whole, so a swarm's last pieces reach
// everyone a few piece times after the origin sent them), large pieces cost
// fewer requests and Haves. 1 MiB is as small as it pays: a 64 MiB layer of
// 16 pieces left most agents waiting on the few holding the last ones
// (docs/benchmarks.md, swarm). Bounding the piece count keeps bitfields and
// metainfo small (1024 pieces = a 128-byte bitfield, 32 KiB of hashes) for
// multi-GiB layers.
const (
	// DefaultPieceLength is the piece length of every blob up to
	// DefaultPieceLength*TargetMaxPieces bytes (1 GiB).
	DefaultPieceLength = 1 << 20
	// TargetMaxPieces is the piece count above which the piece length doubles.
	TargetMaxPieces = 1024
	// MaxPolicyPieceLength caps the doubling: beyond 64 GiB blobs have more
	// than TargetMaxPieces pieces rather than pieces an agent cannot buffer.
	MaxPolicyPieceLength = 64 << 20
)

// PieceLengthFor returns the piece length for a blob of size bytes: the
// smallest power of two at least DefaultPieceLength that splits the blob
// into at most TargetMaxPieces pieces, capped at MaxPolicyPieceLength.
func PieceLengthFor(size int64) int64 {
	return pieceLengthFor(size, DefaultPieceLength, TargetMaxPieces, MaxPolicyPieceLength)
}

// pieceLengthFor is PieceLengthFor with the policy's numbers as arguments
// (tests use small ones).
func pieceLengthFor(size, minLength int64, maxPieces int, maxLength int64) int64 {
	l := minLength
	for l < maxLength && NumPieces(size, l) > maxPieces {
		l *= 2
	}
	return l
}
