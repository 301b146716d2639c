package ociapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestWriteErrorSendsTheEnvelopeNeverTheCause(t *testing.T) {
	e := &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "storage is out; retry later",
		Detail: map[string]string{"driver": "hdfs"}, Header: http.Header{"Retry-After": {"7"}},
		Cause: errors.New("dial namenode-3.internal:8020: refused")}
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		w := httptest.NewRecorder()
		w.Header().Set("Retry-After", "1")
		WriteError(w, httptest.NewRequest(method, "/v2/", nil), e)
		resp := w.Result()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != e.Status || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %q, want %d application/json", method, resp.StatusCode, resp.Header.Get("Content-Type"), e.Status)
		}
		if got := resp.Header.Values("Retry-After"); len(got) != 1 || got[0] != "7" {
			t.Errorf("%s: Retry-After %q, want the error's own, once", method, got)
		}
		if method == http.MethodHead {
			if len(body) != 0 {
				t.Errorf("HEAD got a body: %q", body)
			}
			continue
		}
		if resp.Header.Get("Content-Length") != fmt.Sprint(len(body)) {
			t.Errorf("Content-Length %s, body has %d bytes", resp.Header.Get("Content-Length"), len(body))
		}
		if strings.Contains(string(body), "namenode") {
			t.Errorf("the cause leaked into the body: %s", body)
		}
		var eb ErrorBody
		if err := json.Unmarshal(body, &eb); err != nil || len(eb.Errors) != 1 {
			t.Fatalf("body %s is not one OCI error: %v", body, err)
		}
		if got := eb.Errors[0]; got.Code != e.Code || got.Message != e.Message || fmt.Sprint(got.Detail) != "map[driver:hdfs]" {
			t.Errorf("body entry %+v, want %s %q with its detail", got, e.Code, e.Message)
		}
	}
	if !errors.Is(e, e.Cause) || !strings.Contains(e.Error(), "namenode") {
		t.Errorf("Error() %q does not carry its cause for the log", e.Error())
	}
}

func TestQuoteBoundsAndEscapesHostileInput(t *testing.T) {
	if got := Quote(strings.Repeat("a", 1000)); len(got) > 90 || !strings.HasSuffix(got, `..."`) {
		t.Errorf("Quote of 1000 bytes = %d bytes %q, want it cut near 80", len(got), got)
	}
	if got := Quote("a\nlevel=ERROR msg=forged\x00"); strings.ContainsAny(got, "\n\x00") {
		t.Errorf("Quote left a newline or NUL in %q", got)
	}
}
