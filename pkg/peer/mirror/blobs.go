package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/auth"
)

// copyBufferSize is the chunk the mirror writes to a client at a time.
const copyBufferSize = 256 << 10

// serveBlob answers GET/HEAD of a blob: authorized at the origin, then
// served from the P2P engine (or the origin when there is none).
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, name, ref string) {
	d, err := digest.Parse(ref)
	if err != nil {
		s.writeError(w, r, ociapi.Errorf(http.StatusBadRequest, ociapi.CodeDigestInvalid, "invalid blob digest %q", ref))
		return
	}
	size, deny := s.blobSize(r, name, d)
	if deny != nil {
		s.writeError(w, r, deny)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Accept-Ranges", "bytes")
	h.Set("ETag", `"`+d.String()+`"`)
	if r.Method == http.MethodHead {
		h.Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		return
	}
	br, partial, err := ociapi.ParseRange(r.Header.Get("Range"), size)
	if err != nil {
		h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		s.writeError(w, r, ociapi.Errorf(http.StatusRequestedRangeNotSatisfiable, ociapi.CodeRangeInvalid,
			"%v; the blob has %d bytes", err, size))
		return
	}
	if !partial {
		br = ociapi.ByteRange{Length: size}
	}
	first, last := br.Start, br.Last()
	if s.blobs == nil {
		s.proxyBlob(w, r, name, d)
		return
	}
	capability, _ := s.capabilities.Get(d.String())
	blob, err := s.blobs.Open(r.Context(), d, capability)
	if errors.Is(err, ErrFromOrigin) {
		s.proxyBlob(w, r, name, d)
		return
	}
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away
		}
		e := ociapi.Errorf(http.StatusServiceUnavailable, ociapi.CodeUnavailable,
			"blob %s could not be fetched from peers or the origin seeders; retry later", d)
		e.Cause = err
		s.writeError(w, r, e)
		return
	}
	defer blob.Close()
	if blob.Size() != size {
		e := ociapi.Errorf(http.StatusBadGateway, ociapi.CodeUnknown, "blob %s: the origin says %d bytes, its piece metainfo %d", d, size, blob.Size())
		s.writeError(w, r, e)
		return
	}
	result := "miss"
	if blob.Cached() {
		result = "hit"
	}
	s.metrics.blobCache.WithLabelValues(result).Inc()
	rc, err := blob.NewReader(r.Context(), first)
	if err != nil {
		e := ociapi.Errorf(http.StatusServiceUnavailable, ociapi.CodeUnavailable, "blob %s could not be read from the local cache", d)
		e.Cause = err
		s.writeError(w, r, e)
		return
	}
	defer rc.Close()
	n := last - first + 1
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	status := http.StatusOK
	if partial {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, size))
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
	if size == 0 {
		return
	}
	written, err := s.sendBlob(w, r, rc, n)
	if err == nil && written < n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		if r.Context().Err() == nil {
			s.log.Warn("blob stream cut short", "digest", d, "offset", first+written, "err", err)
		}
		// The client must see a broken response, not a short body that
		// ends cleanly: with Content-Length set, aborting does that, and
		// dockerd resumes with a Range request.
		panic(http.ErrAbortHandler)
	}
}

// FileRanger is implemented by a blob reader (Blob.NewReader) that can hand
// the rest of its blob over as a region of a file, for the mirror to send
// with sendfile(2) instead of through a buffer.
type FileRanger interface {
	// FileRange returns a file of the reader's own and where in it the
	// reader's next byte lies (off), with the n bytes to the blob's end
	// after it: ok only when the blob is complete, every byte of it
	// verified. The mirror moves the file's position; the reader's Close
	// closes the file.
	FileRange() (f *os.File, off, n int64, ok bool)
}

// sendBlob writes n bytes of rc to w. A blob complete in the store goes to
// a plaintext client as a file region through w's ReadFrom, which net/http
// and net.TCPConn turn into sendfile(2): no copy through user space and no
// buffer per stream. A blob still downloading is streamed through a buffer
// as its pieces arrive, the newest from memory, until it is complete; a
// TLS client always is (the bytes are encrypted in user space).
func (s *Server) sendBlob(w http.ResponseWriter, r *http.Request, rc io.Reader, n int64) (int64, error) {
	fr, _ := rc.(FileRanger)
	rf, _ := w.(io.ReaderFrom)
	if r.TLS != nil || rf == nil {
		fr = nil
	}
	copied := s.metrics.sentBytes.WithLabelValues("buffer")
	var buf []byte
	var written int64
	for written < n {
		if fr != nil {
			if f, off, left, ok := fr.FileRange(); ok {
				m, err := sendFileRange(rf, f, off, min(left, n-written))
				written += m
				s.metrics.sentBytes.WithLabelValues("file").Add(float64(m))
				return written, err
			}
		}
		if buf == nil {
			buf = make([]byte, copyBufferSize)
		}
		m, rerr := rc.Read(buf[:min(int64(len(buf)), n-written)])
		if m > 0 {
			m, err := w.Write(buf[:m])
			written += int64(m)
			copied.Add(float64(m))
			if err != nil {
				return written, err
			}
		}
		if rerr == io.EOF {
			return written, nil
		}
		if rerr != nil {
			return written, rerr
		}
	}
	return written, nil
}

// sendFileRange writes n bytes of f from off through rf.
func sendFileRange(rf io.ReaderFrom, f *os.File, off, n int64) (int64, error) {
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, fmt.Errorf("positioning the blob file at %d: %w", off, err)
	}
	// An *io.LimitedReader over an *os.File is what net.TCPConn.ReadFrom
	// sends with sendfile(2).
	m, err := rf.ReadFrom(&io.LimitedReader{R: f, N: n})
	if err == nil && m < n {
		err = fmt.Errorf("blob file ended %d bytes short: %w", n-m, io.ErrUnexpectedEOF)
	}
	return m, err
}

// blobSize authorizes the blob at the origin and returns its size. While
// the origin is down (it could not be reached or answered 502/503/504,
// now or within AuthTTL), a blob complete in the local cache is served
// without its say, within OfflineTTL of the origin's last word, to
// credentials it let read the repository, and only if it confirmed that
// the blob is in that repository: the piece store is shared by every
// repository, so holding the digest says nothing about where it may be
// read. Content addressed, already on this host, and the access decision
// the origin's own, only older.
//
// While it answers, the origin is asked once per AuthTTL per (repository,
// credentials), not per blob, for blobs already cached that it confirmed
// to be in the repository (readableCached): a pull asks for every layer of
// an image at once, and the question is the same for all of them.
func (s *Server) blobSize(r *http.Request, name string, d digest.Digest) (int64, *ociapi.Error) {
	if s.originDown() && s.mayReadOffline(r, name, d) {
		if size, ok := s.localBlob(d); ok {
			return size, nil
		}
	}
	cred := credentialKey(r)
	size, deny, answered := s.readableCached(r, name, d, cred)
	if !answered {
		size, deny = s.authorizeBlob(r, name, d)
	}
	if deny == nil {
		s.notePresent(name, d)
	}
	if deny != nil && isOriginDown(deny) && s.mayReadOffline(r, name, d) {
		if size, ok := s.localBlob(d); ok {
			s.log.Warn("origin unavailable: blob served from the local cache", "name", name, "digest", d, "err", deny)
			return size, nil
		}
	}
	return size, deny
}

// readableCached answers for a blob complete in the local cache that the
// origin confirmed to be in repository name (notePresent, a yes to a blob
// HEAD under that name, kept OfflineTTL) when the origin's yes to cred for
// the repository is at most AuthTTL old. Manifests are not taken as proof
// that the blobs they list are in a repository: the origin does not check
// foreign layers, nor any reference when it allows sparse manifests, so a
// manifest could name another repository's private blob. Without one, the
// requests for such blobs of one (repository, credentials) share a single
// origin call: the first asks about its blob, and the others take the
// answer for the repository from it. answered is false when the blob must
// be authorized on its own (authorizeBlob).
func (s *Server) readableCached(r *http.Request, name string, d digest.Digest, cred string) (size int64, deny *ociapi.Error, answered bool) {
	if _, ok := s.present.Get(presentKey(name, d)); !ok {
		return 0, nil, false
	}
	size, ok := s.localBlob(d)
	if !ok {
		return 0, nil, false
	}
	if _, ok := s.auth.Get(repoAuthKey(name, cred)); ok {
		return size, nil, true
	}
	type answer struct {
		d    digest.Digest
		size int64
		deny *ociapi.Error
	}
	v, _, _ := s.fetches.Do("repo|"+name+"|"+cred, func() (any, error) {
		// A call for the repository that ended between the check above
		// and this one left its yes: take it rather than ask again.
		if _, ok := s.auth.Get(repoAuthKey(name, cred)); ok {
			return answer{}, nil
		}
		size, deny := s.authorizeBlob(r, name, d)
		return answer{d, size, deny}, nil
	})
	a := v.(answer)
	switch {
	case a.d == d:
		return a.size, a.deny, true
	case a.deny == nil:
		// The origin let cred read the repository (authorizeBlob noted
		// it), and d is in it.
		return size, nil, true
	case a.deny.Status == http.StatusUnauthorized || a.deny.Status == http.StatusForbidden:
		// Refused the repository: the same answer for every blob of it.
		return 0, a.deny, true
	}
	// The other blob is unknown, or the origin is down: ask about this one.
	return 0, nil, false
}

// localBlob returns the size of d if the Blobs source holds it complete.
func (s *Server) localBlob(d digest.Digest) (int64, bool) {
	lb, ok := s.blobs.(LocalBlobs)
	if !ok {
		return 0, false
	}
	return lb.Local(d)
}

// authorizeBlob asks the origin, with the client's credentials, whether
// the blob exists in the repository and may be read, and returns its size.
// A yes is remembered for AuthTTL, with the P2P capability the origin gave
// with it (auth.CapabilityHeader), which goes to the Blobs source on Open,
// and as a yes to the credentials for the whole repository
// (readableCached).
func (s *Server) authorizeBlob(r *http.Request, name string, d digest.Digest) (int64, *ociapi.Error) {
	cred := credentialKey(r)
	key := "blob|" + name + "|" + d.String() + "|" + cred
	if size, ok := s.auth.Get(key); ok {
		return size, nil
	}
	type answer struct {
		size int64
		deny *ociapi.Error
	}
	v, _, _ := s.fetches.Do(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.OriginTimeout)
		defer cancel()
		resp, err := s.originRequest(ctx, http.MethodHead, "/v2/"+name+"/blobs/"+d.String(), nil, nil, r, nil)
		if err != nil {
			return answer{deny: s.errOrigin(err)}, nil
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			size, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64)
			if err != nil || size < 0 {
				return answer{deny: ociapi.Errorf(http.StatusBadGateway, ociapi.CodeUnknown, "the origin gave blob %s no size", d)}, nil
			}
			s.auth.Add(key, size)
			// A yes to a blob of the repository is a yes to reading it.
			s.auth.Add(repoAuthKey(name, cred), -1)
			if tok := resp.Header.Get(auth.CapabilityHeader); tok != "" {
				s.capabilities.Add(d.String(), tok)
			}
			s.noteYes(r, name)
			return answer{size: size}, nil
		case http.StatusNotFound:
			return answer{deny: ociapi.Errorf(http.StatusNotFound, ociapi.CodeBlobUnknown, "blob %s unknown to the origin in repository %s", d, name)}, nil
		case http.StatusUnauthorized, http.StatusForbidden:
			s.noteNo(r, name)
			e := ociapi.Errorf(resp.StatusCode, ociapi.CodeUnauthorized, "authentication required by the origin registry")
			if resp.StatusCode == http.StatusForbidden {
				e.Code, e.Message = ociapi.CodeDenied, "the origin registry denied access to this repository"
			}
			if ch := resp.Header.Values("WWW-Authenticate"); len(ch) > 0 {
				e.Header = http.Header{"Www-Authenticate": ch}
			}
			return answer{deny: e}, nil
		default:
			if originUnavailableStatus(resp.StatusCode) {
				return answer{deny: s.errOriginStatus(resp, http.MethodHead, "blob "+d.String())}, nil
			}
			return answer{deny: ociapi.Errorf(http.StatusBadGateway, ociapi.CodeUnavailable, "the origin registry %s answered %q to HEAD of blob %s",
				s.origin.Redacted(), resp.Status, d)}, nil
		}
	})
	a := v.(answer)
	return a.size, a.deny
}

// proxyBlob streams a blob from the origin as it comes: the mode without a
// P2P engine. The Range header is passed on.
func (s *Server) proxyBlob(w http.ResponseWriter, r *http.Request, name string, d digest.Digest) {
	extra := http.Header{}
	if rg := r.Header.Get("Range"); rg != "" {
		extra.Set("Range", rg)
	}
	resp, err := s.originRequest(r.Context(), http.MethodGet, "/v2/"+name+"/blobs/"+d.String(), nil, nil, r, extra)
	if e, gone := s.originFailure(r, resp, err, "blob "+d.String()); e != nil {
		if !gone {
			s.writeError(w, r, e)
		}
		return
	}
	defer resp.Body.Close()
	s.metrics.blobCache.WithLabelValues("origin").Inc()
	copyRelayed(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	n, err := io.CopyBuffer(struct{ io.Writer }{w}, resp.Body, make([]byte, copyBufferSize)) // past w's ReadFrom
	s.metrics.originBytes.Add(float64(n))
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("proxying blob from the origin", "digest", d, "err", err)
		panic(http.ErrAbortHandler)
	}
}
