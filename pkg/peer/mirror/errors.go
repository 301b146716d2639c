package mirror

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// OCI error codes the mirror answers with itself; errors from the origin are
// relayed as the origin sent them.
const (
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeManifestInvalid = "MANIFEST_INVALID"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeNameInvalid     = "NAME_INVALID"
	codeRangeInvalid    = "RANGE_INVALID"
	codeUnsupported     = "UNSUPPORTED"
	codeUnavailable     = "UNAVAILABLE"
	codeUnknown         = "UNKNOWN"
)

// apiError is an answer with an OCI error body, meant for the person
// reading the client's output.
type apiError struct {
	Status  int
	Code    string
	Message string
	// challenge is the origin's WWW-Authenticate on a 401, so the client
	// fetches a token from the origin's realm and retries here.
	challenge []string
	// cause is logged, never sent.
	cause error
	// originDown marks an origin that could not be reached or answered
	// 502/503/504: content cached by digest may be served instead.
	originDown bool
	// retryAfter is the origin's Retry-After on a 503, relayed.
	retryAfter string
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

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// writeError answers e. HEAD gets the status and headers only.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, e *apiError) {
	if e.Status >= 500 {
		s.log.Warn("mirror request failed", "method", r.Method, "path", r.URL.Path, "code", e.Code, "err", e)
	} else {
		s.log.Debug("mirror request rejected", "method", r.Method, "path", r.URL.Path, "code", e.Code, "err", e)
	}
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.Code, Message: e.Message}}})
	h := w.Header()
	for _, c := range e.challenge {
		h.Add("WWW-Authenticate", c)
	}
	if e.retryAfter != "" {
		h.Set("Retry-After", e.retryAfter)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
