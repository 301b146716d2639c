package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/ociapi"
	"github.com/shoal-dev/shoal/pkg/storage"
)

func isNotFound(err error) bool {
	var nf storage.PathNotFoundError
	return errors.As(err, &nf)
}

// readLink reads a registry:2 link file, which holds one digest.
func (s *Server) readLink(ctx context.Context, p string) (digest.Digest, error) {
	b, err := s.driver.GetContent(ctx, p)
	if err != nil {
		return "", err
	}
	d, err := digest.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("corrupt link file %s: %w", p, err)
	}
	return d, nil
}

func (s *Server) writeLink(ctx context.Context, p string, d digest.Digest) error {
	return s.driver.PutContent(ctx, p, []byte(d.String()))
}

// blobSize returns the size of a blob in the global store.
func (s *Server) blobSize(ctx context.Context, d digest.Digest) (int64, error) {
	fi, err := s.driver.Stat(ctx, blobDataPath(d))
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// repoBlobSize returns the size of blob d as seen from repository name: it
// must be linked there, as a layer or as a manifest. A missing blob answers
// BLOB_UNKNOWN.
func (s *Server) repoBlobSize(ctx context.Context, name string, d digest.Digest) (int64, error) {
	linked, err := s.linked(ctx, layerLinkPath(name, d))
	if err != nil {
		return 0, err
	}
	if !linked {
		if linked, err = s.linked(ctx, revisionLinkPath(name, d)); err != nil {
			return 0, err
		}
	}
	if !linked {
		return 0, ociapi.BlobUnknown(d)
	}
	size, err := s.blobSize(ctx, d)
	if isNotFound(err) {
		// A link whose blob was swept: registry:2 answers unknown too.
		return 0, ociapi.BlobUnknown(d)
	}
	return size, err
}

// linked tells whether a link file exists.
func (s *Server) linked(ctx context.Context, p string) (bool, error) {
	_, err := s.driver.Stat(ctx, p)
	if err == nil {
		return true, nil
	}
	if isNotFound(err) {
		return false, nil
	}
	return false, err
}

// linkBlob makes blob d visible in repository name. The blob data is
// already in place: GC relies on that order (data, then link).
func (s *Server) linkBlob(ctx context.Context, name string, d digest.Digest) error {
	return s.writeLink(ctx, layerLinkPath(name, d), d)
}

func (s *Server) handleBlob(w http.ResponseWriter, r *http.Request, rt ociapi.Route) error {
	d, err := ociapi.ParseDigest(rt.Ref)
	if err != nil {
		if r.Method == http.MethodDelete {
			return err
		}
		// A malformed digest names no blob.
		return &ociapi.Error{Status: http.StatusNotFound, Code: ociapi.CodeBlobUnknown, Message: "blob unknown: " + err.Error(), Cause: err}
	}
	ctx := r.Context()
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		size, err := s.repoBlobSize(ctx, rt.Name, d)
		if err != nil {
			return err
		}
		if s.redirectBlob(w, r, d) {
			return nil
		}
		return s.serveBlob(w, r, d, size)
	case http.MethodDelete:
		if !s.cfg.DeleteEnabled {
			return ociapi.Errorf(http.StatusMethodNotAllowed, ociapi.CodeUnsupported, "deletes are disabled on this origin (storage.delete.enabled)")
		}
		linked, err := s.linked(ctx, layerLinkPath(rt.Name, d))
		if err != nil {
			return err
		}
		if !linked {
			return ociapi.BlobUnknown(d)
		}
		// Only the link goes: the data is shared by content and freed by GC.
		if err := s.driver.Delete(ctx, path0(layerLinkPath(rt.Name, d))); err != nil && !isNotFound(err) {
			return err
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	return errMethod(r)
}

// path0 is the directory of a link file: registry:2 deletes the whole
// <alg>/<hex> directory, not only the link inside it.
func path0(linkPath string) string {
	return linkPath[:strings.LastIndexByte(linkPath, '/')]
}

// redirectBlob answers a GET of blob d, already authorized and found in
// the repository, with a 307 to a signed URL of its data where the storage
// hands one out (an object store with redirect=true; docs/storage.md). The
// client sends its Range header again to the store. A HEAD is never
// redirected: it carries the P2P capability that only the origin gives.
func (s *Server) redirectBlob(w http.ResponseWriter, r *http.Request, d digest.Digest) bool {
	if r.Method != http.MethodGet {
		return false
	}
	u, err := s.driver.RedirectURL(r, blobDataPath(d))
	if err != nil {
		// The bytes are still there to serve: a URL that cannot be
		// signed now (an IAM call failing, say) is no reason to fail.
		s.log.Warn("signing a redirect URL failed; serving the blob through the origin", "digest", d, "err", err)
		return false
	}
	if u == "" {
		return false
	}
	w.Header().Set("Docker-Content-Digest", d.String())
	http.Redirect(w, r, u, http.StatusTemporaryRedirect)
	return true
}

// serveBlob streams blob d, honouring a single byte range.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, d digest.Digest, size int64) error {
	h := w.Header()
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+d.String()+`"`)
	h.Set("Cache-Control", "max-age=31536000")
	start, length := int64(0), size
	status := http.StatusOK
	if r.Method == http.MethodGet {
		br, partial, err := ociapi.ParseRange(r.Header.Get("Range"), size)
		if err != nil {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			return &ociapi.Error{Status: http.StatusRequestedRangeNotSatisfiable, Code: ociapi.CodeRangeInvalid,
				Message: fmt.Sprintf("%v; the blob has %d bytes", err, size)}
		}
		if partial {
			start, length = br.Start, br.Length
			status = http.StatusPartialContent
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, br.Last(), size))
		}
	}
	h.Set("Content-Length", fmt.Sprint(length))
	s.setCapability(h, d)
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return nil
	}
	rc, err := s.driver.Reader(r.Context(), blobDataPath(d), start)
	if err != nil {
		if isNotFound(err) {
			return ociapi.BlobUnknown(d)
		}
		return err
	}
	defer rc.Close()
	w.WriteHeader(status)
	n, err := copyBlob(w, rc, length, start+length == size)
	s.metrics.bytesOut.WithLabelValues(ociapi.Blob).Add(float64(n))
	if err != nil {
		// The status is sent: all that is left is to cut the connection so
		// the client sees a short body, and to log why.
		s.log.Warn("blob stream ended early", "digest", d, "sent", n, "size", length, "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

// copyBlob copies length bytes of rc to w. A stream that can write itself
// out (an object store's reader, in buffers of up to 4 MiB) does so when
// the copy runs to the blob's end (toEnd): io.CopyN would hide that behind
// a LimitedReader and copy 32 KiB at a time. A file does not: net/http
// sends a file, a LimitedReader of one included, with sendfile(2), which a
// file's own WriteTo would lose.
func copyBlob(w io.Writer, rc io.Reader, length int64, toEnd bool) (int64, error) {
	if wt, ok := rc.(io.WriterTo); ok && toEnd {
		if _, isFile := rc.(*os.File); !isFile {
			n, err := wt.WriteTo(w)
			if err == nil && n != length {
				err = fmt.Errorf("the blob's stream has %d bytes, not %d", n, length)
			}
			return n, err
		}
	}
	return io.CopyN(w, rc, length)
}

func errMethod(r *http.Request) error {
	return ociapi.Errorf(http.StatusMethodNotAllowed, ociapi.CodeUnsupported, "method %s is not supported on %s", r.Method, ociapi.Quote(r.URL.Path))
}
