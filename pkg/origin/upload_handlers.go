package origin

import (
	"fmt"
	"net/http"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/ociapi"
)

func uploadLocation(name, id string) string { return "/v2/" + name + "/blobs/uploads/" + id }

func blobLocation(name string, d digest.Digest) string { return "/v2/" + name + "/blobs/" + d.String() }

// writeUploadStatus answers with where the upload is and how far it got.
func writeUploadStatus(w http.ResponseWriter, name, id string, size int64, status int) {
	h := w.Header()
	h.Set("Location", uploadLocation(name, id))
	h.Set("Docker-Upload-UUID", id)
	end := size - 1
	if end < 0 {
		end = 0
	}
	h.Set("Range", fmt.Sprintf("0-%d", end))
	h.Set("Content-Length", "0")
	w.WriteHeader(status)
}

func writeBlobCreated(w http.ResponseWriter, name string, d digest.Digest) {
	h := w.Header()
	h.Set("Location", blobLocation(name, d))
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// handleUploads answers POST /v2/<name>/blobs/uploads/: a mount, a
// monolithic upload, or the start of a session.
func (s *Server) handleUploads(w http.ResponseWriter, r *http.Request, rt ociapi.Route) error {
	if r.Method != http.MethodPost {
		return errMethod(r)
	}
	ctx := r.Context()
	q := r.URL.Query()
	if m := q.Get("mount"); m != "" {
		d, err := ociapi.ParseDigest(m)
		if err != nil {
			return err
		}
		mounted, err := s.mountBlob(r, rt.Name, q.Get("from"), d)
		if err != nil {
			return err
		}
		if mounted {
			s.catalog.add(s, rt.Name)
			writeBlobCreated(w, rt.Name, d)
			return nil
		}
		// Not mountable: the spec says to start an ordinary upload.
	}
	if ds := q.Get("digest"); ds != "" {
		d, err := ociapi.ParseDigest(ds)
		if err != nil {
			return err
		}
		if r.ContentLength >= 0 {
			if err := s.checkBlobSize(rt.Name, r.ContentLength); err != nil {
				return err
			}
		}
		id := uuid.NewString()
		sw, err := s.stagedWriter(ctx, d, r.ContentLength)
		if err != nil {
			return err
		}
		if err := s.markUploadStarted(ctx, rt.Name, id); err != nil {
			return err
		}
		body, done := s.watchBody(w, r, ociapi.Uploads)
		if sw != nil {
			err = s.putStaged(ctx, sw, nil, rt.Name, id, body, r.ContentLength, d)
			done()
		} else {
			st := &uploadState{}
			var c *pendingChunk
			c, err = s.writeChunk(ctx, rt.Name, id, st, body, r.ContentLength)
			done()
			if err == nil && c != nil {
				err = s.commitChunk(ctx, id, st, c)
			}
			if err == nil {
				err = s.finishUpload(ctx, rt.Name, id, st, d)
			}
		}
		if err != nil {
			if derr := s.driver.Delete(ctx, uploadPath(rt.Name, id)); derr != nil && !isNotFound(derr) {
				s.log.Warn("removing failed monolithic upload", "upload", id, "err", derr)
			}
			return err
		}
		s.catalog.add(s, rt.Name)
		writeBlobCreated(w, rt.Name, d)
		return nil
	}
	admitted, err := s.admitUpload(ctx, w, r)
	if err != nil {
		return err
	}
	id, err := s.startUpload(ctx, rt.Name)
	admitted(rt.Name, id)
	if err != nil {
		return err
	}
	writeUploadStatus(w, rt.Name, id, 0, http.StatusAccepted)
	return nil
}

// mountBlob links blob d from repository from into name. Without from, a
// blob that exists anywhere is mounted (the spec's anonymous mount): the
// digest is proof enough of having the content. With access control on, the
// caller must be allowed to pull from (push on name was checked before),
// and anonymous mounts are refused: they would link a blob out of
// repositories the caller cannot read. A refusal is not an error: the
// caller gets an ordinary upload, exactly as when the blob does not exist,
// so a mount never tells whether a private repository holds a digest.
func (s *Server) mountBlob(r *http.Request, name, from string, d digest.Digest) (bool, error) {
	ctx := r.Context()
	if from != "" {
		if ociapi.ValidateName(from) != nil || !s.mayPull(r, from) {
			return false, nil
		}
		if _, err := s.repoBlobSize(ctx, from, d); err != nil {
			if isAPIError(err) {
				return false, nil
			}
			return false, err
		}
	} else if !s.cfg.AnonymousMount || s.authz != nil {
		return false, nil
	}
	if _, err := s.blobSize(ctx, d); err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, err
	}
	if err := s.linkBlob(ctx, name, d); err != nil {
		return false, err
	}
	if err := s.checkGuard(ctx, name, []digest.Digest{d}, []digest.Digest{d}); err != nil {
		// Being collected: let the client upload it instead.
		s.log.Info("mount refused: blob is being collected", "digest", d, "err", err)
		return false, nil
	}
	return true, nil
}

// handleUpload answers GET, PATCH, PUT and DELETE on one upload session.
func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request, rt ociapi.Route) error {
	ctx := r.Context()
	id := rt.Ref
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		// state.json is replaced atomically: no lock needed to read it.
		st, err := s.loadUploadState(ctx, rt.Name, id)
		if err != nil {
			return err
		}
		writeUploadStatus(w, rt.Name, id, st.Size, http.StatusNoContent)
		return nil
	case http.MethodDelete:
		return s.cancelUpload(w, r, rt)
	case http.MethodPatch, http.MethodPut:
	default:
		return errMethod(r)
	}

	var d digest.Digest
	if r.Method == http.MethodPut {
		ds := r.URL.Query().Get("digest")
		if ds == "" {
			return ociapi.Errorf(http.StatusBadRequest, ociapi.CodeDigestInvalid, "PUT to finish an upload needs ?digest=<algorithm>:<hex>")
		}
		var err error
		if d, err = ociapi.ParseDigest(ds); err != nil {
			return err
		}
	}
	sess, release, ok := s.uploads.acquire(id, true)
	if !ok {
		st, err := s.loadUploadState(ctx, rt.Name, id)
		if err != nil {
			return err
		}
		s.metrics.uploadConflicts.Inc()
		writeRangeError(w, r, s, rt.Name, id, st.Size,
			fmt.Sprintf("another request is writing to upload %s on this node; when it ends, resume from the size GET on the upload's Location reports (%d bytes now)", id, st.Size))
		return nil
	}
	defer release()
	st, err := s.loadUploadState(ctx, rt.Name, id)
	if err != nil {
		return err
	}
	want := r.ContentLength
	if cr := r.Header.Get("Content-Range"); cr != "" {
		start, end, err := ociapi.ParseContentRange(cr)
		if err != nil || start != st.Size || (want >= 0 && want != end-start+1) {
			msg := fmt.Sprintf("chunk range %s does not continue the upload, which has %d bytes: send bytes from %d", ociapi.Quote(cr), st.Size, st.Size)
			if err != nil {
				msg = err.Error()
			}
			writeRangeError(w, r, s, rt.Name, id, st.Size, msg)
			return nil
		}
		want = end - start + 1
	}
	if want > 0 {
		if err := s.checkBlobSize(rt.Name, st.Size+want); err != nil {
			return err
		}
	}
	if r.Method == http.MethodPut && st.Size == 0 {
		sw, err := s.stagedWriter(ctx, d, want)
		if err != nil {
			return err
		}
		if sw != nil {
			body, done := s.watchBody(w, r, ociapi.Upload)
			err := s.putStaged(ctx, sw, sess, rt.Name, id, body, want, d)
			done()
			if err != nil {
				return err
			}
			s.forgetUpload(id)
			writeBlobCreated(w, rt.Name, d)
			return nil
		}
	}
	if want != 0 {
		body, done := s.watchBody(w, r, ociapi.Upload)
		err := s.appendChunk(ctx, sess, rt.Name, id, st, body, want)
		done()
		if err != nil {
			return err
		}
	}
	if r.Method == http.MethodPatch {
		writeUploadStatus(w, rt.Name, id, st.Size, http.StatusAccepted)
		return nil
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.canceled {
		return ociapi.UploadUnknown(id)
	}
	if err := s.finishUpload(ctx, rt.Name, id, st, d); err != nil {
		return err
	}
	s.forgetUpload(id)
	writeBlobCreated(w, rt.Name, d)
	return nil
}

// cancelUpload answers DELETE on an upload session. It does not wait for a
// chunk being written: that chunk is dropped when it comes to commit.
func (s *Server) cancelUpload(w http.ResponseWriter, r *http.Request, rt ociapi.Route) error {
	ctx := r.Context()
	sess, release, _ := s.uploads.acquire(rt.Ref, false)
	defer release()
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if _, err := s.loadUploadState(ctx, rt.Name, rt.Ref); err != nil {
		return err
	}
	if err := s.driver.Delete(ctx, uploadPath(rt.Name, rt.Ref)); err != nil && !isNotFound(err) {
		return err
	}
	sess.canceled = true
	s.forgetUpload(rt.Ref)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// writeRangeError answers 416 with the upload's real progress, so the
// client can resume from the right offset.
func writeRangeError(w http.ResponseWriter, r *http.Request, s *Server, name, id string, size int64, msg string) {
	h := w.Header()
	h.Set("Location", uploadLocation(name, id))
	h.Set("Docker-Upload-UUID", id)
	end := size - 1
	if end < 0 {
		end = 0
	}
	h.Set("Range", fmt.Sprintf("0-%d", end))
	s.writeError(w, r, &ociapi.Error{Status: http.StatusRequestedRangeNotSatisfiable, Code: ociapi.CodeBlobUploadInvalid, Message: msg})
}
