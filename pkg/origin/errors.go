package origin

import (
	"errors"
	"net/http"

	"github.com/shoal-dev/shoal/internal/ociapi"
)

// writeError answers err. Errors that are not API errors become UNKNOWN 500,
// or UNAVAILABLE 503 when storage is out; their text is not sent to the client.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *ociapi.Error
	if !errors.As(err, &ae) {
		ae = s.internalError(err)
	}
	if ae.Status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "code", ae.Code, "err", err)
	} else {
		s.log.Debug("request rejected", "method", r.Method, "path", r.URL.Path, "code", ae.Code, "err", err)
	}
	if h := w.Header(); ae.Status == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
		h.Set("Retry-After", "1") // the storage breaker tries again every second
	}
	ociapi.WriteError(w, r, ae)
}
