package origin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error codes of the OCI Distribution Specification, plus the Docker
// registry's UNAVAILABLE and TOOMANYREQUESTS, with the HTTP status each one is
// answered with.
const (
	codeBlobUnknown         = "BLOB_UNKNOWN"
	codeBlobUploadInvalid   = "BLOB_UPLOAD_INVALID"
	codeBlobUploadUnknown   = "BLOB_UPLOAD_UNKNOWN"
	codeDigestInvalid       = "DIGEST_INVALID"
	codeManifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
	codeManifestInvalid     = "MANIFEST_INVALID"
	codeManifestUnknown     = "MANIFEST_UNKNOWN"
	codeNameInvalid         = "NAME_INVALID"
	codeNameUnknown         = "NAME_UNKNOWN"
	codeSizeInvalid         = "SIZE_INVALID"
	codeUnauthorized        = "UNAUTHORIZED"
	codeDenied              = "DENIED"
	codeUnsupported         = "UNSUPPORTED"
	codeRangeInvalid        = "RANGE_INVALID"
	codeUnavailable         = "UNAVAILABLE"
	codeTooManyRequests     = "TOOMANYREQUESTS"
	codeUnknown             = "UNKNOWN"
)

// apiError is an error that the registry API answers with a status, an OCI
// error code and a message meant for the person reading the client's output.
type apiError struct {
	Status  int
	Code    string
	Message string
	Detail  any
	// cause is logged, never sent: it may name storage paths.
	cause error
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.cause)
	}
	return e.Code + ": " + e.Message
}

func (e *apiError) Unwrap() error { return e.cause }

func newError(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func errBlobUnknown(d fmt.Stringer) *apiError {
	return &apiError{Status: http.StatusNotFound, Code: codeBlobUnknown,
		Message: "blob unknown to registry", Detail: map[string]string{"digest": d.String()}}
}

func errManifestUnknown(ref string) *apiError {
	return &apiError{Status: http.StatusNotFound, Code: codeManifestUnknown,
		Message: "manifest unknown", Detail: map[string]string{"reference": ref}}
}

func errUploadUnknown(id string) *apiError {
	return &apiError{Status: http.StatusNotFound, Code: codeBlobUploadUnknown,
		Message: "blob upload unknown to registry; start a new upload with POST", Detail: map[string]string{"uuid": id}}
}

func errNameUnknown(name string) *apiError {
	return &apiError{Status: http.StatusNotFound, Code: codeNameUnknown,
		Message: "repository name not known to registry", Detail: map[string]string{"name": name}}
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// writeError answers err. Errors that are not API errors become UNKNOWN 500,
// or UNAVAILABLE 503 when storage is out; their text is not sent to the client.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = s.internalError(err)
	}
	if ae.Status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "code", ae.Code, "err", err)
	} else {
		s.log.Debug("request rejected", "method", r.Method, "path", r.URL.Path, "code", ae.Code, "err", err)
	}
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: ae.Code, Message: ae.Message, Detail: ae.Detail}}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", fmt.Sprint(len(body)))
	if ae.Status == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
		h.Set("Retry-After", "1") // the storage breaker tries again every second
	}
	w.WriteHeader(ae.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
