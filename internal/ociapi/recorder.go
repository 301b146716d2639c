package ociapi

import (
	"io"
	"net/http"
)

// Recorder is the http.ResponseWriter an API handler answers through. It
// remembers the status and body bytes for metrics and logs, and whether
// anything was written, which decides whether an error can still be
// answered with its own status.
type Recorder struct {
	http.ResponseWriter
	// BeforeHeader, when not nil, sees the response headers once, before
	// they are sent: the mirror rewrites the origin's auth challenges
	// there.
	BeforeHeader func(http.Header)

	status int
	bytes  int64
	wrote  bool
}

// NewRecorder returns a Recorder writing to w.
func NewRecorder(w http.ResponseWriter) *Recorder {
	return &Recorder{ResponseWriter: w, status: http.StatusOK}
}

// Status is the status sent, 200 until one is.
func (r *Recorder) Status() int { return r.status }

// Bytes is how many body bytes were written.
func (r *Recorder) Bytes() int64 { return r.bytes }

// Wrote reports whether the status was sent.
func (r *Recorder) Wrote() bool { return r.wrote }

func (r *Recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
		if r.BeforeHeader != nil {
			r.BeforeHeader(r.Header())
		}
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *Recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// ReadFrom keeps the connection's ReadFrom reachable, so that a blob read
// from a file goes out with sendfile instead of through a user-space buffer.
func (r *Recorder) ReadFrom(src io.Reader) (int64, error) {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{r.ResponseWriter}, src)
	}
	r.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (r *Recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
