package mirror

import (
	"errors"
	"net/http"

	"github.com/shoal-dev/shoal/internal/ociapi"
)

// errOriginDown is in the cause of an error that says the origin could not
// be reached or answered 502/503/504: content cached by digest may be
// served instead.
var errOriginDown = errors.New("origin unavailable")

// isOriginDown reports whether e says the origin is down (errOriginDown).
func isOriginDown(e *ociapi.Error) bool { return errors.Is(e, errOriginDown) }

// writeError answers e, with the origin's challenge or Retry-After when it
// carries them. HEAD gets the status and headers only.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, e *ociapi.Error) {
	if e.Status >= 500 {
		s.log.Warn("mirror request failed", "method", r.Method, "path", r.URL.Path, "code", e.Code, "err", e)
	} else {
		s.log.Debug("mirror request rejected", "method", r.Method, "path", r.URL.Path, "code", e.Code, "err", e)
	}
	ociapi.WriteError(w, r, e)
}

// asError returns err as an API error, an unexpected one as UNKNOWN; nil
// for nil.
func asError(err error) *ociapi.Error {
	var e *ociapi.Error
	if err != nil && !errors.As(err, &e) {
		e = ociapi.Errorf(http.StatusInternalServerError, ociapi.CodeUnknown, "internal error")
		e.Cause = err
	}
	return e
}
