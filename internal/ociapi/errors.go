// Package ociapi is the HTTP vocabulary of the OCI Distribution API (the
// Docker Registry v2 API) that Shoal's origin and the agent's mirror both
// speak: the error codes and the JSON error envelope, Range headers, the
// /v2/ routes and the canonical-path rule in front of them, repository
// name, tag and digest validation, and the response recorder behind their
// metrics. One copy, so that a client gets the same answer to the same
// malformed request from either, and the fuzz targets cover both.
package ociapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// Error codes of the OCI Distribution Specification, plus the Docker
// registry's UNAVAILABLE, TOOMANYREQUESTS and PAGINATION_NUMBER_INVALID.
// The status each is usually answered with is noted; a handler may pick
// another where the spec does (416 for a chunk out of order, 413 for a blob
// over a size limit).
const (
	CodeBlobUnknown             = "BLOB_UNKNOWN"              // 404
	CodeBlobUploadInvalid       = "BLOB_UPLOAD_INVALID"       // 400, 416 for an out-of-order chunk
	CodeBlobUploadUnknown       = "BLOB_UPLOAD_UNKNOWN"       // 404
	CodeDigestInvalid           = "DIGEST_INVALID"            // 400
	CodeManifestBlobUnknown     = "MANIFEST_BLOB_UNKNOWN"     // 400
	CodeManifestInvalid         = "MANIFEST_INVALID"          // 400
	CodeManifestUnknown         = "MANIFEST_UNKNOWN"          // 404
	CodeNameInvalid             = "NAME_INVALID"              // 400
	CodeNameUnknown             = "NAME_UNKNOWN"              // 404
	CodeSizeInvalid             = "SIZE_INVALID"              // 400, 413 over a size limit
	CodeUnauthorized            = "UNAUTHORIZED"              // 401
	CodeDenied                  = "DENIED"                    // 403
	CodeUnsupported             = "UNSUPPORTED"               // 405
	CodeRangeInvalid            = "RANGE_INVALID"             // 416
	CodeUnavailable             = "UNAVAILABLE"               // 503, 502 for an upstream that cannot be reached
	CodeTooManyRequests         = "TOOMANYREQUESTS"           // 429
	CodePaginationNumberInvalid = "PAGINATION_NUMBER_INVALID" // 400
	CodeUnknown                 = "UNKNOWN"                   // 500
)

// Error is an answer with a status, an OCI error code and a message meant
// for the person reading the client's output.
type Error struct {
	Status  int
	Code    string
	Message string
	// Detail is sent as the error's "detail" when not nil.
	Detail any
	// Header holds headers sent with the answer, in place of any of the
	// same name: a relayed auth challenge, a Retry-After.
	Header http.Header
	// Cause is logged, never sent: it may name storage paths or hosts.
	Cause error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Cause)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Cause }

// Errorf returns an error answered with status and code, its message
// formatted.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// BlobUnknown is the answer for a blob the registry does not have.
func BlobUnknown(d fmt.Stringer) *Error {
	return &Error{Status: http.StatusNotFound, Code: CodeBlobUnknown,
		Message: "blob unknown to registry", Detail: map[string]string{"digest": d.String()}}
}

// ManifestUnknown is the answer for a tag or digest the repository does not
// have.
func ManifestUnknown(ref string) *Error {
	return &Error{Status: http.StatusNotFound, Code: CodeManifestUnknown,
		Message: "manifest unknown", Detail: map[string]string{"reference": ref}}
}

// UploadUnknown is the answer for an upload session that does not exist
// (any more).
func UploadUnknown(id string) *Error {
	return &Error{Status: http.StatusNotFound, Code: CodeBlobUploadUnknown,
		Message: "blob upload unknown to registry; start a new upload with POST", Detail: map[string]string{"uuid": id}}
}

// NameUnknown is the answer for a repository the registry does not have.
func NameUnknown(name string) *Error {
	return &Error{Status: http.StatusNotFound, Code: CodeNameUnknown,
		Message: "repository name not known to registry", Detail: map[string]string{"name": name}}
}

// ErrorBody is the JSON envelope of an error answer.
type ErrorBody struct {
	Errors []ErrorEntry `json:"errors"`
}

// ErrorEntry is one error of an ErrorBody.
type ErrorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// WriteError answers r with e: its headers, status and JSON body (no body
// for HEAD). Logging is the caller's: the origin and the mirror log
// differently.
func WriteError(w http.ResponseWriter, r *http.Request, e *Error) {
	body, err := json.Marshal(ErrorBody{Errors: []ErrorEntry{{Code: e.Code, Message: e.Message, Detail: e.Detail}}})
	if err != nil {
		// A Detail that does not marshal is a bug; the client still gets
		// the code and message.
		body, _ = json.Marshal(ErrorBody{Errors: []ErrorEntry{{Code: e.Code, Message: e.Message}}})
	}
	h := w.Header()
	for k, vs := range e.Header {
		h[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// Quote quotes s for a message, cut so that a hostile input cannot make
// error bodies and logs large, with control characters escaped so that
// it cannot forge log lines either.
func Quote(s string) string {
	const limit = 80
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return strconv.Quote(s)
}
