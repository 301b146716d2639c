package ociapi

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRecorderRemembersTheFirstStatusAndTheBytes(t *testing.T) {
	w := httptest.NewRecorder()
	rec := NewRecorder(w)
	seen := 0
	rec.BeforeHeader = func(h http.Header) { seen++; h.Set("X-Seen", "yes") }
	if rec.Status() != http.StatusOK || rec.Wrote() {
		t.Fatalf("a fresh recorder says status %d, wrote %v", rec.Status(), rec.Wrote())
	}
	rec.WriteHeader(http.StatusPartialContent)
	rec.WriteHeader(http.StatusInternalServerError) // superfluous: ignored by net/http too
	_, _ = rec.Write([]byte("abc"))
	n, err := rec.ReadFrom(strings.NewReader("defg"))
	if err != nil || n != 4 {
		t.Fatalf("ReadFrom = %d, %v", n, err)
	}
	if rec.Status() != http.StatusPartialContent || !rec.Wrote() || rec.Bytes() != 7 {
		t.Errorf("status %d wrote %v bytes %d, want 206 true 7", rec.Status(), rec.Wrote(), rec.Bytes())
	}
	if seen != 1 || w.Header().Get("X-Seen") != "yes" || w.Body.String() != "abcdefg" {
		t.Errorf("BeforeHeader ran %d times (header %q), body %q", seen, w.Header().Get("X-Seen"), w.Body.String())
	}
}

func TestRecorderImplicitStatusIsOK(t *testing.T) {
	for name, write := range map[string]func(*Recorder){
		"Write":    func(r *Recorder) { _, _ = r.Write([]byte("x")) },
		"ReadFrom": func(r *Recorder) { _, _ = r.ReadFrom(bytes.NewReader([]byte("x"))) },
	} {
		rec := NewRecorder(httptest.NewRecorder())
		called := false
		rec.BeforeHeader = func(http.Header) { called = true }
		write(rec)
		if rec.Status() != http.StatusOK || !rec.Wrote() || !called || rec.Bytes() != 1 {
			t.Errorf("%s first: status %d wrote %v BeforeHeader %v bytes %d", name, rec.Status(), rec.Wrote(), called, rec.Bytes())
		}
	}
	if rc := http.NewResponseController(NewRecorder(httptest.NewRecorder())); rc.Flush() != nil {
		t.Error("http.ResponseController cannot reach the connection through the recorder")
	}
}
