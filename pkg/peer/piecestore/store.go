// Package piecestore is the agent's disk cache of blobs, assembled piece by
// piece from peers and served while it fills.
//
// Each blob lives in its own directory: a data file pre-sized (sparse) to
// the blob's size, its metainfo, and while incomplete a bitfield of the
// pieces written. Every piece is checked against the metainfo before it is
// written, whoever hands it over; when every piece is present, Complete
// hashes the whole file against the blob digest once and moves the
// directory under complete/. A Reader streams a blob from any offset as
// its pieces arrive, so a client is served before the download ends. The
// store keeps to a size quota by evicting the least recently used blobs
// nobody is reading, complete ones first, and reloads its state after a
// restart, dropping anything that does not check out.
//
// Layout under the store's directory:
//
//	incomplete/<algorithm>/<hex>/{data,bitfield,metainfo}
//	complete/<algorithm>/<hex>/{data,metainfo}
package piecestore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/pkg/metainfo"
)

// Errors, wrapped with the blob and the operation.
var (
	// ErrNotFound: the store does not hold the blob (never created,
	// evicted, or dropped).
	ErrNotFound = errors.New("blob not in piece store")
	// ErrPieceMissing: the piece has not been written yet.
	ErrPieceMissing = errors.New("piece not held")
	// ErrIncomplete: Complete was called before every piece was written.
	ErrIncomplete = errors.New("blob incomplete")
	// ErrDigestMismatch: every piece verified, but the whole blob does not
	// hash to its digest (the metainfo was wrong). The blob is dropped.
	ErrDigestMismatch = errors.New("assembled blob does not match its digest")
	// ErrQuotaExceeded: no room for the blob even after evicting every blob
	// not in use.
	ErrQuotaExceeded = errors.New("piece store quota exceeded")
	// ErrMetainfoMismatch: Create with a metainfo that differs from the one
	// the store holds for the digest.
	ErrMetainfoMismatch = errors.New("metainfo differs from the stored one")
	// ErrRemoved: the blob was dropped while a reader waited on it.
	ErrRemoved = errors.New("blob removed from piece store")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("piece store closed")
)

const (
	completeDir   = "complete"
	incompleteDir = "incomplete"
	dataFile      = "data"
	bitfieldFile  = "bitfield"
	metainfoFile  = "metainfo"
)

// Option configures Open.
type Option func(*Store)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// WithOnEvict sets a function called, outside the store's lock, with the
// digest of every blob evicted for space or removed: the agent announces
// EVENT_STOPPED for it. It must not block for long.
func WithOnEvict(f func(digest.Digest)) Option { return func(s *Store) { s.onEvict = f } }

// WithoutDigestCheck makes Complete trust the pieces, each verified
// against the metainfo when written, instead of hashing the assembled blob
// against its digest once more: enough when the metainfo itself was
// computed from the blob with its digest checked, as origin seeders do.
func WithoutDigestCheck() Option { return func(s *Store) { s.skipDigestCheck = true } }

// Store is a disk cache of blobs. It is safe for concurrent use; piece I/O
// and hashing run outside its lock.
type Store struct {
	dir     string
	quota   int64
	log     *slog.Logger
	onEvict func(digest.Digest)
	// skipDigestCheck: Complete does not hash the whole blob
	// (WithoutDigestCheck).
	skipDigestCheck bool

	mu    sync.Mutex
	blobs map[digest.Digest]*blob
	// creating holds the blobs whose files a Create is making; a second
	// Create of the same blob waits on the channel.
	creating map[digest.Digest]chan struct{}
	used     int64  // sum of the sizes of the blobs held, complete or not
	clock    uint64 // advances on every use; orders the LRU without reading a clock
	closed   bool
	bufs     buffers
}

// blob is one cached blob. Its fields are guarded by Store.mu, except
// meta and f, which are set once and safe for concurrent ReadAt/WriteAt.
type blob struct {
	meta *metainfo.Metainfo
	f    *os.File
	// recent holds the newest pieces in memory (recent.go).
	recent recent
	// writing are the pieces being written (receive.go).
	writing map[int]*pieceClaim
	// dir is the blob's current directory; it moves on completion.
	dir        string
	have       *metainfo.Bitfield
	complete   bool
	completing bool
	// refs counts open readers and operations in progress: a blob with
	// refs is never evicted, and its file is closed when the last goes.
	refs    int
	lastUse uint64
	removed bool
	// gone mirrors removed for readers' lock-free fast path.
	gone atomic.Bool
	// changed is closed (and replaced) whenever a piece is written or the
	// blob is removed: waiting readers select on it.
	changed chan struct{}
}

// Open opens (creating if needed) the store in dir with a quota in bytes,
// reloading the blobs a previous run left. Blobs whose files do not check
// out are deleted; an incomplete blob keeps the pieces that still verify.
func Open(dir string, quota int64, opts ...Option) (*Store, error) {
	s := &Store{dir: dir, quota: quota, log: slog.Default(), blobs: make(map[digest.Digest]*blob),
		creating: make(map[digest.Digest]chan struct{})}
	for _, o := range opts {
		o(s)
	}
	for _, sub := range []string{completeDir, incompleteDir} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("opening piece store: %w", err)
		}
	}
	if err := s.reload(); err != nil {
		s.Close()
		return nil, fmt.Errorf("opening piece store in %s: %w", dir, err)
	}
	s.mu.Lock()
	victims, _ := s.makeRoomLocked(0)
	s.mu.Unlock()
	s.dispose(victims)
	return s, nil
}

// Close closes every blob file. Readers still open fail afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for d, b := range s.blobs {
		if err := b.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing %s: %w", d, err))
		}
		b.removed = true
		b.gone.Store(true)
		b.notifyLocked()
	}
	clear(s.blobs)
	return errors.Join(errs...)
}

// Used returns the bytes the held blobs occupy (reserved: data files are
// sparse until written).
func (s *Store) Used() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// Info describes a held blob.
type Info struct {
	Digest   digest.Digest
	Size     int64
	Complete bool
	// Pieces held and in all.
	Held, Pieces int
	// InUse counts open readers and operations in progress.
	InUse int
}

// Stat describes the blob d.
func (s *Store) Stat(d digest.Digest) (Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[d]
	if !ok {
		return Info{}, fmt.Errorf("stat %s: %w", d, ErrNotFound)
	}
	return b.infoLocked(), nil
}

// List describes every held blob (to re-announce them after a restart).
func (s *Store) List() []Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Info, 0, len(s.blobs))
	for _, b := range s.blobs {
		out = append(out, b.infoLocked())
	}
	return out
}

func (b *blob) infoLocked() Info {
	return Info{Digest: b.meta.Digest, Size: b.meta.Size, Complete: b.complete,
		Held: b.have.Count(), Pieces: b.meta.NumPieces(), InUse: b.refs}
}

// Metainfo returns the stored metainfo of d.
func (s *Store) Metainfo(d digest.Digest) (*metainfo.Metainfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[d]
	if !ok {
		return nil, fmt.Errorf("metainfo of %s: %w", d, ErrNotFound)
	}
	return b.meta, nil
}

// Have returns a copy of the pieces of d held.
func (s *Store) Have(d digest.Digest) (*metainfo.Bitfield, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[d]
	if !ok {
		return nil, fmt.Errorf("pieces of %s: %w", d, ErrNotFound)
	}
	bf, _ := metainfo.ParseBitfield(b.have.Bytes(), b.have.Len())
	return bf, nil
}

// blobDir returns where d lives, complete or not. The digest is validated
// first: it becomes a path.
func (s *Store) blobDir(d digest.Digest, complete bool) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("invalid digest %q: %w", d, err)
	}
	sub := incompleteDir
	if complete {
		sub = completeDir
	}
	return filepath.Join(s.dir, sub, string(d.Algorithm()), d.Encoded()), nil
}

// acquire takes a reference on d, marking it used.
func (s *Store) acquire(d digest.Digest) (*blob, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	b, ok := s.blobs[d]
	if !ok {
		return nil, ErrNotFound
	}
	b.refs++
	s.touchLocked(b)
	return b, nil
}

// release drops a reference taken by acquire.
func (s *Store) release(b *blob) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked(b)
}

func (s *Store) releaseLocked(b *blob) {
	b.refs--
	if b.refs == 0 && b.removed && !s.closed {
		// Dropped while in use: the last user closes the file.
		_ = b.f.Close()
		s.dropRecent(b)
	}
	if b.refs == 0 && b.complete {
		// Complete and no reader left: the pieces are read from the file.
		s.dropRecent(b)
	}
}

func (s *Store) touchLocked(b *blob) {
	s.clock++
	b.lastUse = s.clock
}

// Acquire marks d in use until release is called: it will not be evicted
// meanwhile. The agent holds it while a download or an upload stream runs.
func (s *Store) Acquire(d digest.Digest) (release func(), err error) {
	b, err := s.acquire(d)
	if err != nil {
		return nil, fmt.Errorf("acquiring %s: %w", d, err)
	}
	var once sync.Once
	return func() { once.Do(func() { s.release(b) }) }, nil
}

// notifyLocked wakes the readers waiting on b.
func (b *blob) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}
