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
	"hash/fnv"
	"io"
	"net/http"
	"path"
	"regexp"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"

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

// uploadLocks serialize requests to one upload session within this node.
type uploadLocks [64]sync.Mutex

func (l *uploadLocks) lock(id string) func() {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	m := &l[h.Sum32()%uint32(len(l))]
	m.Lock()
	return m.Unlock
}

func (s *Server) startUpload(ctx context.Context, name string) (string, error) {
	id := uuid.NewString()
	if err := s.driver.PutContent(ctx, path.Join(uploadPath(name, id), "startedat"),
		[]byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
		return "", err
	}
	if err := s.saveUploadState(ctx, name, id, &uploadState{}); err != nil {
		return "", err
	}
	return id, nil
}

func (s *Server) loadUploadState(ctx context.Context, name, id string) (*uploadState, error) {
	if !uploadIDRegexp.MatchString(id) {
		return nil, errUploadUnknown(id)
	}
	b, err := s.driver.GetContent(ctx, uploadStatePath(name, id))
	if err != nil {
		if isNotFound(err) {
			return nil, errUploadUnknown(id)
		}
		return nil, err
	}
	var st uploadState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("reading upload %s: corrupt state: %w", id, err)
	}
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

// appendChunk writes body at the end of the upload and saves st.
// want is the chunk's length from the request, or -1 when unknown.
func (s *Server) appendChunk(ctx context.Context, name, id string, st *uploadState, body io.Reader, want int64) error {
	if err := s.writeChunk(ctx, name, id, st, body, want); err != nil {
		return err
	}
	return s.saveUploadState(ctx, name, id, st)
}

// writeChunk writes body at the end of the upload and updates st in
// memory only: a monolithic upload, finished in the same request, never
// needs its state in storage.
func (s *Server) writeChunk(ctx context.Context, name, id string, st *uploadState, body io.Reader, want int64) error {
	h, err := restoreSHA256(st.SHA256, st.Size)
	if err != nil {
		return fmt.Errorf("upload %s: %w", id, err)
	}
	var (
		fw      storage.FileWriter
		newPart bool
		last    *uploadPart
	)
	if n := len(st.Parts); n > 0 && st.Parts[n-1].Start+st.Parts[n-1].Length == st.Size {
		last = &st.Parts[n-1]
		w, err := s.driver.Writer(ctx, uploadPartPath(name, id, last.Name), true)
		switch {
		case err != nil:
			s.log.Info("upload part cannot be appended to; starting a new part", "upload", id, "err", err)
		case w.Size() != last.Length:
			// A chunk that did not finish left bytes past the committed end.
			_ = w.Close()
		default:
			fw = w
		}
	}
	if fw == nil {
		var suffix [4]byte
		_, _ = rand.Read(suffix[:])
		last = &uploadPart{Name: fmt.Sprintf("%016x-%x", st.Size, suffix), Start: st.Size}
		w, err := s.driver.Writer(ctx, uploadPartPath(name, id, last.Name), false)
		if err != nil {
			return fmt.Errorf("upload %s: opening part: %w", id, err)
		}
		fw, newPart = w, true
	}
	src := &readErrRecorder{r: body}
	n, err := copyBuffered(io.MultiWriter(fw, h), src)
	if err == nil && want >= 0 && n != want {
		err = &apiError{Status: http.StatusBadRequest, Code: codeBlobUploadInvalid,
			Message: fmt.Sprintf("chunk body had %d bytes, Content-Length/Content-Range said %d", n, want)}
	}
	if err == nil && n == 0 {
		if newPart {
			_ = fw.Cancel(ctx)
		} else {
			_ = fw.Close()
		}
		return nil
	}
	if err != nil {
		if newPart {
			_ = fw.Cancel(context.WithoutCancel(ctx))
		} else {
			_ = fw.Close()
		}
		var ae *apiError
		if errors.As(err, &ae) {
			return err
		}
		if src.err == nil {
			// Storage failed, not the client: an outage becomes 503.
			return fmt.Errorf("upload %s: storing chunk after %d bytes (the upload is still at %d bytes): %w", id, n, st.Size, err)
		}
		return &apiError{Status: http.StatusBadRequest, Code: codeBlobUploadInvalid,
			Message: fmt.Sprintf("chunk not stored: reading the request body failed after %d bytes; the upload is still at %d bytes, resume from there", n, st.Size), cause: err}
	}
	if err := fw.Commit(ctx); err != nil {
		return fmt.Errorf("upload %s: committing chunk: %w", id, err)
	}
	if newPart {
		last.Length = n
		st.Parts = append(st.Parts, *last)
	} else {
		last.Length += n
	}
	st.Size += n
	s.metrics.bytesIn.WithLabelValues(routeUpload).Add(float64(n))
	st.SHA256, err = h.(encoding.BinaryMarshaler).MarshalBinary()
	return err
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
		return &apiError{Status: http.StatusBadRequest, Code: codeDigestInvalid,
			Message: fmt.Sprintf("digest mismatch: the %d uploaded bytes have digest %s, not %s; nothing was stored as a blob", st.Size, got, want),
			Detail:  map[string]string{"expected": want.String(), "computed": got.String()}}
	}
	if err := s.placeBlob(ctx, name, id, st, want); err != nil {
		return err
	}
	if err := s.linkBlob(ctx, name, want); err != nil {
		return err
	}
	if err := s.checkGuard(ctx, name, []digest.Digest{want}, []digest.Digest{want}); err != nil {
		return guardError(err, codeBlobUnknown, want)
	}
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
