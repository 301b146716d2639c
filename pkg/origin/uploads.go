package origin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"path"
	"regexp"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/glob"
	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/metainfo"
	"github.com/shoal-dev/shoal/pkg/storage"
)

// An upload session lives in storage, so that any origin node can continue
// what another started:
//
//	_uploads/<id>/startedat    RFC 3339 start time (as registry:2 writes it)
//	_uploads/<id>/state.json   committed size, the parts, the sha256 state
//	_uploads/<id>/parts/<name> the bytes, in one or more part files
//
// A chunk is appended to the last part with Writer(append=true) when that
// is possible. When it is not (on HDFS, a node killed mid-chunk keeps the
// file's lease for a minute; on any driver, a killed write may leave bytes
// past the committed size) the chunk starts a new part instead, so a retry
// on another node succeeds at once. Only state.json says which bytes count:
// it is replaced atomically after a chunk is committed, so bytes of a chunk
// that did not finish are never part of the blob.
//
// The final PUT verifies the digest, then moves the single part (the common
// case) or a concatenation of the parts to the blob's place in one Move, so
// a blob is never visible half-written.
type uploadState struct {
	Size  int64        `json:"size"`
	Parts []uploadPart `json:"parts,omitempty"`
	// SHA256 is the marshalled sha256 state over the first Size bytes, so
	// that finishing a sha256 upload need not read it back.
	SHA256 []byte `json:"sha256,omitempty"`
	// Pieces is the marshalled metainfo.Hasher over the first Size bytes:
	// the blob's piece hashes, computed as the chunks arrive so that the
	// seeders need not read the blob back to compute its metainfo. It is
	// Chained: its SHA-256 is the upload's (SHA256 is a copy of its state,
	// for nodes that know no Chained hasher), so each byte is hashed once.
	// Its piece length grows with the upload (metainfo.NewGrowingHasher).
	// A PerPiece one, from a node before Chained, goes on as it started.
	// Absent for uploads past maxHashedUpload, and for those a node that
	// did not know the hasher's version (an older one) took a chunk of:
	// their metainfo is computed by the seeders from the blob.
	Pieces []byte `json:"pieces,omitempty"`
}

// maxHashedUpload is the largest upload whose pieces h hashes as it
// arrives: up to it h's piece length is the blob's (PieceLengthFor,
// whatever the final size) and its state holds at most TargetMaxPieces
// hashes; beyond it the seeders compute the metainfo from the blob. A
// growing hasher (chained, every new upload's) follows the policy up to
// 64 GiB; a per-piece one (sessions an older node started, sha512
// monolithic pushes) keeps DefaultPieceLength pieces, the blob's up to
// 1 GiB.
func maxHashedUpload(h *metainfo.Hasher) int64 {
	if h.Growing() {
		return metainfo.MaxPolicyPieceLength * metainfo.TargetMaxPieces
	}
	return h.PieceLength() * metainfo.TargetMaxPieces
}

type uploadPart struct {
	Name   string `json:"name"`
	Start  int64  `json:"start"`
	Length int64  `json:"length"`
}

// uploadIDRegexp accepts only canonical lowercase UUIDs (what
// uuid.NewString makes), since the id becomes part of a storage path.
var uploadIDRegexp = regexp.MustCompile(`^[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$`)

func uploadStatePath(name, id string) string { return path.Join(uploadPath(name, id), "state.json") }

func uploadPartPath(name, id, part string) string {
	return path.Join(uploadPath(name, id), "parts", part)
}

// uploadSessions tracks the upload sessions this node is working on. At
// most one request at a time writes a chunk to a session: another one gets
// 416 at once, with the committed size, instead of waiting behind a client
// that may never finish its body. A session's mu is held only to commit
// (replace state.json, finish, cancel), never while a body is read, so a
// slow client holds up nobody but itself. Across nodes nothing is locked:
// a client sends one session's chunks one after the other anyway.
type uploadSessions struct {
	mu sync.Mutex
	m  map[string]*uploadSession // sessions with a request in flight
}

type uploadSession struct {
	refs    int  // requests in flight; guarded by uploadSessions.mu
	writing bool // a request is writing a chunk; guarded by uploadSessions.mu

	// mu is the commit lock.
	mu sync.Mutex
	// canceled: DELETE removed the session while a chunk was being
	// written; that chunk must not bring its state back. Guarded by mu.
	canceled bool
}

// acquire returns session id's entry, for a request that writes a chunk
// when write is set. ok is false when another request is writing one.
// release must be called once the request is done with the session.
func (u *uploadSessions) acquire(id string, write bool) (sess *uploadSession, release func(), ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = make(map[string]*uploadSession)
	}
	sess = u.m[id]
	if sess == nil {
		sess = &uploadSession{}
		u.m[id] = sess
	}
	if write && sess.writing {
		return nil, nil, false
	}
	sess.refs++
	if write {
		sess.writing = true
	}
	return sess, func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		if write {
			sess.writing = false
		}
		if sess.refs--; sess.refs == 0 {
			delete(u.m, id)
		}
	}, true
}

// entries returns how many sessions have requests in flight.
func (u *uploadSessions) entries() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.m)
}

// writers returns how many sessions have a chunk being written.
func (u *uploadSessions) writers() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, s := range u.m {
		if s.writing {
			n++
		}
	}
	return n
}

func (s *Server) startUpload(ctx context.Context, name string) (string, error) {
	id := uuid.NewString()
	if err := s.markUploadStarted(ctx, name, id); err != nil {
		return "", err
	}
	if err := s.saveUploadState(ctx, name, id, &uploadState{}); err != nil {
		return "", err
	}
	s.catalog.add(s, name)
	return id, nil
}

// markUploadStarted writes upload id's start time, first of anything in its
// directory: GC purges only the sessions that have one, so a push killed
// mid-way, a monolithic POST's included, leaves nothing behind for good.
func (s *Server) markUploadStarted(ctx context.Context, name, id string) error {
	return s.driver.PutContent(ctx, path.Join(uploadPath(name, id), "startedat"), []byte(time.Now().UTC().Format(time.RFC3339)))
}

func (s *Server) loadUploadState(ctx context.Context, name, id string) (*uploadState, error) {
	if !uploadIDRegexp.MatchString(id) {
		return nil, ociapi.UploadUnknown(id)
	}
	b, err := s.driver.GetContent(ctx, uploadStatePath(name, id))
	if err != nil {
		if isNotFound(err) {
			// Finished or canceled through another node, or purged.
			s.forgetUpload(id)
			return nil, ociapi.UploadUnknown(id)
		}
		return nil, err
	}
	var st uploadState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("reading upload %s: corrupt state: %w", id, err)
	}
	s.touchUpload(id)
	return &st, nil
}

func (s *Server) saveUploadState(ctx context.Context, name, id string, st *uploadState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return s.driver.PutContent(ctx, uploadStatePath(name, id), b)
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

func copyBuffered(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	return io.CopyBuffer(dst, src, *bp)
}

// appendChunk writes body at the end of the upload, then commits it and
// saves st under the session's commit lock. want is the chunk's length
// from the request, or -1 when unknown.
func (s *Server) appendChunk(ctx context.Context, sess *uploadSession, name, id string, st *uploadState, body io.Reader, want int64) error {
	c, err := s.writeChunk(ctx, name, id, st, body, want)
	if err != nil || c == nil {
		return err
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.canceled {
		c.abort(context.WithoutCancel(ctx))
		return ociapi.UploadUnknown(id)
	}
	if err := s.commitChunk(ctx, id, st, c); err != nil {
		return err
	}
	return s.saveUploadState(ctx, name, id, st)
}

// pendingChunk is a chunk written to storage but not committed: its bytes count
// only once commitChunk has added them to the upload's state.
type pendingChunk struct {
	fw      storage.FileWriter
	part    uploadPart // the part written to, Length as before the chunk
	newPart bool
	n       int64
	hash    hash.Hash // SHA-256 over the upload up to the chunk's end
	// pieces hashes the pieces up to the chunk's end; nil when the upload
	// has no piece hashes. A Chained one hashes through hash (its
	// BlobHash).
	pieces *metainfo.Hasher
}

// abort gives up a chunk that will not be committed. A new part is
// removed; an existing part keeps its committed prefix, and the bytes past
// it are ignored (and make the next chunk start a new part).
func (c *pendingChunk) abort(ctx context.Context) {
	if c.newPart {
		_ = c.fw.Cancel(ctx)
	} else {
		_ = c.fw.Close()
	}
}

// writeChunk writes body at the end of the upload, without committing it.
// It returns nil for an empty body. st is not changed.
func (s *Server) writeChunk(ctx context.Context, name, id string, st *uploadState, body io.Reader, want int64) (*pendingChunk, error) {
	h, pieces, err := uploadHashers(st)
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", id, err)
	}
	c := &pendingChunk{hash: h, pieces: pieces}
	if n := len(st.Parts); n > 0 && st.Parts[n-1].Start+st.Parts[n-1].Length == st.Size {
		last := st.Parts[n-1]
		w, err := s.driver.Writer(ctx, uploadPartPath(name, id, last.Name), true)
		switch {
		case err != nil:
			s.log.Info("upload part cannot be appended to; starting a new part", "upload", id, "err", err)
		case w.Size() != last.Length:
			// A chunk that did not finish left bytes past the committed end.
			_ = w.Close()
		default:
			c.fw, c.part = w, last
		}
	}
	if c.fw == nil {
		var suffix [4]byte
		_, _ = rand.Read(suffix[:])
		c.part = uploadPart{Name: fmt.Sprintf("%016x-%x", st.Size, suffix), Start: st.Size}
		w, err := s.driver.Writer(ctx, uploadPartPath(name, id, c.part.Name), false)
		if err != nil {
			return nil, fmt.Errorf("upload %s: opening part: %w", id, err)
		}
		c.fw, c.newPart = w, true
	}
	if limit, pattern := s.blobSizeLimit(name); limit >= 0 {
		body = &sizeCap{r: body, left: limit - st.Size, refuse: func() error {
			return s.errBlobTooLarge(name, limit, pattern, "went past it")
		}}
	}
	src := &readErrRecorder{r: body}
	hw, side := chunkHashers(h, pieces)
	c.n, err = copyChunk(c.fw, hw, side, src)
	if err == nil && want >= 0 && c.n != want {
		err = errChunkLength(c.n, want)
	}
	if err == nil && c.n == 0 {
		c.abort(ctx)
		return nil, nil
	}
	if err != nil {
		c.abort(context.WithoutCancel(ctx))
		return nil, s.chunkFailure(ctx, id, err, src.err, c.n, st.Size)
	}
	return c, nil
}

func errChunkLength(n, want int64) error {
	return &ociapi.Error{Status: http.StatusBadRequest, Code: ociapi.CodeBlobUploadInvalid,
		Message: fmt.Sprintf("chunk body had %d bytes, Content-Length/Content-Range said %d", n, want)}
}

// chunkFailure turns the error of copying a chunk of upload id, which
// had size bytes before it, into what the client is told; n bytes were
// stored, bodyErr is the request body's read error, if any. The store's
// failure wins over the body's (503 naming storage for an outage), unless
// the client went away, when the store's failure is likely only the
// consequence of its request's context ending.
func (s *Server) chunkFailure(ctx context.Context, id string, err, bodyErr error, n, size int64) error {
	var sf *storeFailure
	if errors.As(err, &sf) && (bodyErr == nil || ctx.Err() == nil) {
		return fmt.Errorf("upload %s: storing chunk after %d bytes (the upload is still at %d bytes): %w", id, n, size, sf.err)
	}
	var ae *ociapi.Error
	switch {
	case errors.As(bodyErr, &ae):
		return bodyErr
	case bodyErr == nil:
		return fmt.Errorf("upload %s: storing chunk after %d bytes (the upload is still at %d bytes): %w", id, n, size, err)
	case errors.Is(bodyErr, errBodyStalled):
		return &ociapi.Error{Status: http.StatusRequestTimeout, Code: ociapi.CodeBlobUploadInvalid,
			Message: fmt.Sprintf("chunk not stored: the request body sent nothing for %s after %d bytes; the upload is still at %d bytes, resume from there", s.cfg.BodyTimeout, n, size),
			Cause:   bodyErr}
	}
	return &ociapi.Error{Status: http.StatusBadRequest, Code: ociapi.CodeBlobUploadInvalid,
		Message: fmt.Sprintf("chunk not stored: reading the request body failed after %d bytes; the upload is still at %d bytes, resume from there", n, size), Cause: bodyErr}
}

// commitChunk commits c and adds it to st, in memory only: a monolithic
// upload, finished in the same request, never needs its state in storage.
func (s *Server) commitChunk(ctx context.Context, id string, st *uploadState, c *pendingChunk) error {
	if err := c.fw.Commit(ctx); err != nil {
		return fmt.Errorf("upload %s: committing chunk: %w", id, err)
	}
	sum, err := c.hash.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return err
	}
	c.part.Length += c.n
	if c.newPart {
		st.Parts = append(st.Parts, c.part)
	} else {
		st.Parts[len(st.Parts)-1] = c.part
	}
	st.Size += c.n
	st.SHA256 = sum
	st.Pieces = nil
	if c.pieces != nil && st.Size <= maxHashedUpload(c.pieces) {
		if st.Pieces, err = c.pieces.MarshalBinary(); err != nil {
			return err
		}
	}
	s.metrics.bytesIn.WithLabelValues(ociapi.Upload).Add(float64(c.n))
	return nil
}

// blobSizeLimit returns the largest blob repository name accepts and the
// pattern of the rule that says so, or -1 when no rule limits it.
func (s *Server) blobSizeLimit(name string) (int64, string) {
	for _, l := range s.cfg.BlobSizeLimits {
		for _, p := range l.Repositories {
			if glob.Match(p, name) {
				return l.MaxBlobSize, p
			}
		}
	}
	return -1, ""
}

// checkBlobSize refuses an upload to repository name that will have size
// bytes, when that is past the repository's limit.
func (s *Server) checkBlobSize(name string, size int64) error {
	if limit, pattern := s.blobSizeLimit(name); limit >= 0 && size > limit {
		return s.errBlobTooLarge(name, limit, pattern, fmt.Sprintf("would have %d bytes", size))
	}
	return nil
}

func (s *Server) errBlobTooLarge(name string, limit int64, pattern, what string) *ociapi.Error {
	s.metrics.limitRefusals.WithLabelValues(limitBlobSize).Inc()
	return &ociapi.Error{Status: http.StatusRequestEntityTooLarge, Code: ociapi.CodeSizeInvalid,
		Message: fmt.Sprintf("repository %s accepts blobs of at most %d bytes (blobSizeLimits, %s); this upload %s, and its last chunk was not stored",
			ociapi.Quote(name), limit, ociapi.Quote(pattern), what),
		Detail: map[string]any{"limit": limit}}
}

// sizeCap reads at most left bytes from r; one more is refused. It reads
// no further than that, so the refusal comes as early as the bytes allow.
type sizeCap struct {
	r      io.Reader
	left   int64
	refuse func() error
}

func (c *sizeCap) Read(p []byte) (int, error) {
	if int64(len(p)) > c.left+1 {
		p = p[:max(c.left+1, 0)]
	}
	if len(p) == 0 {
		return 0, c.refuse()
	}
	n, err := c.r.Read(p)
	if c.left -= int64(n); c.left < 0 {
		return 0, c.refuse()
	}
	return n, err
}

// readErrRecorder remembers a read error, to tell a client that went away
// from a storage failure.
type readErrRecorder struct {
	r   io.Reader
	err error
}

func (r *readErrRecorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// uploadHashers returns the upload's SHA-256 and piece hasher (nil if
// none), to be written its next bytes: with a Chained piece hasher, the
// SHA-256 is the hasher's own.
func uploadHashers(st *uploadState) (hash.Hash, *metainfo.Hasher, error) {
	pieces := pieceHasher(st)
	if h := chainedHash(pieces); h != nil {
		return h, pieces, nil
	}
	h, err := restoreSHA256(st.SHA256, st.Size)
	return h, pieces, err
}

// chainedHash is the SHA-256 of pieces if it is a Chained hasher (which
// hashes the blob with it), else nil.
func chainedHash(pieces *metainfo.Hasher) hash.Hash {
	if pieces == nil {
		return nil
	}
	return pieces.BlobHash()
}

// chunkHashers returns what copyChunk writes a chunk to for the upload's
// SHA-256 or digest h and its piece hasher: on the goroutine reading the
// body h, through pieces if it is a Chained hasher built on h (one pass);
// on a goroutine of its own a PerPiece pieces (a second pass, in
// parallel), else nil.
func chunkHashers(h hash.Hash, pieces *metainfo.Hasher) (main, side io.Writer) {
	switch {
	case pieces == nil:
		return h, nil
	case chainedHash(pieces) != nil:
		return pieces, nil
	}
	return h, pieces
}

// pieceHasher returns the upload's piece hasher, to be written its next
// bytes: a new growing Chained one for an upload with no bytes yet (its
// final size, and so its piece length, are unknown), nil for one whose
// pieces are not being hashed.
func pieceHasher(st *uploadState) *metainfo.Hasher {
	if st.Size == 0 {
		return metainfo.NewGrowingHasher()
	}
	var h metainfo.Hasher
	if len(st.Pieces) == 0 || h.UnmarshalBinary(st.Pieces) != nil || h.Size() != st.Size {
		return nil
	}
	return &h
}

// storeMetainfo stores the metainfo of blob d, just made from upload st,
// from the piece hashes computed as its chunks arrived: the first pull
// after a push does not wait for an owner to read the whole blob back to
// compute it. An upload without piece hashes is left to the seeders, and
// so is one whose metainfo cannot be stored (logged): the push stands.
func (s *Server) storeMetainfo(ctx context.Context, st *uploadState, d digest.Digest) {
	h := pieceHasher(st)
	if h == nil || h.PieceLength() != metainfo.PieceLengthFor(st.Size) ||
		h.Scheme() == metainfo.Chained && d.Algorithm() != digest.SHA256 {
		// Chained hashes of a blob pushed chunked whose digest turned
		// out sha512: the seeders compute its per-piece hashes.
		return
	}
	m, err := h.Metainfo(d)
	if err == nil {
		err = metainfo.Store(ctx, s.driver, m)
	}
	if err != nil {
		s.log.Warn("storing the metainfo of a pushed blob failed; the seeders compute it from the blob", "digest", d, "err", err)
	}
}

func restoreSHA256(state []byte, size int64) (hash.Hash, error) {
	h := sha256.New()
	if size == 0 {
		return h, nil
	}
	if len(state) == 0 {
		return nil, errors.New("upload state has no hash state")
	}
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
		return nil, fmt.Errorf("restoring hash state: %w", err)
	}
	return h, nil
}

// partsReader reads the committed bytes of an upload, part after part.
func (s *Server) partsReader(ctx context.Context, name, id string, st *uploadState) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		for _, p := range st.Parts {
			rc, err := s.driver.Reader(ctx, uploadPartPath(name, id, p.Name), 0)
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			n, err := copyBuffered(pw, io.LimitReader(rc, p.Length))
			rc.Close()
			if err == nil && n != p.Length {
				err = fmt.Errorf("upload %s: part %s is shorter (%d) than committed (%d)", id, p.Name, n, p.Length)
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.Close()
	}()
	return pr
}

// finishUpload verifies the upload against want and makes it the blob want,
// linked in repository name.
func (s *Server) finishUpload(ctx context.Context, name, id string, st *uploadState, want digest.Digest) error {
	var got digest.Digest
	if want.Algorithm() == digest.SHA256 {
		h, err := restoreSHA256(st.SHA256, st.Size)
		if err != nil {
			return err
		}
		got = digest.NewDigest(digest.SHA256, h)
	} else {
		v := want.Algorithm().Digester()
		rc := s.partsReader(ctx, name, id, st)
		_, err := copyBuffered(v.Hash(), rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("upload %s: reading back to verify: %w", id, err)
		}
		got = v.Digest()
	}
	if got != want {
		return errDigestMismatch(st.Size, got, want)
	}
	if err := s.placeBlob(ctx, name, id, st, want); err != nil {
		return err
	}
	return s.completeUpload(ctx, name, id, st, want)
}

func errDigestMismatch(size int64, got, want digest.Digest) error {
	return &ociapi.Error{Status: http.StatusBadRequest, Code: ociapi.CodeDigestInvalid,
		Message: fmt.Sprintf("digest mismatch: the %d uploaded bytes have digest %s, not %s; nothing was stored as a blob", size, got, want),
		Detail:  map[string]string{"expected": want.String(), "computed": got.String()}}
}

// completeUpload makes blob want, whose data is in place, upload st of
// repository name: it links it, checks it against a collection under way,
// stores its metainfo and removes the session.
func (s *Server) completeUpload(ctx context.Context, name, id string, st *uploadState, want digest.Digest) error {
	if err := s.linkBlob(ctx, name, want); err != nil {
		return err
	}
	if err := s.checkGuard(ctx, name, []digest.Digest{want}, []digest.Digest{want}); err != nil {
		return guardError(err, ociapi.CodeBlobUnknown, want)
	}
	s.storeMetainfo(ctx, st, want)
	if err := s.driver.Delete(ctx, uploadPath(name, id)); err != nil && !isNotFound(err) {
		s.log.Warn("removing finished upload", "upload", id, "err", err)
	}
	return nil
}

// placeBlob moves the verified upload to the blob's place.
func (s *Server) placeBlob(ctx context.Context, name, id string, st *uploadState, d digest.Digest) error {
	dst := blobDataPath(d)
	if size, err := s.blobSize(ctx, d); err == nil && size == st.Size {
		return nil // already stored, by content
	}
	if st.Size == 0 {
		return s.driver.PutContent(ctx, dst, nil)
	}
	if len(st.Parts) == 1 {
		p := st.Parts[0]
		src := uploadPartPath(name, id, p.Name)
		fi, err := s.driver.Stat(ctx, src)
		if err != nil {
			return fmt.Errorf("upload %s: %w", id, err)
		}
		if fi.Size() == p.Length {
			return s.driver.Move(ctx, src, dst)
		}
	}
	tmp := path.Join(uploadPath(name, id), "assembled")
	fw, err := s.driver.Writer(ctx, tmp, false)
	if err != nil {
		return err
	}
	rc := s.partsReader(ctx, name, id, st)
	defer rc.Close()
	if _, err := copyBuffered(fw, rc); err != nil {
		_ = fw.Cancel(context.WithoutCancel(ctx))
		return fmt.Errorf("upload %s: assembling parts: %w", id, err)
	}
	if err := fw.Commit(ctx); err != nil {
		return fmt.Errorf("upload %s: assembling parts: %w", id, err)
	}
	return s.driver.Move(ctx, tmp, dst)
}
